"""`/vivim/peering/1.0.0`: a friend request or its acceptance, handed to the other person's device.

One stream carries requests one at a time, each answered before the next, one frame per
message (protocols.framing, at most MAX_FRAME bytes):

    client -> server   SendRequest(request)        -> Received(request_id, acceptance | None)
                       SendAcceptance(acceptance)  -> AcceptanceTaken(request_id)
    server -> client   PeeringError(code, message) instead of an answer; the stream goes on

`Received` says the request is held (pending a person's decision), or, for a request accepted
already (a retry), carries the acceptance. A server *drops* a request from a DID it blocked:
it answers nothing and closes the stream (`drop()`); the client reads the end of the stream
where an answer was due (`ClosedEarly`). Either side ends the stream between requests by
closing its side (`StreamEnded`). A server that stops a stream because the client misbehaved
(a malformed or oversized frame, a message out of turn) says why with `fail()`: a PeeringError
after which it sends nothing; the client reads it as the answer to its request, or, between
requests, as the end of the stream.

Sans-I/O (the h11 shape): the sessions check turn-taking in one table, `TRANSITIONS`, keyed by
(state, role of the sender, message type), the bounds of every message and that an answer names
the request it answers. Whether a record checks (signatures, chains), whether a token is good,
whether the sender is blocked or rate-limited is the node's and the store's to decide.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

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
from protocols.pairing_code import _check_str
from protocols.peering import ConnectionAcceptance, ConnectionRequest

__all__ = [
    "MAX_FRAME",
    "NEED_DATA",
    "PEERING_PROTOCOL_ID",
    "TRANSITIONS",
    "AcceptanceTaken",
    "ErrorCode",
    "NeedData",
    "PeeringClient",
    "PeeringError",
    "PeeringServer",
    "Received",
    "SendAcceptance",
    "SendRequest",
    "State",
    "StreamEnded",
    "decode_message",
]

PEERING_PROTOCOL_ID = "/vivim/peering/1.0.0"
# A record holds at most 16 certificates and 256 rotations (~250 bytes each, ~68 KB), 8 + 8
# addresses of 256 characters and a 500-character note: 128 KiB holds the largest with room.
MAX_FRAME: Final = 128 * 1024
MAX_ERROR_MESSAGE = 500
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ErrorCode(StrEnum):
    """Why a server refuses (a PeeringError's code); the codes of protocols.errors travel too
    (`malformed`, `bad_signature`, `untrusted_device`, `not_for_us`, ...)."""

    TOKEN_REFUSED = "token_refused"  # the invite token is unknown, spent or expired
    RATE_LIMITED = "rate_limited"  # too many unsolicited requests, or one pending already
    ALREADY_CONNECTED = "already_connected"  # a friend already: nothing to ask
    UNKNOWN_REQUEST = "unknown_request"  # an acceptance of a request we have not pending


class _Wire:
    TYPE: ClassVar[str]

    def to_wire(self) -> bytes:
        wire: dict[str, object] = {"type": self.TYPE}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, ConnectionRequest | ConnectionAcceptance):
                value = value.to_wire()
            wire[item.name] = value
        return canonical_encode(wire)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MalformedInput(f"message is a {message.TYPE}, expected a {cls.TYPE}")
        return message


def _check_instance(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a {kind.__name__}")


@dataclass(frozen=True, kw_only=True)
class SendRequest(_Wire):
    TYPE: ClassVar[str] = "vivim.peering.send_request.v1"
    request: ConnectionRequest

    def __post_init__(self) -> None:
        _check_instance("request", self.request, ConnectionRequest)


@dataclass(frozen=True, kw_only=True)
class SendAcceptance(_Wire):
    TYPE: ClassVar[str] = "vivim.peering.send_acceptance.v1"
    acceptance: ConnectionAcceptance

    def __post_init__(self) -> None:
        _check_instance("acceptance", self.acceptance, ConnectionAcceptance)


@dataclass(frozen=True, kw_only=True)
class Received(_Wire):
    """The request `request_id` is held; `acceptance` if it was accepted already."""

    TYPE: ClassVar[str] = "vivim.peering.received.v1"
    request_id: str
    acceptance: ConnectionAcceptance | None

    def __post_init__(self) -> None:
        _check_str("request_id", self.request_id, 128)
        if self.acceptance is not None:
            _check_instance("acceptance", self.acceptance, ConnectionAcceptance)


@dataclass(frozen=True, kw_only=True)
class AcceptanceTaken(_Wire):
    """The acceptance of `request_id` is held: both sides hold the connection."""

    TYPE: ClassVar[str] = "vivim.peering.acceptance_taken.v1"
    request_id: str

    def __post_init__(self) -> None:
        _check_str("request_id", self.request_id, 128)


@dataclass(frozen=True, kw_only=True)
class PeeringError(_Wire):
    """The server's refusal of a request (an `ErrorCode` or a protocols.errors code)."""

    TYPE: ClassVar[str] = "vivim.peering.error.v1"
    code: str
    message: str

    def __post_init__(self) -> None:
        if _ERROR_CODE.fullmatch(_check_str("code", self.code, 64)) is None:
            raise MalformedInput(f"error code {self.code!r:.70} is not like 'rate_limited'")
        _check_str("message", self.message, MAX_ERROR_MESSAGE)


Request = SendRequest | SendAcceptance
Response = Received | AcceptanceTaken | PeeringError
Message = Request | Response
_CLASSES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (SendRequest, SendAcceptance, Received, AcceptanceTaken, PeeringError)
}
_RECORD_FIELDS: Final = {
    "request": ConnectionRequest.from_wire,
    "acceptance": ConnectionAcceptance.from_wire,
}


def decode_message(data: bytes) -> Message:
    """The message whose wire bytes are `data`, by its `type`; `MalformedInput`."""
    value = canonical_decode(data)
    type_name = value.get("type") if isinstance(value, dict) else None
    cls = _CLASSES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MalformedInput(f"not a peering message (type {type_name!r:.60})")
    assert isinstance(value, dict)
    expected = {"type"} | {item.name for item in fields(cls)}
    if value.keys() != expected:
        missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
        raise MalformedInput(
            f"{cls.TYPE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
        )
    arguments: dict[str, Any] = {}
    for name, item in value.items():
        if name == "type":
            continue
        decode = _RECORD_FIELDS.get(name)
        arguments[name] = decode(item) if decode is not None and isinstance(item, bytes) else item
    return cls(**arguments)


# --- the sessions -------------------------------------------------------------------------------


class State(StrEnum):
    IDLE = "idle"
    AWAIT_RECEIVED = "await_received"  # a SendRequest is outstanding
    AWAIT_TAKEN = "await_taken"  # a SendAcceptance is outstanding
    CLOSED = "closed"  # a side closed between requests, or the server dropped a request


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


END_OF_STREAM: Final = "end_of_stream"
DROP: Final = "drop"  # the server's silent end (a blocked sender)
ABORT: Final = "abort"  # the server's `fail()`
_ANSWERS: Final = {
    SendRequest.TYPE: (State.AWAIT_RECEIVED, Received.TYPE),
    SendAcceptance.TYPE: (State.AWAIT_TAKEN, AcceptanceTaken.TYPE),
}
TRANSITIONS: Final[dict[tuple[State, Role, str], State]] = {
    **{(State.IDLE, Role.CLIENT, req): awaiting for req, (awaiting, _) in _ANSWERS.items()},
    **{(awaiting, Role.SERVER, answer): State.IDLE for awaiting, answer in _ANSWERS.values()},
    **{(awaiting, Role.SERVER, PeeringError.TYPE): State.IDLE for awaiting, _ in _ANSWERS.values()},
    **{(awaiting, Role.SERVER, DROP): State.CLOSED for awaiting, _ in _ANSWERS.values()},
    (State.IDLE, Role.CLIENT, END_OF_STREAM): State.CLOSED,
    (State.IDLE, Role.SERVER, END_OF_STREAM): State.CLOSED,
    # The server's `fail()`, from any state; a client reads an error between requests as it.
    **{(state, Role.SERVER, ABORT): State.CLOSED for state in State if state is not State.CLOSED},
    (State.IDLE, Role.SERVER, PeeringError.TYPE): State.CLOSED,
}


@dataclass(frozen=True, kw_only=True)
class StreamEnded:
    """The peer closed its side between requests."""


class _Session:
    _us: ClassVar[Role]
    _them: ClassVar[Role]

    def __init__(self) -> None:
        self._state = State.IDLE
        self._decoder = FrameDecoder(MAX_FRAME)
        self._error: RemoteProtocolError | None = None
        self._request: Request | None = None

    @property
    def state(self) -> State:
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def finish(self) -> None:
        """Mark the stream ended (between requests); the caller then closes its side."""
        self._state = self._take(END_OF_STREAM)

    def _take(self, event_type: str) -> State:
        new_state = TRANSITIONS.get((self._state, self._us, event_type))
        if new_state is None:
            raise LocalProtocolError(f"the {self._us} may not send {event_type} in {self._state}")
        if self._error is not None and event_type != ABORT:
            raise LocalProtocolError(f"the {self._them} misbehaved ({self._error}): stop")
        return new_state

    def _send(self, build: Callable[[], Message]) -> bytes:
        try:
            message = build()
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot send this: {err}") from err
        new_state = self._take(message.TYPE)
        problem = _mismatch(self._request, message)
        if problem is not None:
            raise LocalProtocolError(f"cannot send {problem}")
        frame = encode_frame(message.to_wire(), MAX_FRAME)
        self._state = new_state
        self._request = message if isinstance(message, SendRequest | SendAcceptance) else None
        return frame

    def _next_event(self) -> Message | StreamEnded | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._read_event()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _read_event(self) -> Message | StreamEnded | NeedData:
        if self._state is State.CLOSED:
            if self._decoder.buffered:
                raise UnexpectedMessage(f"the {self._them} sent bytes after the stream ended")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if not self._decoder.closed:
                return NEED_DATA
            new_state = TRANSITIONS.get((self._state, self._them, END_OF_STREAM))
            if new_state is None:
                raise ClosedEarly(
                    f"the {self._them} closed the stream without an answer in {self._state}"
                )
            self._state = new_state
            return StreamEnded()
        message = decode_message(frame)
        new_state = TRANSITIONS.get((self._state, self._them, message.TYPE))
        if new_state is None:
            raise UnexpectedMessage(f"the {self._them} sent {message.TYPE} in {self._state}")
        problem = _mismatch(self._request, message)
        if problem is not None:
            raise MismatchedAnswer(f"the {self._them} sent {problem}")
        self._state = new_state
        self._request = message if isinstance(message, SendRequest | SendAcceptance) else None
        return message


def _mismatch(request: Request | None, message: Message) -> str | None:
    if isinstance(message, Received) and isinstance(request, SendRequest):
        if message.request_id != request.request.id:
            return "a Received naming another request"
        acceptance = message.acceptance
        if acceptance is not None and acceptance.request_id != request.request.id:
            return "an acceptance of another request"
    if (
        isinstance(message, AcceptanceTaken)
        and isinstance(request, SendAcceptance)
        and message.request_id != request.acceptance.request_id
    ):
        return "an AcceptanceTaken naming another request"
    return None


class PeeringClient(_Session):
    """The sending side: one request, its answer (or a PeeringError), the next, `finish()`."""

    _us = Role.CLIENT
    _them = Role.SERVER

    def next_event(self) -> Response | StreamEnded | NeedData:
        """The answer, `StreamEnded` or NEED_DATA; raises `RemoteProtocolError` (`ClosedEarly`
        where an answer was due: the server dropped the request)."""
        event = self._next_event()
        assert not isinstance(event, SendRequest | SendAcceptance)
        return event

    def send_request(self, request: ConnectionRequest) -> bytes:
        return self._send(lambda: SendRequest(request=request))

    def send_acceptance(self, acceptance: ConnectionAcceptance) -> bytes:
        return self._send(lambda: SendAcceptance(acceptance=acceptance))


class PeeringServer(_Session):
    """The receiving side: each event is a request (or `StreamEnded`); answer it, refuse it, or
    `drop()` it."""

    _us = Role.SERVER
    _them = Role.CLIENT

    def next_event(self) -> Request | StreamEnded | NeedData:
        event = self._next_event()
        assert not isinstance(event, Received | AcceptanceTaken | PeeringError)
        return event

    def received(self, acceptance: ConnectionAcceptance | None = None) -> bytes:
        request = self._request
        if not isinstance(request, SendRequest):
            raise LocalProtocolError(f"the server may not send {Received.TYPE} in {self._state}")
        return self._send(lambda: Received(request_id=request.request.id, acceptance=acceptance))

    def acceptance_taken(self) -> bytes:
        request = self._request
        if not isinstance(request, SendAcceptance):
            raise LocalProtocolError(
                f"the server may not send {AcceptanceTaken.TYPE} in {self._state}"
            )
        return self._send(lambda: AcceptanceTaken(request_id=request.acceptance.request_id))

    def refuse(self, code: str, message: str) -> bytes:
        """A PeeringError answering the outstanding request; the stream goes on."""
        if self._request is None:
            raise LocalProtocolError(f"no request to refuse in {self._state}: fail() stops")
        return self._send(lambda: PeeringError(code=code, message=message[:MAX_ERROR_MESSAGE]))

    def fail(self, code: str, message: str) -> bytes:
        """A PeeringError that stops the stream (the client misbehaved); nothing after it."""
        new_state = self._take(ABORT)
        try:
            error = PeeringError(code=code, message=message[:MAX_ERROR_MESSAGE])
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot send this error: {err}") from err
        self._state = new_state
        self._request = None
        return encode_frame(error.to_wire(), MAX_FRAME)

    def drop(self) -> None:
        """Answer nothing (a blocked sender); the caller then closes the stream."""
        self._state = self._take(DROP)
        self._request = None
