"""Signed mailbox records: a registration with a relay, and the relay list a person advertises.

A person who wants mail held while offline registers with one or more relays. The
`RelayRegistration` names the relay, who may deposit (`allowed_senders`; the recipient's own
devices always may), a quota and an expiry; the relay keeps it and refuses deposits it does not
allow. The `RelayList` says where to deposit: it is part of the person's replicated profile, and
a sender deposits at every relay on it; a higher `version` replaces a lower one.

Both records are signed, like `protocols.identity_records`, with Ed25519 over the canonical CBOR
of every field but the signature plus a `type` entry (domain separation: a signature made for one
record type never verifies as another). The signer is a device of the recipient DID, named in
the record by its peer id, whose key the peer id holds, so `verify` needs no key argument. Whether
that device is a certified, unrevoked device of the DID is decided by the caller against the
trust chain, as is whether the record has expired (there is no clock here).

Records are validated on construction, so a record that exists is well formed. Lists have one
spelling: `allowed_senders` is strictly ascending (so unique), relays are unique by peer id.
"""

import itertools
from dataclasses import dataclass, replace
from typing import Self

import nacl.signing

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import InvalidPeerId, LocalProtocolError, MalformedInput
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
from protocols.pairing_code import _check_addrs
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key

__all__ = [
    "MAX_ALLOWED_SENDERS",
    "MAX_RELAYS",
    "MAX_REVOKED_DEVICES",
    "REGISTRATION_TYPE",
    "RELAY_LIST_TYPE",
    "RelayList",
    "RelayRegistration",
]

REGISTRATION_TYPE = "vivim.mailbox.registration.v1"
RELAY_LIST_TYPE = "vivim.mailbox.relay_list.v1"
# A registration names the people who may deposit; 256 DIDs (about 15 KB) is more than a person
# lists by hand, and keeps a Register message far inside the mailbox frame bound.
MAX_ALLOWED_SENDERS = 256
# Relays a person advertises; every sender deposits at each, so a handful is what makes sense.
MAX_RELAYS = 16
# Revoked devices a registration names: far more than a person ever revokes.
MAX_REVOKED_DEVICES = 256

_REGISTRATION_FIELDS = (
    "recipient_did",
    "device",
    "relay",
    "allowed_senders",
    "revoked_devices",
    "quota_bytes",
    "expires_at_ms",
    "issued_at_ms",
    "signature",
)
_RELAY_LIST_FIELDS = ("recipient_did", "relays", "version", "issued_at_ms", "device", "signature")


@dataclass(frozen=True, kw_only=True)
class RelayRegistration:
    """`recipient_did` asks `relay` to hold its mail until `expires_at_ms`, at most `quota_bytes`
    of it, deposited by `allowed_senders` (DIDs) or the recipient's own devices (empty tuple:
    those alone). Signed by `device`, a device of `recipient_did`.

    `revoked_devices` are the DID's devices revoked when it was signed: a relay checks a device
    by its certificate chain alone and never sees the vault, so this is how it learns that a
    device it would otherwise accept may no longer fetch, ack or deposit for the DID (a node
    registers again at its relays after a revocation)."""

    recipient_did: str
    device: str
    relay: str
    allowed_senders: tuple[str, ...]
    revoked_devices: tuple[str, ...]
    quota_bytes: int
    expires_at_ms: int
    issued_at_ms: int
    signature: bytes
    # Until then, anyone may deposit too: the recipient has invite codes out, and whoever uses
    # one must be able to reach them while they are away (a friend request). None: only
    # `allowed_senders`. On the wire only when set, so registrations without it keep their
    # bytes (and signatures).
    open_until_ms: int | None = None

    def __post_init__(self) -> None:
        _check_did("recipient_did", self.recipient_did)
        _check_peer_id("device", self.device)
        _check_peer_id("relay", self.relay)
        if not isinstance(self.allowed_senders, tuple):
            raise MalformedInput(
                f"allowed_senders is a {type(self.allowed_senders).__name__}, expected a list"
            )
        if len(self.allowed_senders) > MAX_ALLOWED_SENDERS:
            raise MalformedInput(
                f"allowed_senders has {len(self.allowed_senders)} DIDs, "
                f"more than {MAX_ALLOWED_SENDERS}"
            )
        for sender in self.allowed_senders:
            _check_did("allowed_senders", sender)
        if any(a >= b for a, b in itertools.pairwise(self.allowed_senders)):
            raise MalformedInput("allowed_senders is not strictly ascending (sorted, unique)")
        if not isinstance(self.revoked_devices, tuple):
            raise MalformedInput(
                f"revoked_devices is a {type(self.revoked_devices).__name__}, expected a list"
            )
        if len(self.revoked_devices) > MAX_REVOKED_DEVICES:
            raise MalformedInput(f"revoked_devices has more than {MAX_REVOKED_DEVICES} entries")
        for device in self.revoked_devices:
            _check_peer_id("revoked_devices", device)
        if any(a >= b for a, b in itertools.pairwise(self.revoked_devices)):
            raise MalformedInput("revoked_devices is not strictly ascending (sorted, unique)")
        _check_uint("quota_bytes", self.quota_bytes)
        if self.quota_bytes == 0:
            raise MalformedInput("quota_bytes is 0: a registration holds at least one byte")
        _check_uint("expires_at_ms", self.expires_at_ms)
        _check_uint("issued_at_ms", self.issued_at_ms)
        if self.expires_at_ms <= self.issued_at_ms:
            raise MalformedInput("expires_at_ms is not after issued_at_ms")
        if self.open_until_ms is not None:
            _check_uint("open_until_ms", self.open_until_ms)
            if not self.issued_at_ms < self.open_until_ms <= self.expires_at_ms:
                raise MalformedInput("open_until_ms is not after issuing and by the expiry")
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        recipient_did: str,
        relay: str,
        allowed_senders: tuple[str, ...] = (),
        revoked_devices: tuple[str, ...] = (),
        quota_bytes: int,
        expires_at_ms: int,
        issued_at_ms: int,
        open_until_ms: int | None = None,
    ) -> Self:
        """A registration signed by `signing_key`, a device of `recipient_did` (the device id is
        its peer id); `allowed_senders` sorted and deduplicated. `LocalProtocolError` for a
        value the record cannot hold."""
        try:
            unsigned = cls(
                recipient_did=recipient_did,
                device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                relay=relay,
                allowed_senders=tuple(sorted(set(allowed_senders))),
                revoked_devices=tuple(sorted(set(revoked_devices))),
                quota_bytes=quota_bytes,
                expires_at_ms=expires_at_ms,
                issued_at_ms=issued_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
                open_until_ms=open_until_ms,
            )
        except (MalformedInput, TypeError) as err:
            raise LocalProtocolError(f"cannot make this registration: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    def allows_sender(self, sender_did: str, now_ms: int | None = None) -> bool:
        """Whether devices of `sender_did` may deposit: the recipient itself, a listed DID, or
        anyone while the registration is open (at `now_ms`)."""
        if sender_did == self.recipient_did or sender_did in self.allowed_senders:
            return True
        return self.open_until_ms is not None and now_ms is not None and now_ms < self.open_until_ms

    def is_expired(self, now_ms: int) -> bool:
        """Whether the registration is expired at `now_ms` (valid strictly before its expiry)."""
        return now_ms >= self.expires_at_ms

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": REGISTRATION_TYPE,
            "recipient_did": self.recipient_did,
            "device": self.device,
            "relay": self.relay,
            "allowed_senders": list(self.allowed_senders),
            "revoked_devices": list(self.revoked_devices),
            "quota_bytes": self.quota_bytes,
            "expires_at_ms": self.expires_at_ms,
            "issued_at_ms": self.issued_at_ms,
            **({} if self.open_until_ms is None else {"open_until_ms": self.open_until_ms}),
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return canonical_encode(self._unsigned_fields())

    def verify(self) -> None:
        """Raise `BadSignature` unless `device`'s key (the one its peer id holds) signed this."""
        _verify(ed25519_public_key_from_peer_id(self.device), self.signed_bytes(), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        value = canonical_decode(data)
        opened = isinstance(value, dict) and "open_until_ms" in value
        names = (*_REGISTRATION_FIELDS, "open_until_ms") if opened else _REGISTRATION_FIELDS
        fields = _decode_fields(data, REGISTRATION_TYPE, names)
        return cls(
            open_until_ms=_take(fields, "open_until_ms", int) if opened else None,
            recipient_did=_take(fields, "recipient_did", str),
            device=_take(fields, "device", str),
            relay=_take(fields, "relay", str),
            allowed_senders=tuple(_take(fields, "allowed_senders", list)),
            revoked_devices=tuple(_take(fields, "revoked_devices", list)),
            quota_bytes=_take(fields, "quota_bytes", int),
            expires_at_ms=_take(fields, "expires_at_ms", int),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


@dataclass(frozen=True, kw_only=True)
class RelayList:
    """Where to deposit mail for `recipient_did`: `relays` as (relay peer id, its multiaddrs),
    in the recipient's order of preference. Version `version` replaces any lower one; an empty
    list withdraws every relay. Signed by `device`, a device of `recipient_did`."""

    recipient_did: str
    relays: tuple[tuple[str, tuple[str, ...]], ...]
    version: int
    issued_at_ms: int
    device: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("recipient_did", self.recipient_did)
        _check_relays(self.relays)
        _check_uint("version", self.version)
        _check_uint("issued_at_ms", self.issued_at_ms)
        _check_peer_id("device", self.device)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        recipient_did: str,
        relays: tuple[tuple[str, tuple[str, ...]], ...],
        version: int,
        issued_at_ms: int,
    ) -> Self:
        """A relay list signed by `signing_key`, a device of `recipient_did`; raises
        `LocalProtocolError` for a value the record cannot hold."""
        try:
            unsigned = cls(
                recipient_did=recipient_did,
                relays=relays,
                version=version,
                issued_at_ms=issued_at_ms,
                device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this relay list: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @property
    def relay_peer_ids(self) -> tuple[str, ...]:
        return tuple(relay for relay, _ in self.relays)

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": RELAY_LIST_TYPE,
            "recipient_did": self.recipient_did,
            "relays": [[relay, list(addrs)] for relay, addrs in self.relays],
            "version": self.version,
            "issued_at_ms": self.issued_at_ms,
            "device": self.device,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return canonical_encode(self._unsigned_fields())

    def verify(self) -> None:
        """Raise `BadSignature` unless `device`'s key (the one its peer id holds) signed this."""
        _verify(ed25519_public_key_from_peer_id(self.device), self.signed_bytes(), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(data, RELAY_LIST_TYPE, _RELAY_LIST_FIELDS)
        relays = _take(fields, "relays", list)
        return cls(
            recipient_did=_take(fields, "recipient_did", str),
            # Arrays become tuples; whatever is not the right shape is refused by the checks.
            relays=tuple(
                (entry[0], tuple(entry[1]) if isinstance(entry[1], list) else entry[1])
                if isinstance(entry, list) and len(entry) == 2
                else entry
                for entry in relays
            ),
            version=_take(fields, "version", int),
            issued_at_ms=_take(fields, "issued_at_ms", int),
            device=_take(fields, "device", str),
            signature=_take(fields, "signature", bytes),
        )


def _check_peer_id(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    try:
        ed25519_public_key_from_peer_id(value)
    except InvalidPeerId as err:
        raise InvalidPeerId(f"{name} is not a device peer id: {err}") from err


def _check_relays(relays: object) -> None:
    if not isinstance(relays, tuple):
        raise MalformedInput(f"relays is a {type(relays).__name__}, expected a list")
    if len(relays) > MAX_RELAYS:
        raise MalformedInput(f"relays has {len(relays)} entries, more than {MAX_RELAYS}")
    seen: set[str] = set()
    for entry in relays:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise MalformedInput("a relay entry is a pair [peer id, [multiaddr, ...]]")
        relay, addrs = entry
        _check_peer_id("a relay", relay)
        if relay in seen:
            raise MalformedInput(f"relay {relay} is listed twice")
        seen.add(relay)
        _check_addrs(addrs)  # 1 to MAX_ADDRS multiaddrs, as in a pairing code
