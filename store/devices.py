"""This device's changes to the DID's devices and keys: certify, revoke, rotate.

Each writes one op of the local device's log (store.trust_state describes them) and the trust
state it gives, in one transaction, and refuses with `TrustRefused` what the records would not
count anyway (protocols.trust), so a person learns it at once rather than from a silent no-op.
"""

from dataclasses import dataclass

import nacl.signing
from peewee import SqliteDatabase

from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.oplog import OpKind
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.trust import DeviceStatus, TrustState, cascade_of
from store.database import write_transaction
from store.errors import TrustRefused
from store.trust_state import DEVICE, IDENTITY, all_certificates, load_trust
from store.vault_log import LocalLog, LocalSigner
from store.vault_sql import connection


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """What a device needs to act for the DID: its certificate, the certificates of the chain
    above it (its approver's first) and the identity key rotations, as wire bytes."""

    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]

    def payload(self) -> dict[str, object]:
        return {
            "chain": list(self.chain),
            "rotations": list(self.rotations),
            "certificate": self.certificate,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RevocationPlan:
    """What revoking `target` does: the devices it cascades to, and each one's cut."""

    target: str
    cascade: tuple[str, ...]
    cuts: dict[str, int]


def trust_state(db: SqliteDatabase) -> TrustState:
    with db.atomic():
        return load_trust(connection(db))


def introduce(
    db: SqliteDatabase, signer: LocalSigner, credentials: Credentials, now_ms: int
) -> None:
    """Write this device's first op: its own certificate and chain, so that any replica can
    check its ops without having seen anything else of the DID (init and join)."""
    with write_transaction(db):
        log = LocalLog(connection(db), signer, now_ms)
        log.write(DEVICE, signer.device, OpKind.CREATE, credentials.payload())
        log.close()


def certify(
    db: SqliteDatabase, signer: LocalSigner, device_public_key: bytes, now_ms: int
) -> Credentials:
    """Approve the device with `device_public_key` (a new one, or one to approve again after a
    revocation cascaded to it) and return what it needs to act for the DID."""
    with write_transaction(db):
        conn = connection(db)
        state = load_trust(conn)
        _require_trusted(state, signer.device)
        peer_id = peer_id_from_ed25519_public_key(device_public_key)
        existing = state.devices.get(peer_id)
        if existing is not None and existing.status is DeviceStatus.REVOKED:
            raise TrustRefused(
                f"device {peer_id} is revoked; a revoked device is never approved again"
            )
        if peer_id == signer.device:
            raise TrustRefused("a device cannot approve itself")
        certificate = DeviceCertificate.create(
            signing_key=signer.signing_key,
            did=signer.author,
            device_public_key=device_public_key,
            approver=signer.device,
            issued_at_ms=now_ms,
        )
        credentials = Credentials(
            certificate=certificate.to_wire(),
            chain=chain_of(state, signer.device),
            rotations=tuple(rotation.to_wire() for rotation in state.keys.rotations),
        )
        log = LocalLog(conn, signer, now_ms)
        log.write(DEVICE, peer_id, OpKind.CREATE, credentials.payload())
        log.close()
        return credentials


def credentials_of(state: TrustState, peer_id: str) -> Credentials:
    """The credentials of a trusted device, from the state."""
    certificate = state.devices[peer_id].certificate
    assert certificate is not None
    return Credentials(
        certificate=certificate.to_wire(),
        chain=chain_of(state, certificate.approver),
        rotations=tuple(rotation.to_wire() for rotation in state.keys.rotations),
    )


def chain_of(state: TrustState, approver: str) -> tuple[bytes, ...]:
    """The certificates from `approver` (a trusted device, or the DID) up to the identity key."""
    chain: list[bytes] = []
    current = approver
    while current != state.did:
        certificate = state.devices[current].certificate
        assert certificate is not None
        chain.append(certificate.to_wire())
        current = certificate.approver
    return tuple(chain)


def plan_revocation(db: SqliteDatabase, signer: LocalSigner, target: str) -> RevocationPlan:
    """What revoking `target` would do; `TrustRefused` if this device may not revoke it."""
    with db.atomic():
        return _plan(db, signer, load_trust(connection(db)), target)


def revoke(db: SqliteDatabase, signer: LocalSigner, target: str, now_ms: int) -> RevocationPlan:
    """Revoke `target`: one op naming the last seq this vault holds of it and of each device of
    the cascade; their later ops are refused everywhere it replicates."""
    with write_transaction(db):
        conn = connection(db)
        plan = _plan(db, signer, load_trust(conn), target)
        log = LocalLog(conn, signer, now_ms)
        log.write(DEVICE, target, OpKind.UPDATE, {"cuts": plan.cuts})
        log.close()
        return plan


def _plan(
    db: SqliteDatabase, signer: LocalSigner, state: TrustState, target: str
) -> RevocationPlan:
    _require_trusted(state, signer.device)
    device = state.devices.get(target)
    if device is None:
        raise TrustRefused(f"{target} is not a device of {state.did}: see `vivim-node device list`")
    if target == signer.device:
        raise TrustRefused("a device cannot revoke itself: run `device revoke` on another device")
    if device.status is DeviceStatus.REVOKED:
        raise TrustRefused(f"device {target} is already revoked")
    if target in state.devices[signer.device].chain:
        raise TrustRefused(
            f"device {target} approved this device (it is on this device's chain): revoke it "
            "from a device it did not approve, such as the first one"
        )
    conn = connection(db)
    cascade = tuple(cascade_of(state, target, all_certificates(conn)))
    cuts = {}
    for peer_id in (target, *cascade):
        row = conn.execute(
            "SELECT last_seq FROM device_log WHERE device = ?", (peer_id,)
        ).fetchone()
        cuts[peer_id] = 0 if row is None else int(row[0])
    return RevocationPlan(target=target, cascade=cascade, cuts=dict(sorted(cuts.items())))


def rotate_identity(
    db: SqliteDatabase,
    signer: LocalSigner,
    identity_key: nacl.signing.SigningKey,
    new_key: nacl.signing.SigningKey,
    now_ms: int,
) -> IdentityKeyRotation:
    """Replace the identity key with `new_key`, signed by `identity_key` (the current one)."""
    with write_transaction(db):
        conn = connection(db)
        state = load_trust(conn)
        _require_trusted(state, signer.device)
        current = state.keys.current
        if bytes(identity_key.verify_key) != current.public_key:
            raise TrustRefused(
                f"this device's identity key is not the current one (version {current.version}): "
                "rotate on the device that holds it"
            )
        if now_ms <= current.valid_from_ms:
            raise TrustRefused(
                "the clock is at or before the current identity key's start: check the clock"
            )
        rotation = IdentityKeyRotation.create(
            signing_key=identity_key,
            did=signer.author,
            new_public_key=bytes(new_key.verify_key),
            key_version=current.version + 1,
            rotated_at_ms=now_ms,
        )
        log = LocalLog(conn, signer, now_ms)
        log.write(IDENTITY, signer.author, OpKind.UPDATE, {"rotation": rotation.to_wire()})
        log.close()
        return rotation


def _require_trusted(state: TrustState, device: str) -> None:
    if not state.is_trusted(device):
        raise TrustRefused(
            f"this device ({device}) is not trusted by {state.did} any more: it was revoked, or "
            "the device that approved it was; another device can approve it again"
        )
