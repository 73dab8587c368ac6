"""Devices and identity keys as ops: introduce, certify, revoke (cascade, re-approval), rotate."""

from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation, stored_ops

from protocols.identity_records import EncryptionKeyBinding
from protocols.trust import DeviceNotTrusted, DeviceStatus
from protocols.vault_records import conversation_id
from store.database import open_database
from store.devices import (
    Credentials,
    certify,
    introduce,
    plan_revocation,
    revoke,
    rotate_identity,
    trust_state,
)
from store.errors import TrustRefused
from store.identity import IdentityRow, list_devices, load_identity, save_device, save_identity
from store.vault import apply_ops, import_conversation, set_title, verify_vault

NOW = T0 + 3_600_000


@pytest.fixture
def owner() -> Owner:
    return Owner(count=4)


def new_vault(path: Path, owner: Owner) -> peewee.SqliteDatabase:
    """A vault with the owner's identity row and nothing else: a device about to join."""
    db = open_database(path)
    binding = EncryptionKeyBinding.create(
        signing_key=owner.identity_key,
        did=owner.did,
        encryption_public_key=bytes(32),
        key_version=1,
        issued_at_ms=T0 - 2000,
    )
    save_identity(
        db,
        IdentityRow(
            did=owner.did,
            signing_public_key=bytes(owner.identity_key.verify_key),
            encryption_public_key=bytes(32),
            encryption_key_binding=binding.to_wire(),
            created_at_ms=T0 - 2000,
        ),
    )
    return db


@pytest.fixture
def vaults(tmp_path: Path, owner: Owner) -> Iterator[list[peewee.SqliteDatabase]]:
    """Device 0 (the first, certified by the identity key), devices 1 and 2 (not joined yet),
    and a vault that only receives."""
    dbs = [new_vault(tmp_path / f"vault-{n}.db", owner) for n in range(4)]
    first = owner.devices[0]
    save_device(dbs[0], first.row)
    introduce(
        dbs[0],
        first.signer,
        Credentials(certificate=first.row.certificate, chain=(), rotations=()),
        T0,
    )
    yield dbs
    for db in dbs:
        db.close()


def join(vaults: list[peewee.SqliteDatabase], owner: Owner, device: int, by: int) -> None:
    """Device `by` approves device `device`, which introduces itself in its own vault."""
    credentials = certify(
        vaults[by],
        owner.devices[by].signer,
        bytes(owner.devices[device].key.verify_key),
        T0 + device,
    )
    introduce(vaults[device], owner.devices[device].signer, credentials, T0 + device)


def sync(target: peewee.SqliteDatabase, *sources: peewee.SqliteDatabase, owner: Owner) -> None:
    for source in sources:
        report = apply_ops(target, stored_ops(source), NOW, local_device=owner.devices[3].peer_id)
        assert report.refused == (), report.refused


def statuses(db: peewee.SqliteDatabase) -> dict[str, str]:
    return {row.peer_id: row.status for row in list_devices(db)}


def test_a_device_introduces_itself_with_its_chain_to_a_vault_that_knew_nothing_of_it(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    join(vaults, owner, 1, by=0)
    join(vaults, owner, 2, by=1)
    import_conversation(vaults[2], owner.devices[2].signer, conversation(1), T0 + 10)
    # The receiving vault sees device 2's ops only: its first op carries the chain.
    sync(vaults[3], vaults[2], owner=owner)
    rows = {row.peer_id: row for row in list_devices(vaults[3])}
    two = rows[owner.devices[2].peer_id]
    assert two.status == "trusted"
    assert two.trust_chain == (owner.devices[1].peer_id, owner.devices[0].peer_id, owner.did)
    assert verify_vault(vaults[3], NOW) == []


def test_an_op_from_a_device_whose_certificate_does_not_chain_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner, tmp_path: Path
) -> None:
    stranger = Owner(count=1, seed=7)
    other = new_vault(tmp_path / "stranger.db", stranger)
    device = stranger.devices[0]
    save_device(other, device.row)
    introduce(
        other,
        device.signer,
        Credentials(certificate=device.row.certificate, chain=(), rotations=()),
        T0,
    )
    report = apply_ops(vaults[3], stored_ops(other), NOW, local_device=owner.devices[3].peer_id)
    assert [r.error.code for r in report.refused] == ["unknown_device"]
    assert list_devices(vaults[3]) == []
    other.close()


def test_revocation_lists_its_cascade_and_refuses_later_ops_until_reapproval(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    join(vaults, owner, 1, by=0)
    join(vaults, owner, 2, by=1)
    import_conversation(vaults[2], owner.devices[2].signer, conversation(1), T0 + 10)
    sync(vaults[0], vaults[1], vaults[2], owner=owner)
    two = owner.devices[2]
    plan = plan_revocation(vaults[0], owner.devices[0].signer, owner.devices[1].peer_id)
    assert plan.cascade == (two.peer_id,)
    held = len(stored_ops(vaults[2]))
    assert plan.cuts == {owner.devices[1].peer_id: 2, two.peer_id: held}

    revoke(vaults[0], owner.devices[0].signer, owner.devices[1].peer_id, T0 + 20)
    assert statuses(vaults[0])[owner.devices[1].peer_id] == DeviceStatus.REVOKED
    assert statuses(vaults[0])[two.peer_id] == DeviceStatus.UNTRUSTED
    sync(vaults[3], vaults[0], owner=owner)

    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    set_title(vaults[2], two.signer, key, "written after the revocation", T0 + 30)
    later = stored_ops(vaults[2])[held:]
    report = apply_ops(vaults[3], later, NOW, local_device=owner.devices[3].peer_id)
    assert [type(r.error) for r in report.refused] == [DeviceNotTrusted]

    # Device 0 approves device 2 again: its later ops count once that replicates.
    certify(vaults[0], owner.devices[0].signer, bytes(two.key.verify_key), T0 + 40)
    sync(vaults[3], vaults[0], owner=owner)
    assert statuses(vaults[3])[two.peer_id] == DeviceStatus.TRUSTED
    assert apply_ops(vaults[3], later, NOW, local_device=owner.devices[3].peer_id).refused == ()
    assert statuses(vaults[3])[owner.devices[1].peer_id] == DeviceStatus.REVOKED
    for db in vaults:
        assert verify_vault(db, NOW) == []


@pytest.mark.parametrize(
    ("revoker", "target", "reason"),
    [(0, 0, "cannot revoke itself"), (2, 1, "approved this device"), (0, 3, "not a device")],
)
def test_revocations_a_device_may_not_make_are_refused_and_write_nothing(
    vaults: list[peewee.SqliteDatabase], owner: Owner, revoker: int, target: int, reason: str
) -> None:
    join(vaults, owner, 1, by=0)
    join(vaults, owner, 2, by=1)
    before = stored_ops(vaults[revoker])
    with pytest.raises(TrustRefused, match=reason):
        revoke(vaults[revoker], owner.devices[revoker].signer, owner.devices[target].peer_id, NOW)
    assert stored_ops(vaults[revoker]) == before


def test_a_revoked_device_cannot_be_approved_again(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    join(vaults, owner, 1, by=0)
    revoke(vaults[0], owner.devices[0].signer, owner.devices[1].peer_id, T0 + 20)
    with pytest.raises(TrustRefused, match="never approved again"):
        certify(vaults[0], owner.devices[0].signer, bytes(owner.devices[1].key.verify_key), NOW)


def test_identity_key_rotation_retires_the_old_key_and_replicates(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    new_key = nacl.signing.SigningKey(bytes([42]) * 32)
    with pytest.raises(TrustRefused, match="not the current one"):
        rotate_identity(vaults[0], owner.devices[0].signer, new_key, new_key, T0 + 5)
    rotate_identity(vaults[0], owner.devices[0].signer, owner.identity_key, new_key, T0 + 5)
    identity = load_identity(vaults[0])
    assert identity is not None and identity.key_version == 2
    assert identity.signing_public_key == bytes(new_key.verify_key)
    assert [(k.key_version, k.retired_at_ms) for k in identity.previous_keys] == [(1, T0 + 5)]
    # Certificates the old key signed before it retired still count, so device 0 stays
    # trusted, and a device it approves now carries the rotation in its chain.
    join(vaults, owner, 1, by=0)
    sync(vaults[3], vaults[1], owner=owner)
    assert trust_state(vaults[3]).keys.current.version == 2
    assert statuses(vaults[3])[owner.devices[1].peer_id] == DeviceStatus.TRUSTED
    assert verify_vault(vaults[0], NOW) == [] and verify_vault(vaults[3], NOW) == []
