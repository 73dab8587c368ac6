"""The sync sessions run in pairs over an in-memory link; every (state, input) pair fuzzed.

The messages' codecs are tested in test_sync_messages.py.
"""

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_encode
from protocols.errors import (
    FrameTooLarge,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
    TruncatedFrame,
)
from protocols.framing import encode_frame, encode_varint
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.sync import (
    END_OF_STREAM,
    MAX_ERROR_MESSAGE,
    MAX_FRAME,
    NEED_DATA,
    SYNC_PROTOCOL_ID,
    TERMINAL_STATES,
    TRANSITIONS,
    Batch,
    BatchReceived,
    BatchTooLarge,
    ClientEvent,
    ClientFinished,
    ClosedEarly,
    ErrorReceived,
    Message,
    NeedData,
    Pull,
    PullReceived,
    Role,
    ServerEvent,
    State,
    SyncClient,
    SyncError,
    SyncServer,
    UnexpectedMessage,
)


def peer_id(seed: int) -> str:
    return peer_id_from_ed25519_public_key(seed.to_bytes(32, "big"))


A, B, C = peer_id(1), peer_id(2), peer_id(3)
Session = SyncClient | SyncServer
Event = ClientEvent | ServerEvent


def events_after(session: Session, data: bytes, chunk: int = 0) -> list[Event]:
    """Feed `data` (in pieces of `chunk` bytes, 0 for whole; b"" is EOF), draining events after
    each piece."""
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for piece in [data[start : start + step] for start in range(0, len(data), step)] or [b""]:
        session.receive_data(piece)
        while not isinstance(event := session.next_event(), NeedData):
            events.append(event)
    return events


def framed(message: Message) -> bytes:
    return encode_frame(message.to_wire(), MAX_FRAME)


class Log:
    """A stand-in for a store: each device's ops, numbered from 1, as opaque bytes."""

    def __init__(self, ops: Mapping[str, list[bytes]] | None = None) -> None:
        self.ops: dict[str, list[bytes]] = {device: list(o) for device, o in (ops or {}).items()}

    def heads(self) -> dict[str, int]:
        return {device: len(ops) for device, ops in self.ops.items()}

    def after(self, pull: Pull) -> tuple[list[bytes], bool]:
        """The next ops after the cursor, device by device, within the Pull's limits; done."""
        missing = [
            op
            for device, ops in sorted(self.ops.items())
            for op in ops[pull.cursor.get(device, 0) :]
        ]
        batch: list[bytes] = []
        for op in missing[: pull.max_ops]:
            if batch and sum(map(len, batch)) + len(op) > pull.max_bytes:
                break
            batch.append(op)
        return batch, len(batch) == len(missing)

    def apply(self, ops: tuple[bytes, ...]) -> None:
        for op in ops:  # an op's bytes name its device and seq: "<device> <seq>"
            device, seq = op.decode().split(" ")
            assert int(seq) == len(self.ops.setdefault(device, [])) + 1  # no gap, no repeat
            self.ops[device].append(op)


def ops_of(device: str, count: int, start: int = 1) -> list[bytes]:
    return [f"{device} {seq}".encode() for seq in range(start, start + count)]


SERVER_LOG = {A: ops_of(A, 5), B: ops_of(B, 3), C: []}
PULL = Pull(cursor={A: 2}, max_ops=3, max_bytes=1000)
BATCH = Batch(ops=tuple(ops_of(A, 2, start=3)), heads={A: 5, B: 3}, done=False)
ERROR = SyncError(code="unauthorized", message="you may not pull this vault")
PULL_WIRE_MAP = {"type": PULL.TYPE, "cursor": dict(PULL.cursor), "max_ops": 3, "max_bytes": 1000}


def test_protocol_id() -> None:
    assert SYNC_PROTOCOL_ID == "/vivim/sync/1.0.0"


def sync_rounds(
    client: SyncClient, server: SyncServer, ours: Log, theirs: Log, *, chunk: int, max_ops: int
) -> int:
    """Pull until done, as a node's edge would; the number of rounds it took."""
    rounds = 0
    while True:
        rounds += 1
        assert client.state is server.state is State.IDLE
        [received] = events_after(server, client.pull(ours.heads(), max_ops, 1000), chunk)
        assert isinstance(received, PullReceived)
        assert client.state is server.state is State.AWAIT_BATCH
        ops, done = theirs.after(received.pull)
        answer = server.batch(ops, theirs.heads(), done)
        [event] = events_after(client, answer, chunk)
        assert isinstance(event, BatchReceived)
        assert event.batch.heads == theirs.heads()
        ours.apply(event.batch.ops)
        if event.batch.done:
            return rounds


@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["whole", "byte_by_byte", "chunks_of_7"])
def test_a_full_sync_in_several_rounds_then_a_clean_end(chunk: int) -> None:
    client, server = SyncClient(), SyncServer()
    ours, theirs = Log({A: ops_of(A, 1)}), Log(SERVER_LOG)
    assert sync_rounds(client, server, ours, theirs, chunk=chunk, max_ops=2) == 4  # 7 ops, 2 a time
    assert ours.ops == {A: ops_of(A, 5), B: ops_of(B, 3)}

    client.finish()  # the edge closes the client's side of the stream
    assert client.state is State.FINISHED
    assert events_after(server, b"") == [ClientFinished()]
    assert server.state is State.FINISHED
    client.receive_data(b"")  # the server closes its side too
    assert client.next_event() is NEED_DATA
    assert server.next_event() is NEED_DATA


def test_pulling_again_on_the_same_stream_after_done() -> None:
    client, server = SyncClient(), SyncServer()
    ours, theirs = Log(), Log(SERVER_LOG)
    assert sync_rounds(client, server, ours, theirs, chunk=0, max_ops=100) == 1
    theirs.ops[C] = ops_of(C, 2)  # gossip announced new heads
    assert sync_rounds(client, server, ours, theirs, chunk=0, max_ops=100) == 1
    assert ours.ops == theirs.ops
    # Nothing more: an empty batch, necessarily done.
    [pulled] = events_after(server, client.pull(ours.heads(), 10, 10))
    assert pulled == PullReceived(pull=Pull(cursor=theirs.heads(), max_ops=10, max_bytes=10))
    assert events_after(client, server.batch([], theirs.heads(), True)) == [
        BatchReceived(batch=Batch(ops=(), heads=theirs.heads(), done=True))
    ]


def test_frames_are_the_messages_framed() -> None:
    client, server = SyncClient(), SyncServer()
    assert client.pull({A: 2}, 3, 1000) == framed(PULL)
    events_after(server, framed(PULL))
    assert server.batch(BATCH.ops, BATCH.heads, done=False) == framed(BATCH)
    assert server.send_error(ERROR.code, ERROR.message) == framed(ERROR)


# --- limits, on both sides ------------------------------------------------------------------------


def client_awaiting(max_ops: int = 2, max_bytes: int = 10) -> SyncClient:
    client = SyncClient()
    client.pull({}, max_ops, max_bytes)
    return client


def server_answering(max_ops: int = 2, max_bytes: int = 10) -> SyncServer:
    server = SyncServer()
    events_after(server, framed(Pull(cursor={}, max_ops=max_ops, max_bytes=max_bytes)))
    return server


OVER_LIMITS = {
    "too_many_ops": (b"a", b"b", b"c"),
    "too_many_bytes": (b"12345", b"678901"),
}


@pytest.mark.parametrize("ops", list(OVER_LIMITS.values()), ids=list(OVER_LIMITS))
def test_the_client_refuses_a_batch_over_its_pulls_limits(ops: tuple[bytes, ...]) -> None:
    client = client_awaiting(max_ops=2, max_bytes=10)
    with pytest.raises(BatchTooLarge, match="for a pull of at most") as info:
        events_after(client, framed(Batch(ops=ops, heads={}, done=True)))
    assert info.value.code == "too_large"
    assert client.state is State.AWAIT_BATCH
    with pytest.raises(BatchTooLarge):  # and so it stays
        client.next_event()
    with pytest.raises(LocalProtocolError, match="may not finish"):
        client.finish()
    # The client may still say why it stops.
    server = server_answering()
    error = client.send_error(info.value.code, str(info.value))
    assert client.state is State.FAILED
    assert events_after(server, error) == [ErrorReceived(code="too_large", message=str(info.value))]
    assert server.state is State.FAILED


@pytest.mark.parametrize("ops", list(OVER_LIMITS.values()), ids=list(OVER_LIMITS))
def test_the_server_refuses_to_send_a_batch_over_the_pulls_limits(ops: tuple[bytes, ...]) -> None:
    server = server_answering(max_ops=2, max_bytes=10)
    with pytest.raises(LocalProtocolError, match="for a pull of at most"):
        server.batch(ops, {}, True)
    assert server.state is State.AWAIT_BATCH
    server.batch(ops[:1], {}, False)
    assert server.state is State.IDLE


@pytest.mark.parametrize(
    "ops",
    [(b"x" * 10,), (b"x" * 11,), (b"12345", b"67890"), (b"a", b"b")],
    ids=["exactly_max_bytes", "one_op_over_max_bytes_alone", "two_ops_of_max_bytes", "max_ops"],
)
def test_batches_at_the_limits_pass_both_sides(ops: tuple[bytes, ...]) -> None:
    client, server = client_awaiting(max_ops=2, max_bytes=10), server_answering(2, 10)
    assert events_after(client, server.batch(ops, {}, True)) == [
        BatchReceived(batch=Batch(ops=ops, heads={}, done=True))
    ]


def test_a_batch_over_the_frame_limit_is_a_local_error() -> None:
    server = server_answering(max_ops=1, max_bytes=1)
    with pytest.raises(LocalProtocolError, match="over the limit"):
        server.batch([bytes(MAX_FRAME)], {}, True)
    assert server.state is State.AWAIT_BATCH


# --- errors both ways, turn-taking and the end of the stream ------------------------------------


def test_the_server_refuses_a_pull() -> None:
    client, server = SyncClient(), SyncServer()
    events_after(server, client.pull({}, 10, 10))
    error = server.send_error("unauthorized", "you may not pull this vault")
    assert server.state is State.FAILED
    assert events_after(client, error) == [
        ErrorReceived(code="unauthorized", message="you may not pull this vault")
    ]
    assert client.state is State.FAILED
    client.receive_data(b"")
    assert client.next_event() is NEED_DATA


def test_the_server_may_send_an_error_before_any_pull() -> None:
    client, server = SyncClient(), SyncServer()
    assert events_after(client, server.send_error("internal_error", "shutting down")) == [
        ErrorReceived(code="internal_error", message="shutting down")
    ]


def test_the_client_refuses_an_op_after_a_batch() -> None:
    client, server = SyncClient(), SyncServer()
    events_after(server, client.pull({}, 10, 100))
    events_after(client, server.batch([b"op with a bad signature"], {A: 1}, True))
    error = client.send_error("invalid_op", "op A #1: the signature does not verify")
    assert events_after(server, error) == [
        ErrorReceived(code="invalid_op", message="op A #1: the signature does not verify")
    ]
    assert client.state is server.state is State.FAILED
    with pytest.raises(LocalProtocolError, match="may not send"):
        client.send_error("invalid_op", "again")


def test_send_error_cuts_a_long_message_and_refuses_a_bad_code() -> None:
    client, server = SyncClient(), SyncServer()
    with pytest.raises(LocalProtocolError, match="not like"):
        client.send_error("Invalid Op", "")
    assert client.state is State.IDLE
    [event] = events_after(server, client.send_error("invalid_op", "x" * 5000))
    assert event == ErrorReceived(code="invalid_op", message="x" * MAX_ERROR_MESSAGE)


def test_a_second_pull_before_the_answer_is_unexpected() -> None:
    client, server = SyncClient(), SyncServer()
    events_after(server, client.pull({}, 10, 10))
    with pytest.raises(UnexpectedMessage, match=r"sent vivim\.sync\.pull\.v1 in await_batch"):
        events_after(server, framed(PULL))
    assert server.state is State.AWAIT_BATCH
    with pytest.raises(LocalProtocolError, match="misbehaved"):
        server.batch([], {}, True)
    server.send_error("unexpected_message", "one pull at a time")
    assert server.state is State.FAILED


def test_the_server_closing_while_a_pull_is_outstanding_is_closed_early() -> None:
    client = client_awaiting()
    client.receive_data(b"")
    with pytest.raises(ClosedEarly, match="the server closed the stream in await_batch"):
        client.next_event()
    assert client.state is State.AWAIT_BATCH


def test_the_client_closing_while_its_pull_is_outstanding_is_closed_early() -> None:
    server = server_answering()
    server.receive_data(b"")
    with pytest.raises(ClosedEarly, match="the client closed the stream in await_batch"):
        server.next_event()


def test_after_a_remote_error_only_an_error_may_be_sent() -> None:
    client = SyncClient()
    client.receive_data(b"\x00")  # an empty frame, between pulls
    with pytest.raises(MalformedInput):
        client.next_event()
    assert client.state is State.IDLE
    with pytest.raises(LocalProtocolError, match="the server misbehaved"):
        client.pull({}, 1, 1)
    with pytest.raises(LocalProtocolError, match="the server misbehaved"):
        client.finish()
    assert client.state is State.IDLE
    client.send_error("malformed", "an empty frame")
    assert client.state is State.FAILED


def test_anything_from_the_server_after_finish_is_unexpected() -> None:
    client = SyncClient()
    client.finish()
    client.receive_data(framed(ERROR))
    with pytest.raises(UnexpectedMessage, match="after the sync ended"):
        client.next_event()
    assert client.state is State.FINISHED


def test_sending_out_of_turn_is_a_local_error_and_changes_nothing() -> None:
    client, server = SyncClient(), SyncServer()
    with pytest.raises(LocalProtocolError, match=r"the server may not send vivim\.sync\.batch\.v1"):
        server.batch([b"op"], {}, True)
    client.pull({}, 1, 1)
    with pytest.raises(LocalProtocolError, match=r"the client may not send vivim\.sync\.pull\.v1"):
        client.pull({}, 1, 1)
    with pytest.raises(LocalProtocolError, match="may not finish in await_batch"):
        client.finish()
    assert client.state is State.AWAIT_BATCH
    assert server.state is State.IDLE
    client.send_error("internal_error", "stopping")
    with pytest.raises(LocalProtocolError, match="may not finish"):
        client.finish()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.pull({"not a peer id": 1}, 1, 1),
        lambda c: c.pull({A: -1}, 1, 1),
        lambda c: c.pull({}, 0, 1),
        lambda c: c.pull({}, 1, 2**40),
    ],
)
def test_impossible_pulls_are_a_local_error(call: Callable[[SyncClient], object]) -> None:
    client = SyncClient()
    with pytest.raises(LocalProtocolError, match="cannot pull"):
        call(client)
    assert client.state is State.IDLE


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.batch([b""], {}, True),
        lambda s: s.batch(b"op", {}, True),
        lambda s: s.batch([], {A: -1}, True),
        lambda s: s.batch([], {}, False),
        lambda s: s.batch([b"op"], {}, 1),
    ],
)
def test_impossible_batches_are_a_local_error(call: Callable[[SyncServer], object]) -> None:
    server = server_answering()
    with pytest.raises(LocalProtocolError, match="cannot answer"):
        call(server)
    assert server.state is State.AWAIT_BATCH


# --- every (state, input) pair --------------------------------------------------------------------

EOF = b""
FRAMES = {"pull": framed(PULL), "batch": framed(BATCH), "error": framed(ERROR)}
MESSAGE_OF: dict[str, Message] = {"pull": PULL, "batch": BATCH, "error": ERROR}
# (bytes fed, then EOF or not) that are no message at all.
OTHER_INPUTS: dict[str, tuple[bytes, bool]] = {
    "garbage_frame": (encode_frame(b"\xffgarbage", MAX_FRAME), False),
    "unknown_type": (encode_frame(canonical_encode({"type": "vivim.sync.x.v1"}), MAX_FRAME), False),
    "pull_with_a_bad_field": (
        encode_frame(canonical_encode({**PULL_WIRE_MAP, "max_ops": 0}), MAX_FRAME),
        False,
    ),
    "non_minimal_prefix": (b"\x80\x00", False),
    "oversized_frame": (encode_varint(MAX_FRAME + 1), False),
    "truncated_frame": (framed(PULL)[:10], True),
}


def client_in(state: State) -> SyncClient:
    client = SyncClient()
    steps: dict[State, Callable[[], object]] = {
        State.IDLE: lambda: None,
        State.AWAIT_BATCH: lambda: client.pull(PULL.cursor, PULL.max_ops, PULL.max_bytes),
        State.FINISHED: client.finish,
        State.FAILED: lambda: client.send_error("internal_error", "stopping"),
    }
    steps[state]()
    assert client.state is state
    return client


def server_in(state: State) -> SyncServer:
    server = SyncServer()
    steps: dict[State, Callable[[], object]] = {
        State.IDLE: lambda: None,
        State.AWAIT_BATCH: lambda: events_after(server, FRAMES["pull"]),
        State.FINISHED: lambda: events_after(server, EOF),
        State.FAILED: lambda: server.send_error("internal_error", "stopping"),
    }
    steps[state]()
    assert server.state is state
    return server


SESSIONS: dict[Role, Callable[[State], Session]] = {Role.CLIENT: client_in, Role.SERVER: server_in}
PEER = {Role.CLIENT: Role.SERVER, Role.SERVER: Role.CLIENT}


def fed(session: Session, state: State, data: bytes) -> bool:
    """Feed `data`; False if the session cannot take it: a server FINISHED has read its EOF,
    after which a stream delivers nothing (so taking data then is the edge's bug)."""
    if isinstance(session, SyncServer) and state is State.FINISHED and data:
        with pytest.raises(LocalProtocolError, match="after EOF"):
            session.receive_data(data)
        assert session.state is state
        return False
    session.receive_data(data)
    return True


def assert_refused_without_change(session: Session, state: State) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        session.next_event()
    assert session.state is state
    with pytest.raises(type(info.value)):  # the same error from then on
        session.next_event()
    assert session.state is state
    return info.value


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(FRAMES))
def test_every_message_in_every_state_follows_the_table(
    role: Role, state: State, name: str
) -> None:
    session = SESSIONS[role](state)
    if not fed(session, state, FRAMES[name]):
        return
    new_state = TRANSITIONS.get((state, PEER[role], MESSAGE_OF[name].TYPE))
    if new_state is None:
        error = assert_refused_without_change(session, state)
        assert isinstance(error, UnexpectedMessage)
        return
    event = session.next_event()
    assert not isinstance(event, NeedData)
    assert session.state is new_state
    assert session.next_event() is NEED_DATA


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
def test_the_end_of_stream_in_every_state_follows_the_table(role: Role, state: State) -> None:
    session = SESSIONS[role](state)
    session.receive_data(EOF)
    new_state = TRANSITIONS.get((state, PEER[role], END_OF_STREAM))
    if new_state is not None:
        assert session.next_event() == ClientFinished()
        assert session.state is new_state
    elif state in TERMINAL_STATES:
        assert session.next_event() is NEED_DATA  # the peer closed after the end: nothing more
        assert session.state is state
    else:
        assert isinstance(assert_refused_without_change(session, state), ClosedEarly)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(OTHER_INPUTS))
def test_every_other_input_in_every_state_is_a_remote_error(
    role: Role, state: State, name: str
) -> None:
    session = SESSIONS[role](state)
    data, eof = OTHER_INPUTS[name]
    if not fed(session, state, data):
        return
    if eof:
        session.receive_data(EOF)
    assert_refused_without_change(session, state)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("garbage_frame", MalformedInput),
        ("unknown_type", MalformedInput),
        ("pull_with_a_bad_field", MalformedInput),
        ("non_minimal_prefix", MalformedInput),
        ("oversized_frame", FrameTooLarge),
        ("truncated_frame", TruncatedFrame),
    ],
)
def test_other_inputs_raise_their_own_errors(name: str, error: type[RemoteProtocolError]) -> None:
    server = server_in(State.IDLE)
    data, eof = OTHER_INPUTS[name]
    server.receive_data(data)
    if eof:
        server.receive_data(EOF)
    with pytest.raises(error):
        server.next_event()


def test_every_table_row_is_reached_by_the_pairs() -> None:
    # A row no honest run takes would be a row no test above checks the sessions against.
    assert {state for state, _, _ in TRANSITIONS} == set(State) - TERMINAL_STATES
    assert set(TRANSITIONS.values()) == set(State)


@given(
    state=st.sampled_from(list(State)),
    role=st.sampled_from(list(Role)),
    data=st.binary(max_size=80),
)
def test_any_bytes_in_any_state_give_events_or_a_remote_error(
    state: State, role: Role, data: bytes
) -> None:
    session = SESSIONS[role](state)
    if not (role is Role.SERVER and state is State.FINISHED):
        session.receive_data(data)
    session.receive_data(EOF)
    try:
        while not isinstance(session.next_event(), NeedData):
            pass
    except RemoteProtocolError:
        assert session.state is state or session.state in TERMINAL_STATES
