"""The device and identity commands, as blocking functions of the database (the twin of
node/vault_ops.py, run the same two ways: behind the control API or straight on the data dir).

`rotate_identity` also replaces the identity key file, crash-safely: the new key is written next
to the old one first (`identity.key.next`), the rotation op is committed, then the new file
replaces the old (`finish_rotation`, which `load_identity_key` also runs, so a crash between the
two steps is finished on the next use: the database says which key is current).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nacl.signing
from peewee import SqliteDatabase

from node.errors import NodeError
from node.keys import KeyFile, identity_key_file
from protocols.peer_id import ed25519_public_key_from_peer_id
from protocols.trust import DeviceStatus
from store import devices
from store.identity import list_devices as stored_devices
from store.identity import load_identity
from store.vault_log import LocalSigner


class NoIdentityKey(NodeError):
    """This device does not hold the identity key (only the first device does)."""


def list_devices(db: SqliteDatabase, signer: LocalSigner) -> dict[str, Any]:
    state = devices.trust_state(db)
    rows = []
    for row in stored_devices(db):
        if row.did != state.did:
            continue
        rows.append(
            {
                "peer_id": row.peer_id,
                "status": row.status,
                "approved_by": row.approved_by,
                "trust_chain": list(row.trust_chain),
                "approved_at_ms": row.created_at_ms,
                "revoked_at_ms": row.revoked_at_ms,
                "revoked_by": row.revoked_by,
                "last_counted_seq": row.cut_seq,
                "this_device": row.peer_id == signer.device,
            }
        )
    return {
        "did": state.did,
        "identity_key_version": state.keys.current.version,
        "devices": rows,
    }


def plan_revocation(db: SqliteDatabase, signer: LocalSigner, peer_id: str) -> dict[str, Any]:
    plan = devices.plan_revocation(db, signer, peer_id)
    return {"target": plan.target, "cascade": list(plan.cascade), "cuts": plan.cuts}


def revoke_device(
    db: SqliteDatabase, signer: LocalSigner, peer_id: str, now_ms: int
) -> dict[str, Any]:
    plan = devices.revoke(db, signer, peer_id, now_ms)
    return {"revoked": plan.target, "cascade": list(plan.cascade), "cuts": plan.cuts}


def approve_device(
    db: SqliteDatabase, signer: LocalSigner, peer_id: str, now_ms: int
) -> dict[str, Any]:
    public_key = ed25519_public_key_from_peer_id(peer_id)
    devices.certify(db, signer, public_key, now_ms)
    status = devices.trust_state(db).devices[peer_id].status
    return {"approved": peer_id, "status": status.value, "trusted": status is DeviceStatus.TRUSTED}


def rotate_identity(
    db: SqliteDatabase, signer: LocalSigner, data_dir: Path, now_ms: int
) -> dict[str, Any]:
    current = load_identity_key(db, data_dir)
    new_key = nacl.signing.SigningKey.generate()
    pending = _next_key_file(data_dir)
    if pending.path.exists():
        pending.path.unlink()  # a rotation that never committed (load_identity_key checked)
    pending.write_new(bytes(new_key))
    try:
        rotation = devices.rotate_identity(db, signer, current, new_key, now_ms)
    except BaseException:
        pending.path.unlink(missing_ok=True)
        raise
    finish_rotation(db, data_dir)
    return {
        "did": rotation.did,
        "key_version": rotation.key_version,
        "rotated_at_ms": rotation.rotated_at_ms,
    }


def load_identity_key(db: SqliteDatabase, data_dir: Path) -> nacl.signing.SigningKey:
    """The current identity key, from its file; finishes a rotation a crash interrupted."""
    finish_rotation(db, data_dir)
    key_file = identity_key_file(data_dir)
    if not key_file.path.exists():
        raise NoIdentityKey(
            "this device does not hold the identity key (a device that joined by pairing never "
            "does): run this on the first device of your identity"
        )
    return nacl.signing.SigningKey(key_file.read())


def finish_rotation(db: SqliteDatabase, data_dir: Path) -> None:
    pending = _next_key_file(data_dir)
    if not pending.path.exists():
        return
    identity = load_identity(db)
    key = nacl.signing.SigningKey(pending.read())
    if identity is not None and bytes(key.verify_key) == identity.signing_public_key:
        # The old key is retired: nothing it signs from now on counts, so it is not kept.
        os.replace(pending.path, identity_key_file(data_dir).path)
    else:
        pending.path.unlink()


def _next_key_file(data_dir: Path) -> KeyFile:
    current = identity_key_file(data_dir)
    return KeyFile(current.path.with_name(current.path.name + ".next"), current.kind)
