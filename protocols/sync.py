"""`/vivim/sync/1.0.0`: a client pulls, batch by batch, the ops a server holds after its cursor.

One stream, one frame per message, the client leading:

    client -> server   Pull       cursor (per device, the highest seq held without a gap),
                                  max_ops, max_bytes
    server -> client   Batch      the next ops after the cursor, the server's heads, done
    ... the client applies the ops, advances its cursor and pulls again, until it is content
    client             finish()   closes its side of the stream: the normal end

A pull, not a push: the client names what it holds and how much it takes at once, so a sync
interrupted anywhere resumes from the cursor the client committed with its last applied batch,
nothing lost and nothing applied twice, and no server can make a client take more than it asked
for (a Batch over the Pull's limits is refused whole, `BatchTooLarge`). The Batch's `done` tells
the client it caught up; it may still pull again on the same stream (gossip announced new heads)
before it finishes. Either side may send a `SyncError` at any time before the end, to say why it
stops (`unauthorized`, `malformed`, `too_large`, `invalid_op`, `internal_error`, ...).

The sessions are sans-I/O machines (the h11 shape) sharing one table, `TRANSITIONS`, keyed by
(state, sender's role, message type); both sides go through the same states, each applying the
rows for its own sends and for its peer's messages. The client's end of stream is a row too
(`END_OF_STREAM`): `finish()` takes it on the client, the server's EOF on the server. The ops are
opaque here; the client's store verifies them and the edge answers `invalid_op` if one fails.

An error raised on receiving leaves the state as it was and is raised again by every later
`next_event`; after it the session sends nothing but a `SyncError` saying why it stops.
The messages and their codec are in `protocols.sync_messages`, re-exported here.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from protocols.errors import (
    BatchTooLarge,
    ClosedEarly,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from protocols.sync_messages import (
    BATCH,
    MAX_BATCH_BYTES,
    MAX_BATCH_OPS,
    MAX_CURSOR_DEVICES,
    MAX_ERROR_CODE,
    MAX_ERROR_MESSAGE,
    MAX_SEQ,
    PULL,
    SYNC_ERROR,
    Batch,
    Message,
    Pull,
    SyncError,
    check_device_seqs,
    decode_message,
)

__all__ = [
    "BATCH",
    "END_OF_STREAM",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_OPS",
    "MAX_CURSOR_DEVICES",
    "MAX_ERROR_CODE",
    "MAX_ERROR_MESSAGE",
    "MAX_FRAME",
    "MAX_SEQ",
    "NEED_DATA",
    "PULL",
    "SYNC_ERROR",
    "SYNC_PROTOCOL_ID",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Batch",
    "BatchReceived",
    "BatchTooLarge",
    "ClientEvent",
    "ClientFinished",
    "ClosedEarly",
    "ErrorReceived",
    "Message",
    "NeedData",
    "Pull",
    "PullReceived",
    "Role",
    "ServerEvent",
    "State",
    "SyncClient",
    "SyncError",
    "SyncServer",
    "UnexpectedMessage",
    "check_device_seqs",
    "decode_message",
]

SYNC_PROTOCOL_ID = "/vivim/sync/1.0.0"
# A full Batch's ops, plus room for their CBOR heads (at most 5 bytes each), a full heads map
# (about 260 KB) and the map around them.
MAX_FRAME = MAX_BATCH_BYTES + 1024 * 1024


class State(StrEnum):
    """Where a sync stream is; both sessions go through the same states."""

    IDLE = "idle"  # no Pull outstanding: the client is to pull or finish
    AWAIT_BATCH = "await_batch"  # a Pull is outstanding: the server is to answer it
    FINISHED = "finished"  # the client closed its side with no Pull outstanding: the normal end
    FAILED = "failed"  # a SyncError was sent or received


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


TERMINAL_STATES: Final = frozenset({State.FINISHED, State.FAILED})
# Not a message: the client closing its side of the stream, which ends a sync only between pulls.
END_OF_STREAM: Final = "end_of_stream"

# (state, role of the sender, message type) -> new state. A missing row is a message out of turn:
# `UnexpectedMessage` (`ClosedEarly` for an end of stream) if the peer sent it,
# `LocalProtocolError` if we tried to send it.
TRANSITIONS: Final[dict[tuple[State, Role, str], State]] = {
    (State.IDLE, Role.CLIENT, PULL): State.AWAIT_BATCH,
    (State.AWAIT_BATCH, Role.SERVER, BATCH): State.IDLE,
    (State.IDLE, Role.CLIENT, END_OF_STREAM): State.FINISHED,
    # A SyncError ends any sync not yet ended, whoever sends it, in turn or not.
    **{
        (state, role, SYNC_ERROR): State.FAILED
        for state in State
        if state not in TERMINAL_STATES
        for role in Role
    },
}


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PullReceived:
    """(Server) The client asks for the ops after `pull.cursor`: answer with `batch()`."""

    pull: Pull


@dataclass(frozen=True, kw_only=True)
class BatchReceived:
    """(Client) The answer to our Pull, within its limits: verify, apply, pull again or finish."""

    batch: Batch


@dataclass(frozen=True, kw_only=True)
class ClientFinished:
    """(Server) The client closed its side between pulls: the sync ended normally."""


@dataclass(frozen=True, kw_only=True)
class ErrorReceived:
    """The peer sent a SyncError; the sync is over (state FAILED)."""

    code: str
    message: str


ClientEvent = BatchReceived | ErrorReceived
ServerEvent = PullReceived | ClientFinished | ErrorReceived


# --- the sessions ---------------------------------------------------------------------------------


class _Session:
    """What both sides share: framing, the table, the outstanding Pull and the sticky error."""

    _us: ClassVar[Role]
    _them: ClassVar[Role]

    def __init__(self) -> None:
        self._state = State.IDLE
        self._decoder = FrameDecoder(MAX_FRAME)
        self._error: RemoteProtocolError | None = None
        self._pull: Pull | None = None  # the Pull being answered, in AWAIT_BATCH

    @property
    def state(self) -> State:
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def send_error(self, code: str, message: str) -> bytes:
        """The frame of a SyncError saying why we stop (terminal); `message` is cut to
        MAX_ERROR_MESSAGE characters, so an exception's text can be passed as it is."""
        try:
            if isinstance(message, str):
                message = message[:MAX_ERROR_MESSAGE]
            error = SyncError(code=code, message=message)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot send this error: {err}") from err
        return self._send(error)

    def _send(self, message: Message) -> bytes:
        new_state = TRANSITIONS.get((self._state, self._us, message.TYPE))
        if new_state is None:
            raise LocalProtocolError(f"the {self._us} may not send {message.TYPE} in {self._state}")
        if self._error is not None and not isinstance(message, SyncError):
            raise LocalProtocolError(f"the {self._them} misbehaved ({self._error}): send an error")
        self._check_sending(message)
        frame = encode_frame(message.to_wire(), MAX_FRAME)
        self._state = new_state
        self._pull = message if isinstance(message, Pull) else None
        return frame

    def _check_sending(self, message: Message) -> None:
        """Raise `LocalProtocolError` if `message`, allowed by the table, is not ours to send."""

    def _next_event(self) -> ClientEvent | ServerEvent | NeedData:
        """The next event or NEED_DATA; a `RemoteProtocolError` raised once is raised again."""
        if self._error is not None:
            raise self._error
        try:
            return self._read_event()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _read_event(self) -> ClientEvent | ServerEvent | NeedData:
        if self._state in TERMINAL_STATES:
            if self._decoder.buffered:
                raise UnexpectedMessage(f"the {self._them} sent bytes after the sync ended")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if not self._decoder.closed:
                return NEED_DATA
            new_state = TRANSITIONS.get((self._state, self._them, END_OF_STREAM))
            if new_state is None:
                raise ClosedEarly(f"the {self._them} closed the stream in {self._state}")
            self._state = new_state
            return ClientFinished()
        message = decode_message(frame)
        new_state = TRANSITIONS.get((self._state, self._them, message.TYPE))
        if new_state is None:
            raise UnexpectedMessage(f"the {self._them} sent {message.TYPE} in {self._state}")
        event = self._received(message)
        self._state = new_state
        self._pull = message if isinstance(message, Pull) else None
        return event

    def _received(self, message: Message) -> ClientEvent | ServerEvent:
        """The event for a message the table allows; raises before changing anything."""
        if not isinstance(message, SyncError):
            raise LocalProtocolError(f"no handler for {message.TYPE}")  # the table forbids it
        return ErrorReceived(code=message.code, message=message.message)


class SyncClient(_Session):
    """The pulling side: `pull()`, then `BatchReceived` (or `ErrorReceived`); pull again or
    `finish()`. Refuses a Batch over the limits of its Pull with `BatchTooLarge`."""

    _us = Role.CLIENT
    _them = Role.SERVER

    def next_event(self) -> ClientEvent | NeedData:
        """`BatchReceived`, `ErrorReceived` or NEED_DATA; raises `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, PullReceived | ClientFinished)  # the table: not the client's
        return event

    def pull(self, cursor: Mapping[str, int], max_ops: int, max_bytes: int) -> bytes:
        """The frame of a Pull for the ops after `cursor` (when idle: at first, after a Batch)."""
        try:
            pull = Pull(cursor=cursor, max_ops=max_ops, max_bytes=max_bytes)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot pull: {err}") from err
        return self._send(pull)

    def finish(self) -> None:
        """Mark the sync ended (when idle); the caller then closes its side of the stream.

        Anything the server sends after that is `UnexpectedMessage`; its EOF is a clean end.
        """
        new_state = TRANSITIONS.get((self._state, self._us, END_OF_STREAM))
        if new_state is None:
            raise LocalProtocolError(f"the client may not finish in {self._state}")
        if self._error is not None:
            raise LocalProtocolError(f"the server misbehaved ({self._error}): send an error")
        self._state = new_state

    def _received(self, message: Message) -> ClientEvent | ServerEvent:
        if isinstance(message, Batch):
            pull = self._pull
            assert pull is not None  # the table admits a Batch only with a Pull outstanding
            problem = _over_limits(message, pull)
            if problem is not None:
                raise BatchTooLarge(f"the server sent {problem}")
            return BatchReceived(batch=message)
        return super()._received(message)


class SyncServer(_Session):
    """The serving side: on `PullReceived` answer with `batch()` (or `send_error()`); the sync
    ends normally with `ClientFinished`."""

    _us = Role.SERVER
    _them = Role.CLIENT

    def next_event(self) -> ServerEvent | NeedData:
        """`PullReceived`, `ClientFinished`, `ErrorReceived` or NEED_DATA; raises
        `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, BatchReceived)  # the table: not the server's
        return event

    def batch(self, ops: Sequence[bytes], heads: Mapping[str, int], done: bool) -> bytes:
        """The frame of the Batch answering the Pull received; `LocalProtocolError` if it is not
        the time, or if `ops` are over the Pull's limits (take fewer: one op over `max_bytes`
        may travel alone)."""
        try:
            batch = Batch(ops=tuple(ops), heads=heads, done=done)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot answer with this batch: {err}") from err
        return self._send(batch)

    def _check_sending(self, message: Message) -> None:
        if isinstance(message, Batch):
            assert self._pull is not None  # the table admits a Batch only with a Pull outstanding
            problem = _over_limits(message, self._pull)
            if problem is not None:
                raise LocalProtocolError(f"cannot send {problem}")

    def _received(self, message: Message) -> ClientEvent | ServerEvent:
        if isinstance(message, Pull):
            return PullReceived(pull=message)
        return super()._received(message)


def _over_limits(batch: Batch, pull: Pull) -> str | None:
    """What makes `batch` exceed the limits `pull` asked for, or None if it is within them."""
    if len(batch.ops) > pull.max_ops:
        return f"a batch of {len(batch.ops)} ops for a pull of at most {pull.max_ops}"
    if len(batch.ops) > 1 and batch.op_bytes > pull.max_bytes:
        return f"a batch of {batch.op_bytes} bytes of ops for a pull of at most {pull.max_bytes}"
    return None
