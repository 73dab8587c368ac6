"""`/vivim/pair/1.0.0`: a new device joins an identity, using a one-time code from a trusted device.

The trusted device (the approver) shows a `PairingCode`: the identity's DID, its own peer id and
addresses, a code id and a 256-bit secret. The new device (the joiner) dials the approver over
libp2p (Noise authenticates both peer ids) and the two exchange one frame per message:

    joiner -> approver   Hello      code_id, joiner_nonce, box_public_key
    approver -> joiner   Challenge  approver_nonce, mac(approver)   the approver proves the secret
    joiner -> approver   Proof      mac(joiner)                     the joiner proves the secret
    approver -> joiner   Welcome    the identity's records, a certificate for the joiner and the
                                    identity's encryption key sealed to box_public_key

Each MAC is HMAC-SHA256, keyed with the secret, over the canonical CBOR of the transcript (both
peer ids, both nonces, the code id, the box key) and the role of its sender. So the secret never
travels, and a MAC cannot be replayed in another session (fresh nonces), reflected to its sender
(the role) or relayed through a third peer (the peer ids are those Noise authenticated); and the
box key the secrets are sealed to is the one the secret's holder chose. The approver proves
first, so the joiner reveals nothing, not even a proof, to an impostor.

Either side may send a `Refusal` at any time before the end, to say why it gives up (a code
unknown, expired or used; a MAC that did not verify).

The two sessions are sans-I/O machines (the h11 shape) sharing one table, `TRANSITIONS`, keyed by
(state, sender's role, message type): both sides go through the same states, each applying the
rows for its own sends and for its peer's messages. A session checks what it can (turn-taking,
MACs, the Welcome's DID); the records inside a Welcome are opaque here, verified by the caller.
An error raised on receiving leaves the state as it was, and every later `next_event` raises it
again; the caller may still `send` a `Refusal` saying why it stops.

The pairing code and the wire messages are in `protocols.pairing_code` and
`protocols.pairing_messages`, to keep modules short; every name importable from here before the
split still is (the constants are re-exported with `X as X`, since they are not in `__all__`).
"""

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from protocols.canonical import canonical_encode
from protocols.errors import (
    ClosedEarly,
    InvalidPairingCode,
    InvalidPeerId,
    LocalProtocolError,
    MalformedInput,
    PairingApproverNotProven,
    PairingProofWrong,
    PairingWelcomeMismatch,
    RemoteProtocolError,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from protocols.pairing_code import CHECKSUM_LENGTH as CHECKSUM_LENGTH
from protocols.pairing_code import CODE_ID_LENGTH as CODE_ID_LENGTH
from protocols.pairing_code import CODE_PREFIX as CODE_PREFIX
from protocols.pairing_code import CODE_TYPE as CODE_TYPE
from protocols.pairing_code import MAX_ADDR_LENGTH as MAX_ADDR_LENGTH
from protocols.pairing_code import MAX_ADDRS as MAX_ADDRS
from protocols.pairing_code import MAX_CODE_TEXT_LENGTH as MAX_CODE_TEXT_LENGTH
from protocols.pairing_code import MAX_ID_LENGTH as MAX_ID_LENGTH
from protocols.pairing_code import MAX_UINT as MAX_UINT
from protocols.pairing_code import SECRET_LENGTH as SECRET_LENGTH
from protocols.pairing_code import PairingCode
from protocols.pairing_messages import CHALLENGE as CHALLENGE
from protocols.pairing_messages import HELLO as HELLO
from protocols.pairing_messages import KEY_LENGTH as KEY_LENGTH
from protocols.pairing_messages import MAC_LENGTH as MAC_LENGTH
from protocols.pairing_messages import MAX_CHAIN as MAX_CHAIN
from protocols.pairing_messages import MAX_IDENTITY_ROTATIONS as MAX_IDENTITY_ROTATIONS
from protocols.pairing_messages import MAX_REFUSAL_MESSAGE as MAX_REFUSAL_MESSAGE
from protocols.pairing_messages import NONCE_LENGTH as NONCE_LENGTH
from protocols.pairing_messages import PROOF as PROOF
from protocols.pairing_messages import REFUSAL as REFUSAL
from protocols.pairing_messages import WELCOME as WELCOME
from protocols.pairing_messages import (
    Challenge,
    Hello,
    Message,
    Proof,
    Refusal,
    Welcome,
    decode_message,
)
from protocols.peer_id import ed25519_public_key_from_peer_id

__all__ = [
    "MAX_FRAME",
    "NEED_DATA",
    "PROTOCOL_ID",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "ApproverProven",
    "ApproverSession",
    "Challenge",
    "ClosedEarly",
    "Event",
    "Hello",
    "HelloReceived",
    "InvalidPairingCode",
    "JoinerProven",
    "JoinerSession",
    "Message",
    "NeedData",
    "PairingApproverNotProven",
    "PairingCode",
    "PairingProofWrong",
    "PairingWelcomeMismatch",
    "Proof",
    "Refusal",
    "Refused",
    "Role",
    "State",
    "UnexpectedMessage",
    "Welcome",
    "decode_message",
]

PROTOCOL_ID = "/vivim/pair/1.0.0"


class State(StrEnum):
    """Where a pairing is; both sessions go through the same states."""

    AWAIT_HELLO = "await_hello"  # the joiner is to send Hello
    AWAIT_CHALLENGE = "await_challenge"  # the approver is to answer the Hello
    AWAIT_PROOF = "await_proof"  # the approver is proven; the joiner is to send Proof
    AWAIT_WELCOME = "await_welcome"  # the joiner is proven; the approver is to send Welcome
    DONE = "done"
    REFUSED = "refused"


class Role(StrEnum):
    JOINER = "joiner"
    APPROVER = "approver"


TERMINAL_STATES: Final = frozenset({State.DONE, State.REFUSED})

# (state, role of the message's sender, message type) -> new state. A missing row is a message out
# of turn: `UnexpectedMessage` if the peer sent it, `LocalProtocolError` if we tried to send it.
TRANSITIONS: Final[dict[tuple[State, Role, str], State]] = {
    (State.AWAIT_HELLO, Role.JOINER, HELLO): State.AWAIT_CHALLENGE,
    (State.AWAIT_CHALLENGE, Role.APPROVER, CHALLENGE): State.AWAIT_PROOF,
    (State.AWAIT_PROOF, Role.JOINER, PROOF): State.AWAIT_WELCOME,
    (State.AWAIT_WELCOME, Role.APPROVER, WELCOME): State.DONE,
    # A Refusal ends any pairing not yet ended, whoever sends it, in turn or not.
    **{
        (state, role, REFUSAL): State.REFUSED
        for state in State
        if state not in TERMINAL_STATES
        for role in Role
    },
}

# A Welcome carries a few records of a few hundred bytes each; 64 KiB leaves room for a long
# history of key rotations while bounding what one stream can make us buffer.
MAX_FRAME = 64 * 1024
MAC_TYPE = "vivim.pair.mac.v1"


# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HelloReceived:
    """(Approver) A joiner asks to pair with `hello.code_id`: look it up, challenge or refuse."""

    hello: Hello


@dataclass(frozen=True, kw_only=True)
class ApproverProven:
    """(Joiner) The approver's MAC verified: send `session.proof()`."""


@dataclass(frozen=True, kw_only=True)
class JoinerProven:
    """(Approver) The joiner's MAC verified: mark the code used, then send a Welcome."""


@dataclass(frozen=True, kw_only=True)
class Refused:
    """The peer sent a Refusal; the pairing is over (state REFUSED)."""

    code: str
    message: str


# A received Welcome is itself the joiner's last event.
Event = HelloReceived | ApproverProven | JoinerProven | Welcome | Refused


# --- the sessions ---------------------------------------------------------------------------------


class _Session:
    """What both sides share: framing, the table, the MACs, and the error that stops receiving."""

    _us: ClassVar[Role]
    _them: ClassVar[Role]

    def __init__(self, *, approver: str, joiner: str) -> None:
        if joiner == approver:
            raise LocalProtocolError("a device cannot pair with itself")
        self._approver = approver
        self._joiner = joiner
        self._state = State.AWAIT_HELLO
        self._decoder = FrameDecoder(MAX_FRAME)
        self._error: RemoteProtocolError | None = None

    @property
    def state(self) -> State:
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def next_event(self) -> Event | NeedData:
        """The next event or NEED_DATA; a `RemoteProtocolError` raised once is raised again."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def send(self, message: Refusal | Welcome) -> bytes:
        """The framed bytes of `message`; `LocalProtocolError` if it is not ours to send now.

        Hello, Challenge and Proof hold what only the session knows: `start()`, `challenge()`
        and `proof()` build and send them.
        """
        if not isinstance(message, Refusal | Welcome):
            raise LocalProtocolError(f"send a {type(message).__name__} with its session method")
        return self._send(message)

    def _send(self, message: Message) -> bytes:
        new_state = TRANSITIONS.get((self._state, self._us, message.TYPE))
        if new_state is None:
            raise LocalProtocolError(f"the {self._us} may not send {message.TYPE} in {self._state}")
        frame = encode_frame(message.to_wire(), MAX_FRAME)
        self._state = new_state
        return frame

    def _next_event(self) -> Event | NeedData:
        if self._state in TERMINAL_STATES:
            if self._decoder.buffered:
                raise UnexpectedMessage(f"the {self._them} sent bytes after the pairing ended")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if self._decoder.closed:
                raise ClosedEarly(f"the {self._them} closed the stream in {self._state}")
            return NEED_DATA
        message = decode_message(frame)
        new_state = TRANSITIONS.get((self._state, self._them, message.TYPE))
        if new_state is None:
            raise UnexpectedMessage(f"the {self._them} sent {message.TYPE} in {self._state}")
        event = self._received(message)
        self._state = new_state
        return event

    def _received(self, message: Message) -> Event:
        """The event for a message the table allows; raises before changing anything."""
        if not isinstance(message, Refusal):
            raise LocalProtocolError(f"no handler for {message.TYPE}")  # the table forbids it
        return Refused(code=message.code, message=message.message)

    def _mac(self, secret: bytes, sender: Role, hello: Hello, approver_nonce: bytes) -> bytes:
        transcript = {
            "type": MAC_TYPE,
            "role": sender.value,
            "code_id": hello.code_id,
            "approver": self._approver,
            "joiner": self._joiner,
            "joiner_nonce": hello.joiner_nonce,
            "approver_nonce": approver_nonce,
            "box_public_key": hello.box_public_key,
        }
        return hmac.new(secret, canonical_encode(transcript), hashlib.sha256).digest()


class JoinerSession(_Session):
    """The new device's side: `start()` gives the Hello's bytes; then come the events
    `ApproverProven` (answer with `proof()`), then the `Welcome` itself, or `Refused`.

    `joiner_nonce` (fresh random bytes) and `box_public_key` (of a fresh X25519 key pair whose
    private half opens the Welcome's sealed key) are 32 bytes each.
    """

    _us = Role.JOINER
    _them = Role.APPROVER

    def __init__(
        self, code: PairingCode, joiner_peer_id: str, joiner_nonce: bytes, box_public_key: bytes
    ) -> None:
        if not isinstance(code, PairingCode):
            raise LocalProtocolError(f"code is a {type(code).__name__}, expected a PairingCode")
        _check_local_peer_id("joiner_peer_id", joiner_peer_id)
        _check_local_32_bytes(joiner_nonce=joiner_nonce, box_public_key=box_public_key)
        super().__init__(approver=code.approver, joiner=joiner_peer_id)
        self._code = code
        try:
            self._hello = Hello(
                code_id=code.code_id, joiner_nonce=joiner_nonce, box_public_key=box_public_key
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot say hello: {err}") from err
        self._approver_nonce: bytes | None = None

    def start(self) -> bytes:
        """The Hello frame, the first thing the joiner sends."""
        return self._send(self._hello)

    def proof(self) -> bytes:
        """The Proof frame, once the approver is proven (`ApproverProven`)."""
        if self._approver_nonce is None:
            raise LocalProtocolError("the approver is not proven yet: wait for ApproverProven")
        mac = self._mac(self._code.secret, Role.JOINER, self._hello, self._approver_nonce)
        return self._send(Proof(mac=mac))

    def _received(self, message: Message) -> Event:
        if isinstance(message, Challenge):
            nonce = message.approver_nonce
            expected = self._mac(self._code.secret, Role.APPROVER, self._hello, nonce)
            if not hmac.compare_digest(message.mac, expected):
                raise PairingApproverNotProven("the device there does not know the pairing code")
            self._approver_nonce = nonce
            return ApproverProven()
        if isinstance(message, Welcome):
            if message.did != self._code.did:
                raise PairingWelcomeMismatch("welcomed into another identity than the code's")
            return message
        return super()._received(message)


class ApproverSession(_Session):
    """The trusted device's side: on `HelloReceived` answer with `challenge()` or a Refusal; on
    `JoinerProven` send a `Welcome` (or a Refusal).

    `joiner_peer_id` is the remote peer Noise authenticated. It is input from outside, so one that
    is not an Ed25519 peer id raises `InvalidPeerId` (a `RemoteProtocolError`).
    """

    _us = Role.APPROVER
    _them = Role.JOINER

    def __init__(self, approver_peer_id: str, joiner_peer_id: str) -> None:
        _check_local_peer_id("approver_peer_id", approver_peer_id)
        ed25519_public_key_from_peer_id(joiner_peer_id)
        super().__init__(approver=approver_peer_id, joiner=joiner_peer_id)
        self._hello: Hello | None = None
        self._secret = b""
        self._approver_nonce = b""

    def challenge(self, *, secret: bytes, approver_nonce: bytes) -> bytes:
        """The Challenge frame for the code whose secret is `secret` (after `HelloReceived`)."""
        if self._hello is None:
            raise LocalProtocolError("no Hello received yet")
        _check_local_32_bytes(secret=secret, approver_nonce=approver_nonce)
        mac = self._mac(secret, Role.APPROVER, self._hello, approver_nonce)
        frame = self._send(Challenge(approver_nonce=approver_nonce, mac=mac))
        self._secret, self._approver_nonce = secret, approver_nonce
        return frame

    def _received(self, message: Message) -> Event:
        if isinstance(message, Hello):
            self._hello = message
            return HelloReceived(hello=message)
        if isinstance(message, Proof):
            # The table admits a Proof only after `challenge()`, which set all three.
            assert self._hello is not None
            expected = self._mac(self._secret, Role.JOINER, self._hello, self._approver_nonce)
            if not hmac.compare_digest(message.mac, expected):
                raise PairingProofWrong("the joining device does not know the pairing code")
            return JoinerProven()
        return super()._received(message)


def _check_local_peer_id(name: str, peer_id: object) -> None:
    """A peer id our side passed: one that does not parse is our bug."""
    if not isinstance(peer_id, str):
        raise LocalProtocolError(f"{name} is a {type(peer_id).__name__}, expected str")
    try:
        ed25519_public_key_from_peer_id(peer_id)
    except InvalidPeerId as err:
        raise LocalProtocolError(f"{name} is not an Ed25519 peer id: {err}") from err


def _check_local_32_bytes(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, bytes) or len(value) != 32:
            raise LocalProtocolError(f"{name} must be 32 bytes")
