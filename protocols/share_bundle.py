"""A share bundle: everything one recipient needs to read one shared ACU under one grant.

store/SHARING_DESIGN.md, "Replication to friends": the sharing mesh moves as bundles, one per
(grant, recipient), over `/vivim/share/1.0.0` or as a mailbox letter. A bundle holds

- `grant`: the `SharingGrant`'s wire bytes (signed by a device of the grantor);
- `ciphertext`: the ACU's canonical record (the CBOR its id is the hash of) encrypted with the
  ACU's content key (`protocols.share_crypto.encrypt_content`);
- the content key, in one of two shapes (`key_kind`):
  - `direct` (a grant to a DID, or to the network): `wrapped_key`, the content key wrapped for
    the recipient's X25519 key under `KeyContext.content(acu_id, grant_id)`;
  - `circle` (a grant to a circle): `circle_version`, the signed `CircleKeyVersion` naming the
    recipient, `circle_key`, that version's circle key wrapped for the recipient under
    `KeyContext.circle(circle_id, version)`, and `content_key`, the content key wrapped with the
    circle key (`wrap_with_circle_key`);
- `certificate`, `chain` and `rotations`: the grantor device's credentials (its certificate, the
  certificates above it, the identity key rotations), so the recipient can tell that the device
  that signed the grant speaks for the grantor's DID (`check_grantor`).

The wire form is canonical CBOR of a map with exactly these fields plus `type`; absent fields of
the other key shape are null. Sizes are bounded (`MAX_BUNDLE_BYTES` fits a mailbox envelope).

Nothing here reads a clock or a key store: `open_bundle` takes the recipient's DID and X25519
private key and returns the plaintext record, or raises `BundleRefused` (with a code) for a
bundle that does not hold together.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Self, TypeVar

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id_of_bytes
from protocols.errors import BadSignature, MalformedInput, RemoteProtocolError
from protocols.identity_records import (
    _check_did,
    _decode_fields,
    _take,
)
from protocols.share_crypto import (
    CircleWrappedKey,
    KeyContext,
    ShareUnreadable,
    WrappedKey,
    decrypt_content,
    unwrap_key,
    unwrap_with_circle_key,
)
from protocols.sharing import CircleKeyVersion, SharingGrant, TargetKind
from protocols.trust import UntrustedCredentials, check_credentials

__all__ = [
    "BUNDLE_TYPE",
    "MAX_BUNDLE_BYTES",
    "MAX_CHAIN_LENGTH",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_ROTATIONS",
    "BundleRefused",
    "KeyKind",
    "OpenedBundle",
    "ShareBundle",
    "acu_record",
    "open_bundle",
]

_T = TypeVar("_T")

BUNDLE_TYPE: Final = "vivim.sharing.bundle.v1"
# An ACU is a question and its answer, a code block, an insight: 512 KiB of encrypted record is
# far beyond any the importer cuts, and leaves a bundle well inside a mailbox envelope's payload
# (protocols.envelope.MAX_PAYLOAD_BYTES, 1 MiB less 1 KiB).
MAX_CIPHERTEXT_BYTES: Final = 512 * 1024
# A grantor device's chain of approvers: a person has a handful of devices; 16 is generous.
MAX_CHAIN_LENGTH: Final = 16
# Identity key rotations: rare events (a leaked or lost key).
MAX_ROTATIONS: Final = 16
# The whole bundle: the ciphertext, a circle version of up to MAX_CIRCLE_MEMBERS DIDs (~60 KB),
# the chain and rotations (~200 bytes each), keys and the grant.
MAX_BUNDLE_BYTES: Final = MAX_CIPHERTEXT_BYTES + 128 * 1024

_FIELDS: Final = (
    "grant", "ciphertext", "key_kind", "wrapped_key", "circle_version", "circle_key",
    "content_key", "certificate", "chain", "rotations",
)  # fmt: skip


class BundleRefused(RemoteProtocolError):
    """A bundle this recipient does not accept: `code` says why (not for us, forged grant,
    unreadable, content that is not the grant's ACU, ...). Nothing is stored."""

    code = "bundle_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeyKind(StrEnum):
    """How the content key travels: wrapped for the recipient, or under a circle key."""

    DIRECT = "direct"
    CIRCLE = "circle"


def acu_record(*, author: str, content: str, acu_type: str, source_time_ms: int) -> bytes:
    """The canonical record of an ACU: the CBOR its id is the content id of
    (`protocols.vault_records.acu_id`), which is what a bundle encrypts."""
    return canonical_encode(
        {
            "kind": "acu",
            "type": acu_type,
            "author": author,
            "content": content,
            "source_time_ms": source_time_ms,
        }
    )


@dataclass(frozen=True, kw_only=True)
class ShareBundle:
    """One grant's ACU for one recipient (module docstring). Fields are wire bytes, decoded and
    checked by `open_bundle`; `__post_init__` checks only shapes and sizes."""

    grant: bytes
    ciphertext: bytes
    key_kind: KeyKind
    wrapped_key: bytes | None = None
    circle_version: bytes | None = None
    circle_key: bytes | None = None
    content_key: bytes | None = None
    certificate: bytes
    chain: tuple[bytes, ...] = ()
    rotations: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for name in ("grant", "ciphertext", "certificate"):
            if not isinstance(getattr(self, name), bytes):
                raise MalformedInput(f"{name} is not bytes")
        if len(self.ciphertext) > MAX_CIPHERTEXT_BYTES:
            raise MalformedInput(
                f"ciphertext is {len(self.ciphertext)} bytes, more than {MAX_CIPHERTEXT_BYTES}"
            )
        if not isinstance(self.key_kind, KeyKind):
            raise MalformedInput(f"key_kind is a {type(self.key_kind).__name__}")
        direct = (self.wrapped_key,)
        circle = (self.circle_version, self.circle_key, self.content_key)
        present, absent = (direct, circle) if self.key_kind is KeyKind.DIRECT else (circle, direct)
        if not all(isinstance(value, bytes) for value in present):
            raise MalformedInput(f"a {self.key_kind.value} bundle lacks its key fields")
        if any(value is not None for value in absent):
            raise MalformedInput(f"a {self.key_kind.value} bundle holds the other kind's keys")
        for name, values, bound in (
            ("chain", self.chain, MAX_CHAIN_LENGTH),
            ("rotations", self.rotations, MAX_ROTATIONS),
        ):
            if not isinstance(values, tuple) or not all(isinstance(v, bytes) for v in values):
                raise MalformedInput(f"{name} is not a list of byte strings")
            if len(values) > bound:
                raise MalformedInput(f"{name} has {len(values)} entries, more than {bound}")

    def to_wire(self) -> bytes:
        return canonical_encode(
            {
                "type": BUNDLE_TYPE,
                "grant": self.grant,
                "ciphertext": self.ciphertext,
                "key_kind": self.key_kind.value,
                "wrapped_key": self.wrapped_key,
                "circle_version": self.circle_version,
                "circle_key": self.circle_key,
                "content_key": self.content_key,
                "certificate": self.certificate,
                "chain": list(self.chain),
                "rotations": list(self.rotations),
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; `MalformedInput` for anything else (oversized included)."""
        if not isinstance(data, bytes):
            raise MalformedInput(f"bundle is a {type(data).__name__}, expected bytes")
        if len(data) > MAX_BUNDLE_BYTES:
            raise MalformedInput(f"bundle is {len(data)} bytes, more than {MAX_BUNDLE_BYTES}")
        fields = _decode_fields(data, BUNDLE_TYPE, _FIELDS)
        kind = fields["key_kind"]
        if kind not in ("direct", "circle"):
            raise MalformedInput(f"key_kind must be direct or circle: {kind!r:.40}")
        return cls(
            grant=_take(fields, "grant", bytes),
            ciphertext=_take(fields, "ciphertext", bytes),
            key_kind=KeyKind(kind),
            wrapped_key=_optional_bytes(fields, "wrapped_key"),
            circle_version=_optional_bytes(fields, "circle_version"),
            circle_key=_optional_bytes(fields, "circle_key"),
            content_key=_optional_bytes(fields, "content_key"),
            certificate=_take(fields, "certificate", bytes),
            chain=tuple(_take(fields, "chain", list)),
            rotations=tuple(_take(fields, "rotations", list)),
        )

    @property
    def id(self) -> str:
        """The content id of the wire bytes."""
        return content_id_of_bytes(self.to_wire())


@dataclass(frozen=True, kw_only=True)
class OpenedBundle:
    """What a bundle proved and held: the checked grant, the ACU's canonical `record` and its
    fields, and, for a circle grant, the circle version and its key (the recipient keeps it)."""

    grant: SharingGrant
    record: bytes
    author: str
    content: str
    acu_type: str
    source_time_ms: int
    circle_version: CircleKeyVersion | None
    circle_key: bytes | None


def open_bundle(
    bundle: ShareBundle, *, recipient_did: str, recipient_x25519_private_key: bytes, now_ms: int
) -> OpenedBundle:
    """Check `bundle` for `recipient_did` at `now_ms` and open it; `BundleRefused` otherwise.

    Checks, in order: the grant decodes and its signature verifies; the signing device is a
    trusted device of the grantor by the credentials carried; the grant is live and not global
    (global content is the commons', in the clear); the grant names the recipient (a DID grant
    to its DID, a circle grant through a circle version signed by the grantor naming it, a
    network grant to whoever it was wrapped for); the key unwraps with our key; the content
    decrypts; its content id is the grant's ACU id and its author is the grantor.
    """
    grant = _decode(SharingGrant.from_wire, bundle.grant, "grant")
    try:
        grant.verify()
    except BadSignature as err:
        raise BundleRefused("forged", "the grant's signature does not verify") from err
    check_grantor(bundle, grant.grantor_did, grant.grantor_device)
    if not grant.is_live(now_ms):
        raise BundleRefused("expired", f"grant {grant.id} has expired")
    circle_version: CircleKeyVersion | None = None
    circle_key: bytes | None = None
    try:
        if grant.target_kind is TargetKind.GLOBAL:
            raise BundleRefused("global", "a global grant travels as a publication, not a bundle")
        if bundle.key_kind is KeyKind.DIRECT:
            if grant.target_kind is TargetKind.CIRCLE:
                raise BundleRefused("wrong_key_kind", "a circle grant's key comes by its circle")
            if grant.target_kind is TargetKind.DID and grant.target != recipient_did:
                raise BundleRefused("not_for_us", f"the grant names {grant.target}, not us")
            assert bundle.wrapped_key is not None
            wrapped = _decode(WrappedKey.from_wire, bundle.wrapped_key, "wrapped_key")
            content_key = unwrap_key(
                wrapped,
                context=KeyContext.content(acu_id=grant.acu_id, grant_id=grant.id),
                recipient_x25519_private_key=recipient_x25519_private_key,
            )
        else:
            if grant.target_kind is not TargetKind.CIRCLE:
                raise BundleRefused("wrong_key_kind", "only a circle grant comes by a circle key")
            assert bundle.circle_version is not None
            assert bundle.circle_key is not None and bundle.content_key is not None
            circle_version = _signed_circle_version(bundle.circle_version)
            _check_circle_version(circle_version, grant, recipient_did)
            circle_key = _circle_key(
                bundle.circle_key,
                circle_version.circle_id,
                circle_version.version,
                recipient_x25519_private_key,
            )
            content_key = unwrap_with_circle_key(
                _decode(CircleWrappedKey.from_wire, bundle.content_key, "content_key"),
                circle_key,
                acu_id=grant.acu_id,
                circle_id=circle_version.circle_id,
                circle_key_version=circle_version.version,
            )
        record = decrypt_content(content_key, grant.acu_id, bundle.ciphertext)
    except ShareUnreadable as err:
        raise BundleRefused("unreadable", f"the bundle does not open with our key: {err}") from err
    if content_id_of_bytes(record) != grant.acu_id:
        raise BundleRefused("wrong_content", "the content is not the ACU the grant names")
    opened = _record_fields(record)
    if opened[0] != grant.grantor_did:
        raise BundleRefused("not_the_author", "the ACU's author is not the grantor")
    return OpenedBundle(
        grant=grant,
        record=record,
        author=opened[0],
        content=opened[1],
        acu_type=opened[2],
        source_time_ms=opened[3],
        circle_version=circle_version,
        circle_key=circle_key,
    )


def check_grantor(bundle: ShareBundle, did: str, device: str) -> None:
    """`BundleRefused` unless the credentials carried make `device` a trusted device of `did`."""
    _check_credentials(
        bundle.certificate, tuple(bundle.chain), tuple(bundle.rotations), did, device
    )


# A page of bundles from one grantor carries the same credentials, circle version and wrapped
# circle key again and again; checking them costs signature checks, base58 decoding of every
# member and an X25519 unwrap per bundle (~1 ms with a 50-member circle). These are pure
# functions of their bytes, so their results are remembered (errors are not: lru_cache keeps
# results only).
@functools.lru_cache(maxsize=256)
def _check_credentials(
    certificate_wire: bytes,
    chain_wires: tuple[bytes, ...],
    rotation_wires: tuple[bytes, ...],
    did: str,
    device: str,
) -> None:
    try:
        check_credentials(certificate_wire, chain_wires, rotation_wires, device=device, did=did)
    except MalformedInput as err:
        raise BundleRefused("malformed", f"the credentials do not decode: {err}") from err
    except UntrustedCredentials as err:
        raise BundleRefused("untrusted_device", str(err)) from err


@functools.lru_cache(maxsize=64)
def _signed_circle_version(wire: bytes) -> CircleKeyVersion:
    """The circle version `wire` holds, its signature checked (by the device it names)."""
    version = _decode(CircleKeyVersion.from_wire, wire, "circle_version")
    try:
        version.verify()
    except BadSignature as err:
        raise BundleRefused("forged", "the circle version's signature does not verify") from err
    return version


@functools.lru_cache(maxsize=64)
def _circle_key(wrapped_wire: bytes, circle_id: str, version: int, private_key: bytes) -> bytes:
    """The circle key of (`circle_id`, `version`) from its wrapping for us."""
    return unwrap_key(
        _decode(WrappedKey.from_wire, wrapped_wire, "circle_key"),
        context=KeyContext.circle(circle_id=circle_id, version=version),
        recipient_x25519_private_key=private_key,
    )


def _check_circle_version(version: CircleKeyVersion, grant: SharingGrant, did: str) -> None:
    if version.circle_id != grant.target or version.owner_did != grant.grantor_did:
        raise BundleRefused("wrong_circle", "the circle version is not the grant's circle")
    if did not in version.members:
        raise BundleRefused("not_for_us", "the circle version does not name us")


def _record_fields(record: bytes) -> tuple[str, str, str, int]:
    value = _decode(canonical_decode, record, "record")
    if not isinstance(value, dict) or value.get("kind") != "acu":
        raise BundleRefused("wrong_content", "the content is not an ACU record")
    try:
        author = _take(value, "author", str)
        _check_did("author", author)
        content = _take(value, "content", str)
        acu_type = _take(value, "type", str)
        source_time_ms = _take(value, "source_time_ms", int)
    except (MalformedInput, KeyError) as err:
        raise BundleRefused("wrong_content", f"the ACU record is malformed: {err}") from err
    if set(value) != {"kind", "author", "content", "type", "source_time_ms"}:
        raise BundleRefused("wrong_content", "the ACU record has unexpected fields")
    return author, content, acu_type, source_time_ms


def _decode(decode: Callable[[bytes], _T], data: bytes, name: str) -> _T:
    try:
        return decode(data)
    except MalformedInput as err:
        raise BundleRefused("malformed", f"{name} does not decode: {err}") from err


def _optional_bytes(fields: dict[str, object], name: str) -> bytes | None:
    return None if fields[name] is None else _take(fields, name, bytes)
