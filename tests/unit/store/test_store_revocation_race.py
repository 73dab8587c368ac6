"""A revocation and the revoked device's later ops reach two vaults in opposite orders: both end
in the same state, which leaves those ops out (store.vault_fold.rebuild, EFFECTIVE_OPS)."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from test_store_devices import join, new_vault
from test_store_vault_support import T0, Owner, conversation, stored_ops

from protocols.vault_records import conversation_id
from store.devices import Credentials, certify, introduce, revoke
from store.identity import save_device
from store.vault import (
    apply_ops,
    edit_acu,
    get_conversation,
    import_conversation,
    list_acus,
    set_title,
    state_hash,
    verify_vault,
)

NOW = T0 + 3_600_000


@pytest.fixture
def owner() -> Owner:
    return Owner(count=4)


@pytest.fixture
def vaults(tmp_path: Path, owner: Owner) -> Iterator[list[peewee.SqliteDatabase]]:
    """Device 0 (first), device 1 (approved by it), and vaults 2 and 3 that only receive."""
    dbs = [new_vault(tmp_path / f"vault-{n}.db", owner) for n in range(4)]
    first = owner.devices[0]
    save_device(dbs[0], first.row)
    introduce(
        dbs[0],
        first.signer,
        Credentials(certificate=first.row.certificate, chain=(), rotations=()),
        T0,
    )
    join(dbs, owner, 1, by=0)
    yield dbs
    for db in dbs:
        db.close()


def receive(db: peewee.SqliteDatabase, owner: Owner, ops: list) -> None:  # type: ignore[type-arg]
    report = apply_ops(db, ops, NOW, local_device=owner.devices[3].peer_id)
    assert all(r.error.code == "device_not_trusted" for r in report.refused), report.refused


def test_both_orders_converge_and_leave_out_what_the_revoked_device_wrote_after_its_cut(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    first, second, early, late = vaults
    one = owner.devices[1]
    import_conversation(second, one.signer, conversation(1), T0 + 10)
    receive(first, owner, stored_ops(second))
    before_cut = len(stored_ops(second))
    # Revoked at what the first device holds of it...
    revoke(first, owner.devices[0].signer, one.peer_id, T0 + 20)
    # ...while it goes on writing: a new conversation, a new ACU version, a renamed one.
    import_conversation(second, one.signer, conversation(2), T0 + 30)
    acu = list_acus(second).items[0].id
    edit_acu(second, one.signer, acu, "written after the revocation", T0 + 31)
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    set_title(second, one.signer, key, "renamed after the revocation", T0 + 32)
    assert len(stored_ops(second)) > before_cut

    # One vault hears of the revocation first, the other last.
    receive(early, owner, stored_ops(first))
    receive(early, owner, stored_ops(second))
    receive(late, owner, stored_ops(second))
    receive(late, owner, stored_ops(first))

    assert state_hash(early) == state_hash(late) == state_hash(first)
    for db in (early, late):
        assert get_conversation(db, conversation_id(owner.did, "chatgpt", "conversation-2")) is None
        detail = get_conversation(db, key)
        assert detail is not None and detail.conversation.title == "Conversation 1"
        assert verify_vault(db, NOW) == []


def test_what_a_cascaded_device_wrote_counts_again_once_it_is_approved_again(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    first, second, third, late = vaults
    join(vaults, owner, 2, by=1)  # the third device, approved by the second
    two = owner.devices[2]
    import_conversation(third, two.signer, conversation(1), T0 + 10)
    receive(first, owner, stored_ops(second) + stored_ops(third))
    revoke(first, owner.devices[0].signer, owner.devices[1].peer_id, T0 + 20)
    import_conversation(third, two.signer, conversation(2), T0 + 30)  # past its cut

    receive(late, owner, stored_ops(second) + stored_ops(third))
    receive(late, owner, stored_ops(first))
    later = conversation_id(owner.did, "chatgpt", "conversation-2")
    assert get_conversation(late, later) is None
    assert verify_vault(late, NOW) == []

    certify(first, owner.devices[0].signer, bytes(two.key.verify_key), T0 + 40)
    receive(late, owner, stored_ops(first))
    receive(first, owner, stored_ops(third))
    assert get_conversation(late, later) is not None
    assert state_hash(late) == state_hash(first)
    assert verify_vault(late, NOW) == [] and verify_vault(first, NOW) == []
