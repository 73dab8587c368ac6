"""The wire messages of `/vivim/pair/1.0.0`, Hello to Welcome and Refusal, and their codec.

A module of its own so that the codecs read, and are tested, apart from turn-taking: each message
checks its fields when it is built, and `decode_message` picks the class by `type`. What each
message carries, and why, is in the docstring of `protocols.pairing`, which runs the sessions
and re-exports these names; import them from there.
"""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Self, cast

import nacl.bindings
import nacl.exceptions

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import ed25519_public_key_from_did
from protocols.errors import MalformedInput
from protocols.pairing_code import (
    CODE_ID_LENGTH,
    MAX_ID_LENGTH,
    _check_bytes,
    _check_str,
    _from_map,
    _wire_map,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CHALLENGE",
    "HELLO",
    "KEY_LENGTH",
    "MAC_LENGTH",
    "MAX_CHAIN",
    "MAX_IDENTITY_ROTATIONS",
    "MAX_REFUSAL_MESSAGE",
    "NONCE_LENGTH",
    "PROOF",
    "REFUSAL",
    "WELCOME",
    "Challenge",
    "Hello",
    "Message",
    "Proof",
    "Refusal",
    "Welcome",
    "decode_message",
]

HELLO = "vivim.pair.hello.v1"
CHALLENGE = "vivim.pair.challenge.v1"
PROOF = "vivim.pair.proof.v1"
WELCOME = "vivim.pair.welcome.v1"
REFUSAL = "vivim.pair.refusal.v1"
NONCE_LENGTH = 32
KEY_LENGTH = 32  # an X25519 public key
MAC_LENGTH = 32  # HMAC-SHA256
MAX_CHAIN = 16
MAX_IDENTITY_ROTATIONS = 256
MAX_REFUSAL_MESSAGE = 1000
_REFUSAL_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


# --- codecs ---------------------------------------------------------------------------------------


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


# --- wire messages --------------------------------------------------------------------------------


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
