"""Signed identity records: the X25519 key binding and the device certificate.

Both records are signed with Ed25519 over `canonical_encode` of a map of every field except the
signature, plus a `type` entry naming the record type and version. The type entry is domain
separation: a signature made for one record type never verifies as another, however their fields
happen to line up. The wire form is the same map with `signature` added, so a record's wire bytes
also say what they are, and decoding one type's bytes as another is refused.

Records are validated on construction (key and signature lengths, integer ranges, DIDs and peer ids
that parse), whoever constructs them, so a record that exists is well formed; a bad value raises
`MalformedInput`, which is what a record from a peer or from storage is. Whether a record is
*trusted* (is the signing key the identity's current key, is the approving device still trusted)
is not decided here: `verify` checks the signature against the key the caller chose.
"""

from dataclasses import dataclass, replace
from typing import Self, TypeVar

import nacl.exceptions
import nacl.signing

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import ed25519_public_key_from_did
from protocols.errors import (
    BadSignature,
    InvalidPeerId,
    LocalProtocolError,
    MalformedInput,
)
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key

__all__ = [
    "DEVICE_CERTIFICATE_TYPE",
    "ENCRYPTION_KEY_BINDING_TYPE",
    "KEY_ROTATION_TYPE",
    "BadSignature",
    "DeviceCertificate",
    "EncryptionKeyBinding",
    "IdentityKeyRotation",
    "MalformedInput",
]

ENCRYPTION_KEY_BINDING_TYPE = "vivim.identity.encryption_key_binding.v1"
DEVICE_CERTIFICATE_TYPE = "vivim.identity.device_certificate.v1"
KEY_ROTATION_TYPE = "vivim.identity.key_rotation.v1"

# Ed25519 and X25519 public keys are both 32 bytes; an Ed25519 signature is 64.
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
# The store keeps these integers in SQLite INTEGER columns, which are signed 64-bit.
MAX_UINT = 2**63 - 1

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class EncryptionKeyBinding:
    """Binds a person's X25519 encryption key (version `key_version`) to their DID.

    Signed by the identity key. The key is separate from the signing key so that it can be rotated
    (the version goes up) without touching the DID.
    """

    did: str
    encryption_public_key: bytes
    key_version: int
    issued_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("did", self.did)
        _check_bytes("encryption_public_key", self.encryption_public_key, KEY_LENGTH)
        _check_uint("key_version", self.key_version)
        _check_uint("issued_at_ms", self.issued_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        did: str,
        encryption_public_key: bytes,
        key_version: int,
        issued_at_ms: int,
    ) -> Self:
        """A binding signed by `signing_key`, the identity key current at `issued_at_ms`."""
        unsigned = cls(
            did=did,
            encryption_public_key=encryption_public_key,
            key_version=key_version,
            issued_at_ms=issued_at_ms,
            signature=bytes(SIGNATURE_LENGTH),
        )
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": ENCRYPTION_KEY_BINDING_TYPE,
            "did": self.did,
            "encryption_public_key": self.encryption_public_key,
            "key_version": self.key_version,
            "issued_at_ms": self.issued_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return canonical_encode(self._unsigned_fields())

    def verify(self, identity_public_key: bytes) -> None:
        """Raise `BadSignature` unless the signature is by `identity_public_key`.

        The key is an argument, not read from the DID, because after a rotation the identity key
        is no longer the DID's inception key; the caller picks the key that was current.
        """
        _verify(identity_public_key, self.signed_bytes(), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(
            data,
            ENCRYPTION_KEY_BINDING_TYPE,
            ("did", "encryption_public_key", "key_version", "issued_at_ms", "signature"),
        )
        return cls(
            did=_take(fields, "did", str),
            encryption_public_key=_take(fields, "encryption_public_key", bytes),
            key_version=_take(fields, "key_version", int),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


@dataclass(frozen=True, kw_only=True)
class DeviceCertificate:
    """Lets the device with `device_public_key` act for `did`.

    `approver` is the DID itself when the identity key signed (the first device, or a device added
    with the identity key at hand), else the peer id of the already-trusted device that approved
    this one; the chain of approvers is the trust chain.
    """

    did: str
    device_public_key: bytes
    approver: str
    issued_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("did", self.did)
        _check_bytes("device_public_key", self.device_public_key, KEY_LENGTH)
        _check_approver(self.approver, did=self.did, device_public_key=self.device_public_key)
        _check_uint("issued_at_ms", self.issued_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @property
    def device_peer_id(self) -> str:
        """The certified device's id, which is its libp2p peer id."""
        return peer_id_from_ed25519_public_key(self.device_public_key)

    @property
    def approved_by_identity(self) -> bool:
        """Whether the identity key signed this certificate (rather than another device)."""
        return self.approver == self.did

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        did: str,
        device_public_key: bytes,
        approver: str,
        issued_at_ms: int,
    ) -> Self:
        """A certificate signed by `signing_key`: the identity key, or the approving device's key.

        Raises `LocalProtocolError` if `approver` is a peer id that `signing_key` does not belong to
        (the identity key cannot be checked against the DID here, since it may have been rotated).
        """
        unsigned = cls(
            did=did,
            device_public_key=device_public_key,
            approver=approver,
            issued_at_ms=issued_at_ms,
            signature=bytes(SIGNATURE_LENGTH),
        )
        if not unsigned.approved_by_identity and bytes(signing_key.verify_key) != (
            ed25519_public_key_from_peer_id(approver)
        ):
            raise LocalProtocolError("the signing key is not the key of the approving device")
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": DEVICE_CERTIFICATE_TYPE,
            "did": self.did,
            "device_public_key": self.device_public_key,
            "approver": self.approver,
            "issued_at_ms": self.issued_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return canonical_encode(self._unsigned_fields())

    def verify(self, approver_public_key: bytes) -> None:
        """Raise `BadSignature` unless the signature is by `approver_public_key`.

        When a device approved, its key is fixed by its peer id, so a different key is refused
        outright. When the identity approved, the caller picks the identity key that was current at
        `issued_at_ms` (after a rotation it is not the DID's inception key).
        """
        if not self.approved_by_identity and approver_public_key != (
            ed25519_public_key_from_peer_id(self.approver)
        ):
            raise BadSignature("the key given is not the approving device's key")
        _verify(approver_public_key, self.signed_bytes(), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(
            data,
            DEVICE_CERTIFICATE_TYPE,
            ("did", "device_public_key", "approver", "issued_at_ms", "signature"),
        )
        return cls(
            did=_take(fields, "did", str),
            device_public_key=_take(fields, "device_public_key", bytes),
            approver=_take(fields, "approver", str),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


@dataclass(frozen=True, kw_only=True)
class IdentityKeyRotation:
    """Replaces the identity's signing key: `new_public_key` becomes key `key_version` at
    `rotated_at_ms`, and the key before it retires then.

    Signed by the key it replaces (version `key_version - 1`; version 1 is the DID's inception
    key), so the rotations of a DID form a chain from its inception key that anyone holding the
    DID can check. The DID itself never changes.
    """

    did: str
    new_public_key: bytes
    key_version: int
    rotated_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("did", self.did)
        _check_bytes("new_public_key", self.new_public_key, KEY_LENGTH)
        _check_uint("key_version", self.key_version)
        if self.key_version < 2:
            raise MalformedInput("a rotation makes key version 2 or later (1 is the inception key)")
        _check_uint("rotated_at_ms", self.rotated_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        did: str,
        new_public_key: bytes,
        key_version: int,
        rotated_at_ms: int,
    ) -> Self:
        """A rotation signed by `signing_key`, the current identity key (the one retired)."""
        unsigned = cls(
            did=did,
            new_public_key=new_public_key,
            key_version=key_version,
            rotated_at_ms=rotated_at_ms,
            signature=bytes(SIGNATURE_LENGTH),
        )
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": KEY_ROTATION_TYPE,
            "did": self.did,
            "new_public_key": self.new_public_key,
            "key_version": self.key_version,
            "rotated_at_ms": self.rotated_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return canonical_encode(self._unsigned_fields())

    def verify(self, previous_public_key: bytes) -> None:
        """Raise `BadSignature` unless the key this rotation retires signed it."""
        _verify(previous_public_key, self.signed_bytes(), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(
            data,
            KEY_ROTATION_TYPE,
            ("did", "new_public_key", "key_version", "rotated_at_ms", "signature"),
        )
        return cls(
            did=_take(fields, "did", str),
            new_public_key=_take(fields, "new_public_key", bytes),
            key_version=_take(fields, "key_version", int),
            rotated_at_ms=_take(fields, "rotated_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


def _sign(signing_key: nacl.signing.SigningKey, message: bytes) -> bytes:
    return signing_key.sign(message).signature


def _verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != KEY_LENGTH:
        raise LocalProtocolError(f"an Ed25519 public key is {KEY_LENGTH} bytes")
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except nacl.exceptions.BadSignatureError as err:
        raise BadSignature("signature does not verify") from err


def _decode_fields(data: bytes, record_type: str, names: tuple[str, ...]) -> dict[str, object]:
    """The fields of a record's wire map: exactly `type` (equal to `record_type`) and `names`."""
    value = canonical_decode(data)
    if not isinstance(value, dict):
        raise MalformedInput(f"record is a {type(value).__name__}, expected a map")
    if value.get("type") != record_type:
        raise MalformedInput(f"record type is {value.get('type')!r}, expected {record_type!r}")
    expected = {"type", *names}
    if value.keys() != expected:
        missing = sorted(expected - value.keys())
        extra = sorted(value.keys() - expected)
        raise MalformedInput(f"record fields wrong: missing {missing}, unexpected {extra}")
    return value


def _take(fields: dict[str, object], name: str, kind: type[_T]) -> _T:
    value = fields[name]
    # bool is a subclass of int, but True is not a timestamp.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected {kind.__name__}")
    return value


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected bytes")
    if len(value) != length:
        raise MalformedInput(f"{name} is {len(value)} bytes, expected {length}")


def _check_uint(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected int")
    if not 0 <= value <= MAX_UINT:
        raise MalformedInput(f"{name} is {value}, expected 0 <= {name} <= 2**63 - 1")


def _check_did(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    ed25519_public_key_from_did(value)


def _check_approver(approver: object, *, did: str, device_public_key: bytes) -> None:
    if not isinstance(approver, str):
        raise MalformedInput(f"approver is a {type(approver).__name__}, expected str")
    if approver == did:
        return
    try:
        approver_key = ed25519_public_key_from_peer_id(approver)
    except InvalidPeerId as err:
        raise MalformedInput(
            f"approver is neither the certificate's DID nor a device peer id: {err}"
        ) from err
    if approver_key == device_public_key:
        raise MalformedInput("a device cannot approve its own certificate")
