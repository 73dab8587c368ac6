"""`/vivim/mailbox/1.0.0`: a client asks a relay to hold, list, hand over and delete sealed mail.

One stream carries any number of requests, one at a time, each answered before the next, one
frame per message:

    client -> relay   Introduce(certificate, chain, rotations) -> Introduced(did)
                      Register(registration)          -> Registered
                      Unregister(recipient_did)       -> Unregistered
                      Deposit(envelopes)              -> Stored(ids, refused)
                      List(recipient_did, after, limit) -> Listed(ids, next_cursor)
                      Fetch(ids)                      -> Fetched(envelopes)
                      Ack(ids)                        -> Acked(count)
    relay -> client   MailboxError(code, message)     instead of any answer: a refusal
                                                      (`RefusalCode`); the stream goes on

Either side ends the stream between requests by closing its side (`finish()`; the peer sees
`StreamEnded`). A relay that stops a stream for a reason (the client misbehaved, shutdown) says
why with `fail()`: a MailboxError, after which it sends nothing. Sent between requests, the client
reads it as the end (FAILED); sent while a request is outstanding, the client reads it as that
request's refusal and then meets the end of the stream.

The relay decides everything that needs its store (registration, allowed sender, quota, rate,
duplicates, whether the peer is a device of the DID); the sessions check turn-taking, the bounds
of every message, and that each answer fits its request (`MismatchedAnswer` on the client,
`LocalProtocolError` on the relay): a Stored accounts for each envelope deposited, a Listed
holds at most `limit` ids, a Fetched holds only envelopes asked for, in the order asked and
within the frame bound, an Acked counts at most the ids acked.

The sessions are sans-I/O machines (the h11 shape) sharing one table, `TRANSITIONS`, keyed by
(state, sender's role, message type); each request has its own awaiting state, so the table
says which answer fits which request. Not messages, but rows too: `END_OF_STREAM` (a side closed
between requests) and `ABORT` (the relay's `fail()`). An error raised on receiving leaves the
state as it was and is raised again by every later `next_event`; after it the relay sends
nothing but `fail()`, and the client only closes.

The relay may push a `Notice` (mail arrived) to a connected recipient on a stream of its own:
`protocols.mailbox_notice`. The messages and their codec are in `protocols.mailbox_messages`.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from protocols.envelope import MAX_ENVELOPE_BYTES, Envelope
from protocols.errors import (
    ClosedEarly,
    LocalProtocolError,
    MalformedInput,
    MismatchedAnswer,
    RemoteProtocolError,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from protocols.mailbox_messages import (
    MAILBOX_ERROR,
    MAX_ERROR_MESSAGE,
    MAX_FETCHED_BYTES,
    MAX_IDS,
    MAX_REFUSAL_MESSAGE,
    Ack,
    Acked,
    Deposit,
    Fetch,
    Fetched,
    Introduce,
    Introduced,
    List,
    Listed,
    MailboxError,
    Message,
    RefusalCode,
    Register,
    Registered,
    Request,
    Response,
    Stored,
    Unregister,
    Unregistered,
    decode_message,
)
from protocols.mailbox_records import RelayRegistration

# The messages are the events, so their classes are re-exported; their type names, bounds and
# codec details are in `protocols.mailbox_messages`, the push notice in `protocols.mailbox_notice`.
__all__ = [
    "ABORT",
    "END_OF_STREAM",
    "MAILBOX_PROTOCOL_ID",
    "MAX_ERROR_MESSAGE",
    "MAX_FETCHED_BYTES",
    "MAX_FRAME",
    "MAX_IDS",
    "MAX_REFUSAL_MESSAGE",
    "NEED_DATA",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Ack",
    "Acked",
    "ClientEvent",
    "ClosedEarly",
    "Deposit",
    "Fetch",
    "Fetched",
    "Introduce",
    "Introduced",
    "List",
    "Listed",
    "MailboxClient",
    "MailboxError",
    "MailboxServer",
    "Message",
    "MismatchedAnswer",
    "NeedData",
    "RefusalCode",
    "Register",
    "Registered",
    "Request",
    "Response",
    "Role",
    "ServerEvent",
    "State",
    "Stored",
    "StreamEnded",
    "UnexpectedMessage",
    "Unregister",
    "Unregistered",
    "decode_message",
    "take_fitting",
]

MAILBOX_PROTOCOL_ID = "/vivim/mailbox/1.0.0"
# The largest envelope with room to spare for the message around it (the mailbox issue: frames
# of at most MAX_ENVELOPE_BYTES + 64 KiB); a test builds the largest Deposit and Fetched.
MAX_FRAME = MAX_ENVELOPE_BYTES + 64 * 1024


class State(StrEnum):
    """Where a mailbox stream is; both sessions go through the same states."""

    IDLE = "idle"  # no request outstanding: the client may send one, or either side finish
    AWAIT_INTRODUCED = "await_introduced"  # an Introduce is outstanding
    AWAIT_REGISTERED = "await_registered"  # a Register is outstanding
    AWAIT_UNREGISTERED = "await_unregistered"
    AWAIT_STORED = "await_stored"
    AWAIT_LISTED = "await_listed"
    AWAIT_FETCHED = "await_fetched"
    AWAIT_ACKED = "await_acked"
    CLOSED = "closed"  # a side closed the stream between requests: the normal end
    FAILED = "failed"  # the relay stopped the stream with an error


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


TERMINAL_STATES: Final = frozenset({State.CLOSED, State.FAILED})
# Not messages: a side closing its side of the stream, and the relay's `fail()`.
END_OF_STREAM: Final = "end_of_stream"
ABORT: Final = "abort"
# Each request, the state awaiting its answer, and the answer.
_ANSWERS: Final = {
    Introduce.TYPE: (State.AWAIT_INTRODUCED, Introduced.TYPE),
    Register.TYPE: (State.AWAIT_REGISTERED, Registered.TYPE),
    Unregister.TYPE: (State.AWAIT_UNREGISTERED, Unregistered.TYPE),
    Deposit.TYPE: (State.AWAIT_STORED, Stored.TYPE),
    List.TYPE: (State.AWAIT_LISTED, Listed.TYPE),
    Fetch.TYPE: (State.AWAIT_FETCHED, Fetched.TYPE),
    Ack.TYPE: (State.AWAIT_ACKED, Acked.TYPE),
}

# (state, role of the sender, message type) -> new state. A missing row is a message out of turn:
# `UnexpectedMessage` (`ClosedEarly` for an end of stream) if the peer sent it,
# `LocalProtocolError` if we tried to send it.
TRANSITIONS: Final[dict[tuple[State, Role, str], State]] = {
    **{(State.IDLE, Role.CLIENT, request): awaiting for request, (awaiting, _) in _ANSWERS.items()},
    **{(awaiting, Role.SERVER, answer): State.IDLE for awaiting, answer in _ANSWERS.values()},
    # A refusal answers any request; the stream goes on.
    **{(awaiting, Role.SERVER, MAILBOX_ERROR): State.IDLE for awaiting, _ in _ANSWERS.values()},
    # An error with no request outstanding is the relay stopping the stream (its `fail()`, as
    # the client reads it; the relay itself takes the ABORT rows below).
    (State.IDLE, Role.SERVER, MAILBOX_ERROR): State.FAILED,
    (State.IDLE, Role.CLIENT, END_OF_STREAM): State.CLOSED,
    (State.IDLE, Role.SERVER, END_OF_STREAM): State.CLOSED,
    # The relay's `fail()` ends any stream not yet ended (the peer reads the row above it).
    **{
        (state, Role.SERVER, ABORT): State.FAILED for state in State if state not in TERMINAL_STATES
    },
}


@dataclass(frozen=True, kw_only=True)
class StreamEnded:
    """The peer closed its side between requests: the stream ended normally (state CLOSED)."""


ClientEvent = Response | StreamEnded
ServerEvent = Request | StreamEnded


def take_fitting(envelopes: Sequence[Envelope]) -> tuple[Envelope, ...]:
    """The longest prefix of `envelopes` that one Fetched holds (never empty if `envelopes` is
    not): what a relay answers a Fetch with, asking the store for the ids in the order asked."""
    taken: list[Envelope] = []
    total = 0
    for envelope in envelopes[:MAX_IDS]:
        total += len(envelope.to_wire())
        if total > MAX_FETCHED_BYTES:
            break
        taken.append(envelope)
    return tuple(taken)


def _mismatch(request: Request, response: Response) -> str | None:
    """What makes `response` not an answer to `request`, or None (the table checked the type)."""
    if isinstance(response, Stored) and isinstance(request, Deposit):
        answered = {*response.ids, *(entry[0] for entry in response.refused)}
        wrong = answered != {envelope.id for envelope in request.envelopes}
        return "a Stored that does not account for each envelope deposited" if wrong else None
    if isinstance(response, Listed) and isinstance(request, List):
        over = len(response.ids) > request.limit
        return f"{len(response.ids)} ids listed for a limit of {request.limit}" if over else None
    if isinstance(response, Fetched) and isinstance(request, Fetch):
        position = {envelope_id: index for index, envelope_id in enumerate(request.ids)}
        order = [position.get(envelope.id, -1) for envelope in response.envelopes]
        if -1 in order:
            return "an envelope fetched that was not asked for"
        return "envelopes fetched out of the order asked" if order != sorted(order) else None
    if isinstance(response, Acked) and isinstance(request, Ack):
        over = response.count > len(request.ids)
        return f"{response.count} acked of {len(request.ids)} ids" if over else None
    return None


# --- the sessions ---------------------------------------------------------------------------------


class _Session:
    """What both sides share: framing, the table, the outstanding request and the sticky error."""

    _us: ClassVar[Role]
    _them: ClassVar[Role]

    def __init__(self) -> None:
        self._state = State.IDLE
        self._decoder = FrameDecoder(MAX_FRAME)
        self._error: RemoteProtocolError | None = None
        self._request: Request | None = None  # the request outstanding, in the AWAIT states

    @property
    def state(self) -> State:
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def finish(self) -> None:
        """Mark the stream ended (between requests); the caller then closes its side."""
        self._take(END_OF_STREAM)
        self._state = State.CLOSED

    def _take(self, event_type: str) -> State:
        """The state our sending `event_type` leads to; `LocalProtocolError` if we may not."""
        new_state = TRANSITIONS.get((self._state, self._us, event_type))
        if new_state is None:
            raise LocalProtocolError(f"the {self._us} may not send {event_type} in {self._state}")
        if self._error is not None and event_type != ABORT:
            raise LocalProtocolError(f"the {self._them} misbehaved ({self._error}): stop")
        return new_state

    def _send(self, message: Message) -> bytes:
        new_state = self._take(message.TYPE)
        if self._request is not None and isinstance(message, Response):
            problem = _mismatch(self._request, message)
            if problem is not None:
                raise LocalProtocolError(f"cannot send {problem}")
        frame = encode_frame(message.to_wire(), MAX_FRAME)
        self._state = new_state
        self._request = message if isinstance(message, Request) else None
        return frame

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
        if self._request is not None and isinstance(message, Response):
            problem = _mismatch(self._request, message)
            if problem is not None:
                raise MismatchedAnswer(f"the relay sent {problem}")
        self._state = new_state
        self._request = message if isinstance(message, Request) else None
        return message


class MailboxClient(_Session):
    """The asking side: send a request, read its answer (or a refusal), send the next; `finish()`
    between requests. Refuses an answer that does not fit its request with `MismatchedAnswer`."""

    _us = Role.CLIENT
    _them = Role.SERVER

    def next_event(self) -> ClientEvent | NeedData:
        """The answer (a Response), `StreamEnded` or NEED_DATA; raises `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, Request)  # the table: not the client's to receive
        return event

    def introduce(
        self, certificate: bytes, chain: Sequence[bytes], rotations: Sequence[bytes]
    ) -> bytes:
        """The frame of an Introduce (when idle); answered `Introduced` or a refusal."""
        return self._request_frame(
            lambda: Introduce(
                certificate=certificate, chain=tuple(chain), rotations=tuple(rotations)
            )
        )

    def register(self, registration: RelayRegistration) -> bytes:
        """The frame of a Register (when idle); answered `Registered` or a refusal."""
        return self._request_frame(lambda: Register(registration=registration))

    def unregister(self, recipient_did: str) -> bytes:
        """The frame of an Unregister (when idle); answered `Unregistered` or a refusal."""
        return self._request_frame(lambda: Unregister(recipient_did=recipient_did))

    def deposit(self, envelopes: Sequence[Envelope]) -> bytes:
        """The frame of a Deposit of `envelopes` (when idle); answered `Stored` or a refusal."""
        return self._request_frame(lambda: Deposit(envelopes=tuple(envelopes)))

    def list_envelopes(self, recipient_did: str, after: str | None, limit: int) -> bytes:
        """The frame of a List (when idle); answered `Listed` or a refusal."""
        return self._request_frame(
            lambda: List(recipient_did=recipient_did, after=after, limit=limit)
        )

    def fetch(self, ids: Sequence[str]) -> bytes:
        """The frame of a Fetch (when idle); answered `Fetched` or a refusal."""
        return self._request_frame(lambda: Fetch(ids=tuple(ids)))

    def ack(self, ids: Sequence[str]) -> bytes:
        """The frame of an Ack (when idle); answered `Acked` or a refusal."""
        return self._request_frame(lambda: Ack(ids=tuple(ids)))

    def _request_frame(self, build: Callable[[], Request]) -> bytes:
        """The frame of the request `build` makes; `LocalProtocolError` if it cannot be made or
        may not be sent now."""
        try:
            request = build()
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this request: {err}") from err
        return self._send(request)


class MailboxServer(_Session):
    """The relay's side: on each request (the event is the request message itself) answer with
    the matching method or `refuse()`; `StreamEnded` is the client's normal end. `fail()` stops
    the stream with a reason, at any time before its end."""

    _us = Role.SERVER
    _them = Role.CLIENT

    def next_event(self) -> ServerEvent | NeedData:
        """A request, `StreamEnded` or NEED_DATA; raises `RemoteProtocolError`."""
        event = self._next_event()
        assert not isinstance(event, Response)  # the table: not the relay's to receive
        return event

    def introduced(self, did: str) -> bytes:
        """The frame answering an Introduce: the relay knows the peer as a device of `did`."""
        return self._answer(lambda: Introduced(did=did))

    def registered(self) -> bytes:
        """The frame answering a Register."""
        return self._answer(Registered)

    def unregistered(self) -> bytes:
        """The frame answering an Unregister."""
        return self._answer(Unregistered)

    def stored(self, refused: Mapping[str, tuple[str, str]] | None = None) -> bytes:
        """The frame answering a Deposit: each envelope is stored (durably) but those in
        `refused` (id -> (code, message); messages cut to MAX_REFUSAL_MESSAGE characters)."""
        request = self._request
        if not isinstance(request, Deposit):
            raise LocalProtocolError(f"the server may not send {Stored.TYPE} in {self._state}")
        outcomes = dict(refused or {})
        if not outcomes.keys() <= {e.id for e in request.envelopes}:
            raise LocalProtocolError("cannot answer with this: a refused envelope not deposited")
        if not all(
            isinstance(o, tuple) and len(o) == 2 and isinstance(o[1], str)
            for o in outcomes.values()
        ):
            raise LocalProtocolError("cannot answer with this: a refusal is a (code, message) pair")
        return self._answer(
            lambda: Stored(
                ids=tuple(e.id for e in request.envelopes if e.id not in outcomes),
                refused=tuple(
                    (e.id, outcomes[e.id][0], outcomes[e.id][1][:MAX_REFUSAL_MESSAGE])
                    for e in request.envelopes
                    if e.id in outcomes
                ),
            )
        )

    def listed(self, ids: Sequence[str], next_cursor: str | None) -> bytes:
        """The frame answering a List: at most its `limit` ids, and the cursor of the next page
        (None if this one ends the list)."""
        return self._answer(lambda: Listed(ids=tuple(ids), next_cursor=next_cursor))

    def fetched(self, envelopes: Sequence[Envelope]) -> bytes:
        """The frame answering a Fetch: envelopes asked for, in the order asked, within
        MAX_FETCHED_BYTES (`take_fitting` picks them); `LocalProtocolError` otherwise."""
        return self._answer(lambda: Fetched(envelopes=tuple(envelopes)))

    def acked(self, count: int) -> bytes:
        """The frame answering an Ack: how many of its envelopes were deleted."""
        return self._answer(lambda: Acked(count=count))

    def refuse(self, code: str, message: str) -> bytes:
        """The frame of a MailboxError answering the outstanding request (a `RefusalCode`); the
        stream goes on. `message` is cut to MAX_ERROR_MESSAGE characters."""
        if self._request is None:
            raise LocalProtocolError(f"no request to refuse in {self._state}: fail() stops")
        return self._answer(lambda: _error(code, message))

    def fail(self, code: str, message: str) -> bytes:
        """The frame of a MailboxError that stops the stream (state FAILED); the only thing
        to send after the client misbehaved. The caller then closes the stream."""
        new_state = self._take(ABORT)
        try:
            frame = encode_frame(_error(code, message).to_wire(), MAX_FRAME)
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot send this error: {err}") from err
        self._state = new_state
        self._request = None
        return frame

    def _answer(self, build: Callable[[], Response]) -> bytes:
        try:
            response = build()
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot answer with this: {err}") from err
        return self._send(response)


def _error(code: str, message: str) -> MailboxError:
    if isinstance(message, str):
        message = message[:MAX_ERROR_MESSAGE]
    return MailboxError(code=code, message=message)
