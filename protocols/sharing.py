"""Sharing: the one-way ratchet, permissions, and the signed grant, revocation and circle records.

The sharing level. An ACU's `SharingLevel` (SELF < CIRCLES < NETWORK < GLOBAL, defined with the
vault's records in `protocols.vault_records` and re-exported here) is a high-water mark: it rises,
never falls. `raise_level` gives the new mark for a request (the higher of the two, never lower);
`is_allowed_change` says whether a change asked for is allowed (equal or higher: staying put is
allowed and changes nothing); `check_level_change` raises `LevelLowered` for a lowering.

Which level a grant puts an ACU at (`SharingGrant.level`): a grant to the network is NETWORK and a
global grant is GLOBAL; a grant to a circle is CIRCLES, and so is a grant to one person. SELF means
"no one but the owner", and a person named directly is a bounded audience the owner chose, like a
circle of one, so it counts as CIRCLES rather than a level of its own.

Permissions. `Permission` flags: view, annotate, remix, reshare. View is implied by every grant:
a grant always holds VIEW (`SharingGrant.create` adds it; a record without it is malformed). On
the wire they are the sorted list of names, so they have one spelling.

Records. `SharingGrant`, `GrantRevocation` and `CircleKeyVersion` are signed like
`protocols.mailbox_records`: Ed25519 by a device of the person (named by its peer id, whose key
the peer id holds, so `verify` needs no key) over the canonical CBOR of every field but the
signature plus a `type` entry (domain separation). Whether that device is a certified, unrevoked
device of the person is the caller's check against the trust chain, as is every question of time
(there is no clock here). A record's `id` is the content id of exactly those signed bytes, so it
is computed, not carried: it cannot disagree with the fields, and the signature covers it.

Grants are append-only. A grant to a person or a circle (or the network) can be revoked by a
`GrantRevocation` naming its id; revoking stops future access, it cannot unsee what was already
received. A GLOBAL grant can never be revoked: `GrantRevocation.create` refuses one with
`Irrevocable` (code "irrevocable"), and since a revocation from elsewhere names only a grant id,
`check_revocation(revocation, grant)` is what the apply path calls with the grant it names: it
raises `Irrevocable` for a global grant and `RevocationMismatch` for a revocation that is not the
grantor's, or names another grant or ACU. A global grant also never expires (`expires_at_ms` is
None): what is published stays published.

Circles. A circle is named by `circle_id(owner_did, salt)`, the content id of its owner and 16
random bytes the edge draws (a name would be guessable and could be reused). Its members and key
are versioned: every change of membership makes a `CircleKeyVersion` with the next version and a
new random circle key, wrapped for each member (`protocols.share_crypto`), so a removed member
cannot read what is shared afterwards, and a new member reads only what is wrapped for the
version they hold. The owner is never a member of its own circle (it holds every version anyway).
"""

import itertools
from dataclasses import dataclass, replace
from enum import Flag, StrEnum, auto
from functools import cached_property
from typing import Final, Self, TypeVar

import nacl.signing

from protocols.canonical import canonical_encode
from protocols.cid import check_content_id, content_id, content_id_of_bytes
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.identity_records import (
    SIGNATURE_LENGTH,
    _check_bytes,
    _check_did,
    _check_uint,
    _decode_fields,
    _sign,
    _take,
    _verify,
)
from protocols.mailbox_records import _check_peer_id
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key
from protocols.vault_records import SharingLevel

__all__ = [
    "CIRCLE_KEY_TYPE",
    "CIRCLE_SALT_LENGTH",
    "GRANT_TYPE",
    "MAX_CIRCLE_MEMBERS",
    "REVOCATION_TYPE",
    "CircleKeyVersion",
    "GrantRevocation",
    "Irrevocable",
    "LevelLowered",
    "Permission",
    "RevocationMismatch",
    "SharingGrant",
    "SharingLevel",
    "TargetKind",
    "check_level_change",
    "check_revocation",
    "circle_id",
    "is_allowed_change",
    "raise_level",
]

GRANT_TYPE: Final = "vivim.sharing.grant.v1"
REVOCATION_TYPE: Final = "vivim.sharing.revocation.v1"
CIRCLE_KEY_TYPE: Final = "vivim.sharing.circle_key.v1"
CIRCLE_SALT_LENGTH: Final = 16
# Members of one circle at most: a circle is people one knows (the benchmark uses 50);
# 1024 DIDs are about 60 KB of record, far inside a sync batch or an envelope.
MAX_CIRCLE_MEMBERS: Final = 1024

_T = TypeVar("_T")

_GRANT_FIELDS = (
    "grantor_did", "grantor_device", "acu_id", "target_kind", "target", "permissions",
    "expires_at_ms", "issued_at_ms", "signature",
)  # fmt: skip
_REVOCATION_FIELDS = (
    "grantor_did", "grantor_device", "grant_id", "acu_id", "revoked_at_ms", "signature"
)  # fmt: skip
_CIRCLE_KEY_FIELDS = (
    "circle_id", "owner_did", "owner_device", "version", "members", "issued_at_ms", "signature"
)  # fmt: skip


class LevelLowered(RemoteProtocolError):
    """A change would lower a sharing level, which only rises; nothing is changed."""

    code = "sharing_level_lowered"


class Irrevocable(RemoteProtocolError):
    """A revocation of a GLOBAL grant: what is published globally can never be revoked.

    Raised whoever asks (the owner's own API, a remote op); the API answers IRREVOCABLE.
    """

    code = "irrevocable"


class RevocationMismatch(RemoteProtocolError):
    """A revocation that does not fit the grant it is checked against: another grant's id,
    another ACU, or a grantor other than the grant's (only the grantor may revoke)."""

    code = "revocation_mismatch"


# --- the ratchet ----------------------------------------------------------------------------------


def is_allowed_change(current: SharingLevel, requested: SharingLevel) -> bool:
    """Whether a level may change from `current` to `requested`: to the same level (which changes
    nothing) or a higher one; never to a lower one."""
    _check_level("current", current)
    _check_level("requested", requested)
    return requested >= current


def raise_level(current: SharingLevel, requested: SharingLevel) -> SharingLevel:
    """The high-water mark after `requested`: the higher of the two, never lower than `current`.

    A lower request is not an error here: the mark simply stays (what a grant at a lower level
    does to an ACU shared wider already). Use `check_level_change` to refuse it instead.
    """
    _check_level("current", current)
    _check_level("requested", requested)
    return max(current, requested)


def check_level_change(current: SharingLevel, requested: SharingLevel) -> SharingLevel:
    """`requested` if the change is allowed (`is_allowed_change`); `LevelLowered` otherwise."""
    if not is_allowed_change(current, requested):
        raise LevelLowered(
            f"the sharing level is {current.name}; it cannot be lowered to {requested.name}"
        )
    return requested


def _check_level(name: str, value: object) -> None:
    if not isinstance(value, SharingLevel):
        raise LocalProtocolError(f"{name} is a {type(value).__name__}, expected a SharingLevel")


# --- permissions and targets ----------------------------------------------------------------------


class Permission(Flag):
    """What a grant lets its target do with the ACU; VIEW is part of every grant."""

    VIEW = auto()
    ANNOTATE = auto()
    REMIX = auto()
    RESHARE = auto()

    def to_wire(self) -> list[str]:
        """The names of the flags held, sorted: one spelling per set."""
        return sorted(name for name, member in _PERMISSIONS_BY_NAME.items() if member in self)

    @classmethod
    def from_wire(cls, value: object) -> "Permission":
        """Parse `to_wire`'s list; `MalformedInput` for anything else (unsorted, repeated,
        unknown names, or a set without view)."""
        if not isinstance(value, list):
            raise MalformedInput(f"permissions is a {type(value).__name__}, expected a list")
        if not all(isinstance(name, str) for name in value):
            raise MalformedInput("permissions holds something that is not a name")
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise MalformedInput("permissions is not strictly ascending (sorted, unique)")
        result = Permission(0)
        for name in value:
            member = _PERMISSIONS_BY_NAME.get(name)
            if member is None:
                raise MalformedInput(f"unknown permission {name!r:.40}")
            result |= member
        _check_permissions(result)
        return result


# The wire names, fixed here rather than taken from the Python names.
_PERMISSIONS_BY_NAME: Final = {
    "view": Permission.VIEW,
    "annotate": Permission.ANNOTATE,
    "remix": Permission.REMIX,
    "reshare": Permission.RESHARE,
}


def _check_permissions(value: object) -> None:
    if not isinstance(value, Permission):
        raise MalformedInput(f"permissions is a {type(value).__name__}, expected Permission")
    if Permission.VIEW not in value:
        raise MalformedInput("permissions lack view, which every grant holds")


class TargetKind(StrEnum):
    """Whom a grant names: one person (a DID), a circle (its id), the network, or everyone."""

    DID = "did"
    CIRCLE = "circle"
    NETWORK = "network"
    GLOBAL = "global"

    @classmethod
    def from_wire(cls, value: object) -> "TargetKind":
        if isinstance(value, str) and value in _TARGET_KINDS:
            return cls(value)
        raise MalformedInput(
            f"target_kind must be one of did, circle, network, global: {value!r:.40}"
        )


_TARGET_KINDS: Final = frozenset(kind.value for kind in TargetKind)
# The level each kind of grant puts an ACU at (see the module docstring for why DID is CIRCLES).
_LEVELS: Final = {
    TargetKind.DID: SharingLevel.CIRCLES,
    TargetKind.CIRCLE: SharingLevel.CIRCLES,
    TargetKind.NETWORK: SharingLevel.NETWORK,
    TargetKind.GLOBAL: SharingLevel.GLOBAL,
}


# --- grants ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SharingGrant:
    """`grantor_did` lets `target` do `permissions` with ACU `acu_id` until `expires_at_ms`
    (None: no expiry; always None for GLOBAL). Signed by `grantor_device`, a device of the grantor.

    `target` is a DID for kind DID, a circle id for CIRCLE, and None for NETWORK and GLOBAL. A
    grant is live strictly before its expiry (`is_live`).
    """

    grantor_did: str
    grantor_device: str
    acu_id: str
    target_kind: TargetKind
    target: str | None
    permissions: Permission
    expires_at_ms: int | None
    issued_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("grantor_did", self.grantor_did)
        _check_peer_id("grantor_device", self.grantor_device)
        check_content_id(self.acu_id)
        if not isinstance(self.target_kind, TargetKind):
            raise MalformedInput(f"target_kind is a {type(self.target_kind).__name__}")
        if self.target_kind is TargetKind.DID:
            _check_did("target", self.target)
            if self.target == self.grantor_did:
                raise MalformedInput("a grant to its own grantor grants nothing")
        elif self.target_kind is TargetKind.CIRCLE:
            check_content_id(self.target)
        elif self.target is not None:
            raise MalformedInput(f"a {self.target_kind.value} grant names no target")
        _check_permissions(self.permissions)
        _check_uint("issued_at_ms", self.issued_at_ms)
        if self.expires_at_ms is not None:
            if self.target_kind is TargetKind.GLOBAL:
                raise MalformedInput("a global grant never expires (expires_at_ms must be None)")
            _check_uint("expires_at_ms", self.expires_at_ms)
            if self.expires_at_ms <= self.issued_at_ms:
                raise MalformedInput("expires_at_ms is not after issued_at_ms")
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        grantor_did: str,
        acu_id: str,
        target_kind: TargetKind,
        target: str | None = None,
        permissions: Permission = Permission.VIEW,
        expires_at_ms: int | None = None,
        issued_at_ms: int,
    ) -> Self:
        """A grant signed by `signing_key`, a device of `grantor_did`; VIEW is added to
        `permissions`. `LocalProtocolError` for a value the record cannot hold."""
        try:
            unsigned = cls(
                grantor_did=grantor_did,
                grantor_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                acu_id=acu_id,
                target_kind=target_kind,
                target=target,
                permissions=(
                    permissions | Permission.VIEW
                    if isinstance(permissions, Permission)
                    else permissions
                ),
                expires_at_ms=expires_at_ms,
                issued_at_ms=issued_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this grant: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @property
    def level(self) -> SharingLevel:
        """The sharing level this grant puts its ACU at (at least)."""
        return _LEVELS[self.target_kind]

    @property
    def revocable(self) -> bool:
        """Whether a revocation may stop this grant: every grant but a GLOBAL one."""
        return self.target_kind is not TargetKind.GLOBAL

    def is_live(self, now_ms: int) -> bool:
        """Whether the grant is unexpired at `now_ms` (revocation is the caller's to know)."""
        return self.expires_at_ms is None or now_ms < self.expires_at_ms

    @cached_property
    def id(self) -> str:
        """The content id of the signed bytes."""
        return content_id_of_bytes(self.signed_bytes())

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": GRANT_TYPE,
            "grantor_did": self.grantor_did,
            "grantor_device": self.grantor_device,
            "acu_id": self.acu_id,
            "target_kind": self.target_kind.value,
            "target": self.target,
            "permissions": self.permissions.to_wire(),
            "expires_at_ms": self.expires_at_ms,
            "issued_at_ms": self.issued_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over (and the id is the content id of)."""
        return canonical_encode(self._unsigned_fields())

    def verify(self) -> None:
        """Raise `BadSignature` unless `grantor_device`'s key signed this grant."""
        _verify(
            ed25519_public_key_from_peer_id(self.grantor_device),
            self.signed_bytes(),
            self.signature,
        )

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(data, GRANT_TYPE, _GRANT_FIELDS)
        return cls(
            grantor_did=_take(fields, "grantor_did", str),
            grantor_device=_take(fields, "grantor_device", str),
            acu_id=_take(fields, "acu_id", str),
            target_kind=TargetKind.from_wire(fields["target_kind"]),
            target=_take_optional(fields, "target", str),
            permissions=Permission.from_wire(fields["permissions"]),
            expires_at_ms=_take_optional(fields, "expires_at_ms", int),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


# --- revocations ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GrantRevocation:
    """`grantor_did` revokes its grant `grant_id` (of ACU `acu_id`) from `revoked_at_ms` on.

    Signed by `grantor_device`, a device of the grantor (not necessarily the one that granted).
    Whether it may revoke that grant at all is `check_revocation`'s to say, given the grant.
    """

    grantor_did: str
    grantor_device: str
    grant_id: str
    acu_id: str
    revoked_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("grantor_did", self.grantor_did)
        _check_peer_id("grantor_device", self.grantor_device)
        check_content_id(self.grant_id)
        check_content_id(self.acu_id)
        _check_uint("revoked_at_ms", self.revoked_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        grant: SharingGrant,
        revoked_at_ms: int,
    ) -> Self:
        """A revocation of `grant`, signed by `signing_key`, a device of the grant's grantor.

        Raises `Irrevocable` for a GLOBAL grant, `LocalProtocolError` for a value the record
        cannot hold.
        """
        if not isinstance(grant, SharingGrant):
            raise LocalProtocolError(f"grant is a {type(grant).__name__}, expected SharingGrant")
        if not grant.revocable:
            raise Irrevocable(f"grant {grant.id} is global: it can never be revoked")
        try:
            unsigned = cls(
                grantor_did=grant.grantor_did,
                grantor_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                grant_id=grant.id,
                acu_id=grant.acu_id,
                revoked_at_ms=revoked_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this revocation: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @cached_property
    def id(self) -> str:
        """The content id of the signed bytes."""
        return content_id_of_bytes(self.signed_bytes())

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": REVOCATION_TYPE,
            "grantor_did": self.grantor_did,
            "grantor_device": self.grantor_device,
            "grant_id": self.grant_id,
            "acu_id": self.acu_id,
            "revoked_at_ms": self.revoked_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over (and the id is the content id of)."""
        return canonical_encode(self._unsigned_fields())

    def verify(self) -> None:
        """Raise `BadSignature` unless `grantor_device`'s key signed this revocation."""
        _verify(
            ed25519_public_key_from_peer_id(self.grantor_device),
            self.signed_bytes(),
            self.signature,
        )

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(data, REVOCATION_TYPE, _REVOCATION_FIELDS)
        return cls(
            grantor_did=_take(fields, "grantor_did", str),
            grantor_device=_take(fields, "grantor_device", str),
            grant_id=_take(fields, "grant_id", str),
            acu_id=_take(fields, "acu_id", str),
            revoked_at_ms=_take(fields, "revoked_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


def check_revocation(revocation: GrantRevocation, grant: SharingGrant) -> None:
    """Raise unless `revocation` may revoke `grant`: `RevocationMismatch` if it names another
    grant, `Irrevocable` if the grant is GLOBAL, `RevocationMismatch` if it is not the grantor's
    or names another ACU. Signatures are not checked here (`verify` each record)."""
    if revocation.grant_id != grant.id:
        raise RevocationMismatch(
            f"the revocation names grant {revocation.grant_id}, not {grant.id}"
        )
    if not grant.revocable:
        raise Irrevocable(f"grant {grant.id} is global: it can never be revoked")
    if revocation.grantor_did != grant.grantor_did:
        raise RevocationMismatch("only the grantor may revoke a grant")
    if revocation.acu_id != grant.acu_id:
        raise RevocationMismatch("the revocation names another ACU than its grant")


# --- circles --------------------------------------------------------------------------------------


def circle_id(owner_did: str, salt: bytes) -> str:
    """The id of a new circle of `owner_did`; `salt` is `CIRCLE_SALT_LENGTH` random bytes."""
    try:
        _check_did("owner_did", owner_did)
        _check_bytes("salt", salt, CIRCLE_SALT_LENGTH)
    except MalformedInput as err:
        raise LocalProtocolError(f"cannot name this circle: {err}") from err
    return content_id({"kind": "circle", "owner": owner_did, "salt": salt})


@dataclass(frozen=True, kw_only=True)
class CircleKeyVersion:
    """Version `version` (1, 2, ...) of circle `circle_id`'s membership and key: `members` (DIDs,
    strictly ascending, not the owner) hold this version's key, wrapped for each of them.

    Signed by `owner_device`, a device of `owner_did`. A later version replaces an earlier one;
    that the key is new for every version is the owner's to keep (see the module docstring).
    """

    circle_id: str
    owner_did: str
    owner_device: str
    version: int
    members: tuple[str, ...]
    issued_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        check_content_id(self.circle_id)
        _check_did("owner_did", self.owner_did)
        _check_peer_id("owner_device", self.owner_device)
        _check_uint("version", self.version)
        if self.version < 1:
            raise MalformedInput("a circle's first key version is 1")
        if not isinstance(self.members, tuple):
            raise MalformedInput(f"members is a {type(self.members).__name__}, expected a list")
        if len(self.members) > MAX_CIRCLE_MEMBERS:
            raise MalformedInput(
                f"members has {len(self.members)} DIDs, more than {MAX_CIRCLE_MEMBERS}"
            )
        for member in self.members:
            _check_did("members", member)
        if any(a >= b for a, b in itertools.pairwise(self.members)):
            raise MalformedInput("members is not strictly ascending (sorted, unique)")
        if self.owner_did in self.members:
            raise MalformedInput("the owner is not a member of its own circle")
        _check_uint("issued_at_ms", self.issued_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        circle_id: str,
        owner_did: str,
        version: int,
        members: tuple[str, ...] | frozenset[str],
        issued_at_ms: int,
    ) -> Self:
        """A version signed by `signing_key`, a device of `owner_did`; `members` sorted and
        deduplicated. `LocalProtocolError` for a value the record cannot hold."""
        try:
            unsigned = cls(
                circle_id=circle_id,
                owner_did=owner_did,
                owner_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                version=version,
                members=tuple(sorted(set(members))),
                issued_at_ms=issued_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except (MalformedInput, TypeError) as err:
            raise LocalProtocolError(f"cannot make this circle version: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    def removed_since(self, previous: "CircleKeyVersion") -> frozenset[str]:
        """The members of `previous` who are not members of this version."""
        return frozenset(previous.members) - frozenset(self.members)

    @cached_property
    def id(self) -> str:
        """The content id of the signed bytes."""
        return content_id_of_bytes(self.signed_bytes())

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": CIRCLE_KEY_TYPE,
            "circle_id": self.circle_id,
            "owner_did": self.owner_did,
            "owner_device": self.owner_device,
            "version": self.version,
            "members": list(self.members),
            "issued_at_ms": self.issued_at_ms,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over (and the id is the content id of)."""
        return canonical_encode(self._unsigned_fields())

    def verify(self) -> None:
        """Raise `BadSignature` unless `owner_device`'s key signed this version."""
        _verify(
            ed25519_public_key_from_peer_id(self.owner_device), self.signed_bytes(), self.signature
        )

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(data, CIRCLE_KEY_TYPE, _CIRCLE_KEY_FIELDS)
        return cls(
            circle_id=_take(fields, "circle_id", str),
            owner_did=_take(fields, "owner_did", str),
            owner_device=_take(fields, "owner_device", str),
            version=_take(fields, "version", int),
            members=tuple(_take(fields, "members", list)),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


def _take_optional(fields: dict[str, object], name: str, kind: type[_T]) -> _T | None:
    return None if fields[name] is None else _take(fields, name, kind)
