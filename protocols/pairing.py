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
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeVar, cast

import nacl.bindings
import nacl.exceptions

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import ed25519_public_key_from_did
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
from protocols.peer_id import ed25519_public_key_from_peer_id

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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
HELLO = "vivim.pair.hello.v1"
CHALLENGE = "vivim.pair.challenge.v1"
PROOF = "vivim.pair.proof.v1"
WELCOME = "vivim.pair.welcome.v1"
REFUSAL = "vivim.pair.refusal.v1"


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
CODE_TYPE = "vivim.pair.code.v1"
MAC_TYPE = "vivim.pair.mac.v1"
CODE_PREFIX = "vivim-pair:"
CODE_ID_LENGTH = 8
SECRET_LENGTH = 32  # 256 bits: no guessing, online or offline, so no attempt counting is needed
NONCE_LENGTH = 32
KEY_LENGTH = 32  # an X25519 public key
MAC_LENGTH = 32  # HMAC-SHA256
CHECKSUM_LENGTH = 4
MAX_ADDRS = 8
MAX_ADDR_LENGTH = 256
# The text of a code with 8 addresses of 256 characters is about 3,750 characters.
MAX_CODE_TEXT_LENGTH = 4096
# DIDs and peer ids are some 50 characters; their parsers refuse more than 128.
MAX_ID_LENGTH = 128
MAX_UINT = 2**63 - 1  # the store keeps times in SQLite INTEGER columns, signed 64-bit
MAX_CHAIN = 16
MAX_IDENTITY_ROTATIONS = 256
MAX_REFUSAL_MESSAGE = 1000
_REFUSAL_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_BASE32 = re.compile(r"[a-z2-7]*")

_D = TypeVar("_D", bound="DataclassInstance")


# --- codecs ---------------------------------------------------------------------------------------


def _wire_map(type_name: str, value: "DataclassInstance") -> dict[str, object]:
    """`{"type": type_name, field: value, ...}`, tuples as CBOR arrays."""
    fields: dict[str, object] = {"type": type_name}
    for item in dataclasses.fields(value):
        field_value = getattr(value, item.name)
        fields[item.name] = list(field_value) if isinstance(field_value, tuple) else field_value
    return fields


def _from_map(cls: type[_D], value: object, type_name: str) -> _D:
    """Build `cls` from its wire map: exactly `type` and the class's fields; it checks the rest."""
    if not isinstance(value, dict):
        raise MalformedInput(f"a {type_name} is a map, not a {type(value).__name__}")
    if value.get("type") != type_name:
        raise MalformedInput(f"type is {value.get('type')!r:.60}, expected {type_name!r}")
    expected = {"type"} | {item.name for item in dataclasses.fields(cls)}
    if value.keys() != expected:
        missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
        raise MalformedInput(
            f"{type_name} fields wrong: missing {missing}, unexpected {extra!s:.200}"
        )
    arguments: dict[str, Any] = {
        name: tuple(item) if isinstance(item, list) else item
        for name, item in value.items()
        if name != "type"
    }
    constructor: Callable[..., _D] = cls
    return constructor(**arguments)


class _Wire:
    """`to_wire`/`from_wire` for the messages: canonical CBOR of their wire map."""

    TYPE: ClassVar[str]

    def to_wire(self) -> bytes:
        return canonical_encode(_wire_map(self.TYPE, cast("DataclassInstance", self)))

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode this message type's wire bytes; `MalformedInput` for anything else."""
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MalformedInput(f"message is a {message.TYPE}, expected a {cls.TYPE}")
        return message


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected bytes")
    if len(value) != length:
        raise MalformedInput(f"{name} is {len(value)} bytes, expected {length}")


def _check_blobs(name: str, value: object, most: int) -> None:
    """A tuple of at most `most` non-empty byte strings (records opaque to this module)."""
    if not isinstance(value, tuple):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a list")
    if len(value) > most:
        raise MalformedInput(f"{name} has {len(value)} entries, more than {most}")
    for item in value:
        _check_blob(name, item)


def _check_blob(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise MalformedInput(f"{name} holds a {type(value).__name__}, expected bytes")
    if not value:
        raise MalformedInput(f"{name} holds an empty byte string")


def _check_sealable(public_key: bytes) -> None:
    """Refuse an X25519 key of low order, which libsodium refuses to seal to.

    Refused here, at the door, so that the approver's seal never fails inside libsodium with an
    error of its own. X25519 clamps every scalar to a multiple of the cofactor, so the product of
    any scalar with a key is zero exactly when the key is of low order: one multiplication tells.
    """
    try:
        nacl.bindings.crypto_scalarmult(b"\x01" * 32, public_key)
    except nacl.exceptions.CryptoError as err:
        raise MalformedInput(
            "box_public_key is a low-order point: nothing can be sealed to it"
        ) from err


def _check_str(name: str, value: object, most: int) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    if len(value) > most:
        raise MalformedInput(f"{name} is {len(value)} characters, more than {most}")
    return value


# --- the pairing code -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PairingCode:
    """What the approver shows and the joiner types in; `to_text` is how a person carries it.

    The text is `vivim-pair:` + lower-case base32 (no padding) of the code's canonical CBOR map
    followed by the first 4 bytes of its SHA-256. The checksum turns a mistyped character into
    "copy it again" here, rather than a MAC that fails on the approver later. `from_text` also
    accepts the text upper-cased (base32 is case-blind; QR codes encode upper case compactly).

    `secret` is left out of the repr, so that logging a code does not log its secret.
    """

    did: str
    approver: str
    addrs: tuple[str, ...]
    code_id: bytes
    secret: bytes = field(repr=False)
    expires_at_ms: int

    def __post_init__(self) -> None:
        try:
            ed25519_public_key_from_did(_check_str("did", self.did, MAX_ID_LENGTH))
            ed25519_public_key_from_peer_id(_check_str("approver", self.approver, MAX_ID_LENGTH))
            _check_addrs(self.addrs)
            _check_bytes("code_id", self.code_id, CODE_ID_LENGTH)
            _check_bytes("secret", self.secret, SECRET_LENGTH)
            expires = self.expires_at_ms
            if not isinstance(expires, int) or isinstance(expires, bool):
                raise MalformedInput(f"expires_at_ms is a {type(expires).__name__}, expected int")
            if not 0 <= expires <= MAX_UINT:
                raise MalformedInput(f"expires_at_ms is {expires}, expected 0 to 2**63 - 1")
        except MalformedInput as err:
            raise InvalidPairingCode(
                f"the pairing code is not valid ({err}): ask the other device for a new code"
            ) from err

    def is_expired(self, now_ms: int) -> bool:
        """Whether the code is expired at `now_ms`: it is valid strictly before `expires_at_ms`."""
        return now_ms >= self.expires_at_ms

    def to_text(self) -> str:
        cbor = canonical_encode(_wire_map(CODE_TYPE, self))
        body = base64.b32encode(cbor + _checksum(cbor)).decode("ascii").rstrip("=").lower()
        return CODE_PREFIX + body

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse a code a person pasted; `InvalidPairingCode`, with what to do, if it is not one."""
        if not isinstance(text, str):
            raise InvalidPairingCode(f"not a vivim pairing code: it is a {type(text).__name__}")
        text = text.strip().lower()
        if not text.startswith(CODE_PREFIX):
            raise InvalidPairingCode("not a vivim pairing code: it must start with vivim-pair:")
        if len(text) > MAX_CODE_TEXT_LENGTH:
            raise InvalidPairingCode(
                f"the pairing code is longer than {MAX_CODE_TEXT_LENGTH} characters: "
                "copy the code alone"
            )
        data = _base32_decode(text[len(CODE_PREFIX) :])
        cbor, checksum = data[:-CHECKSUM_LENGTH], data[-CHECKSUM_LENGTH:]
        if not cbor or checksum != _checksum(cbor):
            raise InvalidPairingCode(
                "the pairing code is damaged (checksum does not match): copy it again"
            )
        try:
            return _from_map(cls, canonical_decode(cbor), CODE_TYPE)
        except InvalidPairingCode:
            raise
        except MalformedInput as err:
            raise InvalidPairingCode(
                f"the pairing code is not valid ({err}); it may come from another version of "
                "vivim: ask the other device for a new code"
            ) from err


def _check_addrs(addrs: object) -> None:
    if not isinstance(addrs, tuple):
        raise MalformedInput(f"addrs is a {type(addrs).__name__}, expected a list")
    if not 1 <= len(addrs) <= MAX_ADDRS:
        raise MalformedInput(f"addrs has {len(addrs)} addresses, expected 1 to {MAX_ADDRS}")
    for addr in addrs:
        _check_str("an address", addr, MAX_ADDR_LENGTH)
        # Multiaddrs are ASCII without spaces; that also keeps the code's text length bounded.
        if not (addr.startswith("/") and addr.isascii() and addr.isprintable() and " " not in addr):
            raise MalformedInput(f"{addr!r:.60} is not a multiaddr")


def _checksum(cbor: bytes) -> bytes:
    return hashlib.sha256(cbor).digest()[:CHECKSUM_LENGTH]


def _base32_decode(body: str) -> bytes:
    """Lower-case unpadded base32, in its one spelling (unused trailing bits zero)."""
    damaged = InvalidPairingCode(
        "the pairing code is damaged (it has characters a code cannot have, or is cut short): "
        "copy it again"
    )
    if _BASE32.fullmatch(body) is None or len(body) % 8 in (1, 3, 6):
        raise damaged
    try:
        data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error as err:
        raise damaged from err
    if base64.b32encode(data).decode("ascii").rstrip("=").lower() != body:
        raise damaged
    return data


# --- wire messages and events ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Hello(_Wire):
    """Joiner -> approver: which code, the joiner's nonce, and the key to seal its secrets to."""

    TYPE: ClassVar[str] = HELLO
    code_id: bytes
    joiner_nonce: bytes
    box_public_key: bytes

    def __post_init__(self) -> None:
        _check_bytes("code_id", self.code_id, CODE_ID_LENGTH)
        _check_bytes("joiner_nonce", self.joiner_nonce, NONCE_LENGTH)
        _check_bytes("box_public_key", self.box_public_key, KEY_LENGTH)
        _check_sealable(self.box_public_key)


@dataclass(frozen=True, kw_only=True)
class Challenge(_Wire):
    """Approver -> joiner: the approver's nonce and its MAC, proving it knows the secret."""

    TYPE: ClassVar[str] = CHALLENGE
    approver_nonce: bytes
    mac: bytes

    def __post_init__(self) -> None:
        _check_bytes("approver_nonce", self.approver_nonce, NONCE_LENGTH)
        _check_bytes("mac", self.mac, MAC_LENGTH)


@dataclass(frozen=True, kw_only=True)
class Proof(_Wire):
    """Joiner -> approver: the joiner's MAC, proving it knows the secret."""

    TYPE: ClassVar[str] = PROOF
    mac: bytes

    def __post_init__(self) -> None:
        _check_bytes("mac", self.mac, MAC_LENGTH)


@dataclass(frozen=True, kw_only=True)
class Welcome(_Wire):
    """Approver -> joiner: everything the joiner needs to act for `did`, records as wire bytes.

    `identity_rotations` and `chain` (certificates from the approver up to the identity) are
    tuples here, CBOR arrays on the wire; `sealed_encryption_key` is sealed to the Hello's
    `box_public_key`. The records are opaque to this module: the caller verifies them.
    """

    TYPE: ClassVar[str] = WELCOME
    did: str
    identity_rotations: tuple[bytes, ...]
    encryption_key_binding: bytes
    certificate: bytes
    chain: tuple[bytes, ...]
    sealed_encryption_key: bytes

    def __post_init__(self) -> None:
        ed25519_public_key_from_did(_check_str("did", self.did, MAX_ID_LENGTH))
        _check_blobs("identity_rotations", self.identity_rotations, MAX_IDENTITY_ROTATIONS)
        _check_blob("encryption_key_binding", self.encryption_key_binding)
        _check_blob("certificate", self.certificate)
        _check_blobs("chain", self.chain, MAX_CHAIN)
        _check_blob("sealed_encryption_key", self.sealed_encryption_key)


@dataclass(frozen=True, kw_only=True)
class Refusal(_Wire):
    """Either side: why it gives up. `code` is a wire error code, `message` is for a person."""

    TYPE: ClassVar[str] = REFUSAL
    code: str
    message: str

    def __post_init__(self) -> None:
        if _REFUSAL_CODE.fullmatch(_check_str("code", self.code, 64)) is None:
            raise MalformedInput(f"refusal code {self.code!r:.70} is not like 'pairing_code_used'")
        _check_str("message", self.message, MAX_REFUSAL_MESSAGE)


Message = Hello | Challenge | Proof | Welcome | Refusal
_MESSAGE_CLASSES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Hello, Challenge, Proof, Welcome, Refusal)
}


def decode_message(data: bytes) -> Message:
    """The message whose wire bytes are `data`, its class picked by `type`; `MalformedInput`."""
    value = canonical_decode(data)
    type_name = value.get("type") if isinstance(value, dict) else None
    cls = _MESSAGE_CLASSES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MalformedInput(f"not a pairing message (type {type_name!r:.60})")
    return _from_map(cls, value, cls.TYPE)


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
