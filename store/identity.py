"""The vault owner's identity and devices: blocking functions the node runs on its database threads.

Rows cross the layer boundary as frozen dataclasses, never as peewee model instances. Every
write runs in one transaction that takes the write lock up front (`write_transaction`).
"""

import json
from dataclasses import dataclass

from peewee import EXCLUDED, SqliteDatabase, fn

from store.database import write_transaction
from store.errors import IdentityConflict
from store.models import Device, Identity

PUBLIC_KEY_SIZE = 32  # Ed25519 and X25519 public keys


def _check_key(name: str, key: bytes) -> None:
    if len(key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"{name} must be {PUBLIC_KEY_SIZE} bytes, not {len(key)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetiredKey:
    """An identity signing key the identity used before its current one (a key rotation)."""

    public_key: bytes
    key_version: int
    retired_at_ms: int

    def __post_init__(self) -> None:
        _check_key("public_key", self.public_key)


@dataclass(frozen=True, kw_only=True, slots=True)
class IdentityRow:
    """The vault owner's identity as stored."""

    did: str
    signing_public_key: bytes
    encryption_public_key: bytes
    encryption_key_binding: bytes  # wire bytes of the signed record binding the key to the DID
    created_at_ms: int
    key_version: int = 1
    previous_keys: tuple[RetiredKey, ...] = ()

    def __post_init__(self) -> None:
        _check_key("signing_public_key", self.signing_public_key)
        _check_key("encryption_public_key", self.encryption_public_key)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceRow:
    """A device approved to act for the identity `did`."""

    peer_id: str
    did: str
    public_key: bytes
    certificate: bytes  # wire bytes of the signed device certificate
    trust_chain: tuple[str, ...]  # approvers from this device up to the identity key
    approved_by: str
    created_at_ms: int
    revoked_at_ms: int | None = None
    status: str = "trusted"  # protocols.trust.DeviceStatus
    revoked_by: str | None = None
    cut_seq: int | None = None  # while not trusted, its ops count up to this seq only

    def __post_init__(self) -> None:
        _check_key("public_key", self.public_key)

    def accepts(self, seq: int) -> bool:
        """Whether an op of this device at `seq` counts (protocols.trust, cuts)."""
        return self.status == "trusted" or (self.cut_seq is not None and seq <= self.cut_seq)


def save_identity(db: SqliteDatabase, identity: IdentityRow) -> None:
    """Store the vault's identity, or replace it in place (a key rotation keeps the same DID).

    A vault belongs to one identity: saving a different DID raises `IdentityConflict`.
    """
    previous_keys = json.dumps(
        [
            {
                "public_key": key.public_key.hex(),
                "key_version": key.key_version,
                "retired_at_ms": key.retired_at_ms,
            }
            for key in identity.previous_keys
        ],
        separators=(",", ":"),
    )
    with write_transaction(db):
        other = Identity.select(Identity.did).where(Identity.did != identity.did).limit(1)
        for (stored,) in other.tuples().execute(db):
            raise IdentityConflict(stored=stored, offered=identity.did)
        Identity.insert(
            did=identity.did,
            signing_public_key=identity.signing_public_key,
            encryption_public_key=identity.encryption_public_key,
            encryption_key_binding=identity.encryption_key_binding,
            key_version=identity.key_version,
            previous_keys=previous_keys,
            created_at_ms=identity.created_at_ms,
        ).on_conflict(
            conflict_target=[Identity.did],
            update={
                Identity.signing_public_key: EXCLUDED.signing_public_key,
                Identity.encryption_public_key: EXCLUDED.encryption_public_key,
                Identity.encryption_key_binding: EXCLUDED.encryption_key_binding,
                Identity.key_version: EXCLUDED.key_version,
                Identity.previous_keys: EXCLUDED.previous_keys,
                Identity.created_at_ms: EXCLUDED.created_at_ms,
            },
        ).execute(db)


def load_identity(db: SqliteDatabase) -> IdentityRow | None:
    """The vault's identity, or None before one was saved."""
    for row in Identity.select().limit(1).dicts().execute(db):
        return IdentityRow(
            did=row["did"],
            signing_public_key=bytes(row["signing_public_key"]),
            encryption_public_key=bytes(row["encryption_public_key"]),
            encryption_key_binding=bytes(row["encryption_key_binding"]),
            key_version=row["key_version"],
            previous_keys=tuple(
                RetiredKey(
                    public_key=bytes.fromhex(key["public_key"]),
                    key_version=key["key_version"],
                    retired_at_ms=key["retired_at_ms"],
                )
                for key in json.loads(row["previous_keys"])
            ),
            created_at_ms=row["created_at_ms"],
        )
    return None


def save_device(db: SqliteDatabase, device: DeviceRow) -> None:
    """Store a device, or replace the stored one with the same peer id.

    Revocation is permanent: once a device is stored as revoked, saving it again (say from an old
    certificate) keeps it revoked at the first revocation time.
    """
    with write_transaction(db):
        Device.insert(
            peer_id=device.peer_id,
            did=device.did,
            public_key=device.public_key,
            certificate=device.certificate,
            trust_chain=json.dumps(list(device.trust_chain), separators=(",", ":")),
            approved_by=device.approved_by,
            created_at_ms=device.created_at_ms,
            revoked_at_ms=device.revoked_at_ms,
            status=device.status,
            revoked_by=device.revoked_by,
            cut_seq=device.cut_seq,
        ).on_conflict(
            conflict_target=[Device.peer_id],
            update={
                Device.did: EXCLUDED.did,
                Device.public_key: EXCLUDED.public_key,
                Device.certificate: EXCLUDED.certificate,
                Device.trust_chain: EXCLUDED.trust_chain,
                Device.approved_by: EXCLUDED.approved_by,
                Device.created_at_ms: EXCLUDED.created_at_ms,
                Device.revoked_at_ms: fn.COALESCE(Device.revoked_at_ms, EXCLUDED.revoked_at_ms),
                Device.status: EXCLUDED.status,
                Device.revoked_by: EXCLUDED.revoked_by,
                Device.cut_seq: EXCLUDED.cut_seq,
            },
        ).execute(db)


def list_devices(db: SqliteDatabase) -> list[DeviceRow]:
    """Every stored device, revoked ones included, oldest first."""
    query = Device.select().order_by(Device.created_at_ms, Device.peer_id).dicts()
    return [
        DeviceRow(
            peer_id=row["peer_id"],
            did=row["did"],
            public_key=bytes(row["public_key"]),
            certificate=bytes(row["certificate"]),
            trust_chain=tuple(json.loads(row["trust_chain"])),
            approved_by=row["approved_by"],
            created_at_ms=row["created_at_ms"],
            revoked_at_ms=row["revoked_at_ms"],
            status=row["status"],
            revoked_by=row["revoked_by"],
            cut_seq=row["cut_seq"],
        )
        for row in query.execute(db)
    ]
