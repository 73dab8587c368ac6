"""`/vivim/global/1.0.0`: pull the global publications a peer holds that we have not seen.

GossipSub carries a publication to the nodes connected when it is published; a node that was
away asks a peer for what it missed. The peer numbers the publications it holds in the order it
stored them (its local `seq`), so "everything after your seq N" is a cursor the client keeps per
peer. One stream, any number of pulls, one at a time, one frame per message:

    client -> server   Pull(after, limit)          -> Batch(publications, last, more)
    server -> client   GlobalError(code, message)  instead of a Batch: the stream ends (FAILED)

`Batch.publications` are whole publications (wire bytes, decoded on receipt: a malformed one is
a `MalformedInput`), at most `limit` of them and `MAX_BATCH_BYTES` in all; `last` is the seq of
the last one (the next Pull's `after`), `more` whether the server holds more after it. The
client closes its side between pulls when done (`finish()`); either side may just close.

Verifying each publication (signature, content, credentials: `protocols.publication`) is the
client's, before it stores it; the session checks the turn-taking, the bounds, and that a Batch
fits its Pull (`MismatchedAnswer`). The sessions are sans-I/O (the h11 shape): `TRANSITIONS`
is the table, an error raised on receiving is raised again by every later `next_event`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final, Self

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import (
    ClosedEarly,
    LocalProtocolError,
    MalformedInput,
    MismatchedAnswer,
    RemoteProtocolError,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from protocols.publication import MAX_PUBLICATION_BYTES, GlobalPublication

__all__ = [
    "GLOBAL_SYNC_PROTOCOL_ID",
    "MAX_BATCH_BYTES",
    "MAX_FRAME",
    "MAX_LIMIT",
    "NEED_DATA",
    "TRANSITIONS",
    "Batch",
    "GlobalError",
    "GlobalSyncClient",
    "GlobalSyncServer",
    "NeedData",
    "Pull",
    "State",
    "StreamEnded",
    "decode_message",
    "take_fitting",
]

GLOBAL_SYNC_PROTOCOL_ID: Final = "/vivim/global/1.0.0"
PULL: Final = "vivim.global.pull.v1"
BATCH: Final = "vivim.global.batch.v1"
ERROR: Final = "vivim.global.error.v1"
END_OF_STREAM: Final = "end_of_stream"
# Publications per pull: enough to catch up quickly, few enough to verify between frames.
MAX_LIMIT: Final = 256
# The publications of one Batch: at least one whole publication always fits.
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
assert MAX_BATCH_BYTES >= MAX_PUBLICATION_BYTES
MAX_FRAME: Final = MAX_BATCH_BYTES + 64 * 1024
MAX_SEQ: Final = 2**63 - 1
MAX_ERROR_MESSAGE: Final = 500


class State(StrEnum):
    IDLE = "idle"  # no pull outstanding: the client may pull or finish
    AWAIT_BATCH = "await_batch"
    CLOSED = "closed"
    FAILED = "failed"


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


TERMINAL_STATES: Final = frozenset({State.CLOSED, State.FAILED})
# (state, sender, message type) -> new state; a missing row is a message out of turn.
TRANSITIONS: Final[dict[tuple[State, Role, str], State]] = {
    (State.IDLE, Role.CLIENT, PULL): State.AWAIT_BATCH,
    (State.AWAIT_BATCH, Role.SERVER, BATCH): State.IDLE,
    (State.AWAIT_BATCH, Role.SERVER, ERROR): State.FAILED,
    (State.IDLE, Role.SERVER, ERROR): State.FAILED,
    (State.IDLE, Role.CLIENT, END_OF_STREAM): State.CLOSED,
    (State.IDLE, Role.SERVER, END_OF_STREAM): State.CLOSED,
}


def _check_seq(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise MalformedInput(f"{name} must be an int in [0, 2**63 - 1]: {value!r:.40}")
    return value


def _fields(value: object, message_type: str, names: set[str]) -> dict[str, object]:
    if not isinstance(value, dict) or value.get("type") != message_type:
        raise MalformedInput(f"not a {message_type} message")
    if value.keys() != {"type", *names}:
        raise MalformedInput(f"{message_type} fields wrong: {sorted(value.keys())!s:.200}")
    return value


@dataclass(frozen=True, kw_only=True)
class Pull:
    """Send the publications stored after your seq `after`, at most `limit` of them."""

    TYPE: ClassVar[str] = PULL
    after: int
    limit: int

    def __post_init__(self) -> None:
        _check_seq("after", self.after)
        _check_seq("limit", self.limit)
        if not 1 <= self.limit <= MAX_LIMIT:
            raise MalformedInput(f"limit must be 1 to {MAX_LIMIT}: {self.limit}")

    def to_wire(self) -> bytes:
        return canonical_encode({"type": PULL, "after": self.after, "limit": self.limit})

    @classmethod
    def from_value(cls, value: object) -> Self:
        fields = _fields(value, PULL, {"after", "limit"})
        return cls(
            after=_check_seq("after", fields["after"]), limit=_check_seq("limit", fields["limit"])
        )


@dataclass(frozen=True, kw_only=True)
class Batch:
    """The publications after the Pull's `after`, in the server's order; `last` is the seq of
    the last one (the Pull's `after` when there is none), `more` whether more follow it."""

    TYPE: ClassVar[str] = BATCH
    publications: tuple[GlobalPublication, ...]
    last: int
    more: bool

    def __post_init__(self) -> None:
        if not isinstance(self.publications, tuple) or not all(
            isinstance(p, GlobalPublication) for p in self.publications
        ):
            raise MalformedInput("publications is a list of publications")
        if len(self.publications) > MAX_LIMIT:
            raise MalformedInput(f"{len(self.publications)} publications, more than {MAX_LIMIT}")
        total = sum(len(p.to_wire()) for p in self.publications)
        if total > MAX_BATCH_BYTES:
            raise MalformedInput(f"publications of {total} bytes, more than {MAX_BATCH_BYTES}")
        _check_seq("last", self.last)
        if not isinstance(self.more, bool):
            raise MalformedInput("more is a bool")
        if self.more and not self.publications:
            raise MalformedInput("an empty batch cannot promise more")

    def to_wire(self) -> bytes:
        return canonical_encode(
            {
                "type": BATCH,
                "last": self.last,
                "more": self.more,
                "publications": [p.to_wire() for p in self.publications],
            }
        )

    @classmethod
    def from_value(cls, value: object) -> Self:
        fields = _fields(value, BATCH, {"publications", "last", "more"})
        items = fields["publications"]
        if not isinstance(items, list) or len(items) > MAX_LIMIT:
            raise MalformedInput(f"publications is a list of at most {MAX_LIMIT}")
        publications = []
        for item in items:
            if not isinstance(item, bytes):
                raise MalformedInput("a publication is bytes")
            publications.append(GlobalPublication.from_wire(item))
        more = fields["more"]
        if not isinstance(more, bool):
            raise MalformedInput("more is a bool")
        return cls(
            publications=tuple(publications), last=_check_seq("last", fields["last"]), more=more
        )


@dataclass(frozen=True, kw_only=True)
class GlobalError:
    """The server refuses (a pull it cannot answer, a client that misbehaved); the stream ends."""

    TYPE: ClassVar[str] = ERROR
    code: str
    message: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not 0 < len(self.code) <= 64:
            raise MalformedInput("code is 1 to 64 characters")
        if not isinstance(self.message, str) or len(self.message) > MAX_ERROR_MESSAGE:
            raise MalformedInput(f"message is at most {MAX_ERROR_MESSAGE} characters")

    def to_wire(self) -> bytes:
        return canonical_encode({"type": ERROR, "code": self.code, "message": self.message})

    @classmethod
    def from_value(cls, value: object) -> Self:
        fields = _fields(value, ERROR, {"code", "message"})
        code, message = fields["code"], fields["message"]
        if not isinstance(code, str) or not isinstance(message, str):
            raise MalformedInput("code and message are text")
        return cls(code=code, message=message)


Message = Pull | Batch | GlobalError
_DECODERS: Final[dict[str, Callable[[object], Message]]] = {
    PULL: Pull.from_value,
    BATCH: Batch.from_value,
    ERROR: GlobalError.from_value,
}


def decode_message(data: bytes) -> Message:
    """One message from its frame's payload; `MalformedInput` for anything else."""
    value = canonical_decode(data)
    message_type = value.get("type") if isinstance(value, dict) else None
    decoder = _DECODERS.get(message_type) if isinstance(message_type, str) else None
    if decoder is None:
        raise MalformedInput(f"unknown global sync message type {message_type!r:.60}")
    return decoder(value)


@dataclass(frozen=True, kw_only=True)
class StreamEnded:
    """The peer closed its side between pulls: the normal end."""


def take_fitting(wires: Sequence[bytes]) -> int:
    """How many of `wires` (publications in order, as stored) one Batch holds: at least one if
    any, at most MAX_LIMIT and MAX_BATCH_BYTES."""
    total = 0
    for count, wire in enumerate(wires[:MAX_LIMIT]):
        total += len(wire)
        if total > MAX_BATCH_BYTES:
            return max(count, 1)
    return min(len(wires), MAX_LIMIT)


class _Session:
    _us: ClassVar[Role]
    _them: ClassVar[Role]

    def __init__(self) -> None:
        self._state = State.IDLE
        self._decoder = FrameDecoder(MAX_FRAME)
        self._error: RemoteProtocolError | None = None
        self._pull: Pull | None = None

    @property
    def state(self) -> State:
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def _send(self, message: Message) -> bytes:
        new_state = TRANSITIONS.get((self._state, self._us, message.TYPE))
        if new_state is None or (self._error is not None and message.TYPE != ERROR):
            raise LocalProtocolError(f"the {self._us} may not send {message.TYPE} in {self._state}")
        if isinstance(message, Batch) and self._pull is not None:
            problem = _mismatch(self._pull, message)
            if problem is not None:
                raise LocalProtocolError(f"cannot send {problem}")
        frame = encode_frame(message.to_wire(), MAX_FRAME)
        self._state = new_state
        self._pull = message if isinstance(message, Pull) else None
        return frame

    def _next_event(self) -> Message | StreamEnded | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._read()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _read(self) -> Message | StreamEnded | NeedData:
        if self._state in TERMINAL_STATES:
            if self._decoder.buffered:
                raise UnexpectedMessage(f"the {self._them} sent bytes after the stream ended")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if not self._decoder.closed:
                return NEED_DATA
            new_state = TRANSITIONS.get((self._state, self._them, END_OF_STREAM))
            if new_state is None:
                raise ClosedEarly(f"the {self._them} closed the stream in {self._state}")
            self._state = new_state
            return StreamEnded()
        message = decode_message(frame)
        new_state = TRANSITIONS.get((self._state, self._them, message.TYPE))
        if new_state is None:
            raise UnexpectedMessage(f"the {self._them} sent {message.TYPE} in {self._state}")
        if isinstance(message, Batch) and self._pull is not None:
            problem = _mismatch(self._pull, message)
            if problem is not None:
                raise MismatchedAnswer(f"the server sent {problem}")
        self._state = new_state
        self._pull = message if isinstance(message, Pull) else None
        return message


def _mismatch(pull: Pull, batch: Batch) -> str | None:
    if len(batch.publications) > pull.limit:
        return f"{len(batch.publications)} publications for a limit of {pull.limit}"
    if batch.publications and batch.last <= pull.after:
        return f"a batch ending at seq {batch.last}, not after {pull.after}"
    if not batch.publications and batch.last != pull.after:
        return "an empty batch that moves the cursor"
    return None


class GlobalSyncClient(_Session):
    """The pulling side: `pull()`, read its Batch, pull again while `more`; `finish()`."""

    _us = Role.CLIENT
    _them = Role.SERVER

    def pull(self, after: int, limit: int = MAX_LIMIT) -> bytes:
        try:
            request = Pull(after=after, limit=limit)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this pull: {err}") from err
        return self._send(request)

    def finish(self) -> None:
        """Mark the stream ended (between pulls); the caller then closes its side."""
        if (self._state, self._us, END_OF_STREAM) not in TRANSITIONS:
            raise LocalProtocolError(f"cannot finish in {self._state}")
        self._state = State.CLOSED

    def next_event(self) -> Batch | GlobalError | StreamEnded | NeedData:
        """The answer, `StreamEnded` or NEED_DATA; raises `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, Pull)  # the table: not the client's to receive
        return event


class GlobalSyncServer(_Session):
    """The serving side: each `Pull` is answered with `batch()`; `fail()` ends the stream."""

    _us = Role.SERVER
    _them = Role.CLIENT

    def next_event(self) -> Pull | StreamEnded | NeedData:
        """A Pull, `StreamEnded` or NEED_DATA; raises `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, Batch | GlobalError)
        return event

    @property
    def pending(self) -> Pull | None:
        """The Pull to answer, if one is outstanding."""
        return self._pull

    def batch(self, publications: Sequence[GlobalPublication], last: int, more: bool) -> bytes:
        try:
            answer = Batch(publications=tuple(publications), last=last, more=more)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot answer with this: {err}") from err
        return self._send(answer)

    def fail(self, code: str, message: str) -> bytes:
        """The frame of a GlobalError that ends the stream; then close it."""
        return self._send(GlobalError(code=code, message=message[:MAX_ERROR_MESSAGE]))
