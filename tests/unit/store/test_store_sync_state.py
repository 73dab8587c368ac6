"""What sync reads and writes: who may sync, pages of ops past a cursor, batches applied with
their bookkeeping, a refused op stopping its device's chain."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest
from test_store_devices import join, new_vault
from test_store_vault_support import T0, Owner, conversation, stored_ops

from protocols.canonical import canonical_encode
from protocols.errors import MalformedInput
from store.devices import Credentials, introduce, revoke
from store.identity import save_device
from store.op_checks import check_wires
from store.sync_state import (
    apply_batch,
    apply_checked_batch,
    decode_ops,
    heads,
    may_sync,
    ops_after,
    record_outcome,
    sync_status,
)
from store.vault import import_conversation, state_hash

NOW = T0 + 3_600_000


@pytest.fixture
def owner() -> Owner:
    return Owner(count=4)


@pytest.fixture
def vaults(tmp_path: Path, owner: Owner) -> Iterator[list[peewee.SqliteDatabase]]:
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


def pull_all(
    source: peewee.SqliteDatabase, target: peewee.SqliteDatabase, owner: Owner, *, max_ops: int
) -> int:
    """Pull everything `target` lacks from `source`, page by page; return the number of pages."""
    pages = 0
    while True:
        page = ops_after(source, heads(target), max_ops, 1 << 20)
        pages += 1
        result = apply_batch(
            target,
            decode_ops(page.ops),
            peer_id=owner.devices[0].peer_id,
            peer_heads=heads(source),
            now_ms=NOW,
            local_device=owner.devices[1].peer_id,
        )
        assert result.refused == ()
        if page.done:
            return pages


def test_pages_past_a_cursor_bring_a_vault_to_the_same_state(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    for n in range(3):
        import_conversation(vaults[0], owner.devices[0].signer, conversation(n), T0 + n)
    total = len(stored_ops(vaults[0]))
    assert pull_all(vaults[0], vaults[1], owner, max_ops=7) >= total // 7
    assert state_hash(vaults[1]) == state_hash(vaults[0])
    assert heads(vaults[1])[owner.devices[0].peer_id] == heads(vaults[0])[owner.devices[0].peer_id]
    # Nothing more to send: an empty, done page.
    page = ops_after(vaults[0], heads(vaults[1]), 100, 1 << 20)
    assert page.ops == [] and page.done
    _, peers = sync_status(vaults[1])
    assert peers[0].lag == {} and peers[0].ops_received == total


def test_a_page_is_bounded_by_bytes_but_never_empty(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    page = ops_after(vaults[0], {}, 1000, 1)
    assert len(page.ops) == 1 and not page.done


def test_only_trusted_devices_of_the_vaults_did_may_sync(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    assert may_sync(vaults[0], owner.devices[1].peer_id)
    assert not may_sync(vaults[0], owner.devices[3].peer_id)  # never certified
    assert not may_sync(vaults[0], Owner(count=1, seed=9).devices[0].peer_id)
    revoke(vaults[0], owner.devices[0].signer, owner.devices[1].peer_id, T0 + 10)
    assert not may_sync(vaults[0], owner.devices[1].peer_id)


def test_a_refused_op_stops_its_devices_chain_and_the_rest_is_kept_out(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    # One op in the middle signed by another key: its signature does not verify.
    bad = 3
    forged = replace(
        ops[bad], signature=owner.devices[2].key.sign(ops[bad].signed_bytes()).signature
    )
    batch = [op.to_wire() for op in ops]
    batch[bad] = forged.to_wire()
    decoded = decode_ops(batch)
    result = apply_batch(
        vaults[2],
        decoded,
        peer_id=owner.devices[0].peer_id,
        peer_heads=heads(vaults[0]),
        now_ms=NOW,
        local_device=owner.devices[2].peer_id,
    )
    assert result.applied == bad
    assert result.refused[0].error.code == "bad_signature"
    assert {r.error.code for r in result.refused[1:]} == {"sequence_gap"}
    assert result.heads[owner.devices[0].peer_id] == bad
    record_outcome(vaults[2], owner.devices[0].peer_id, NOW, "invalid_op: bad signature")
    _, peers = sync_status(vaults[2])
    assert peers[0].consecutive_failures == 1 and peers[0].lag[owner.devices[0].peer_id] > 0


def test_checked_batches_apply_like_plain_ones_and_keep_the_checkers_refusals(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    bad = 3
    forged = replace(
        ops[bad], signature=owner.devices[2].key.sign(ops[bad].signed_bytes()).signature
    )
    wires = [op.to_wire() for op in ops]
    wires[bad] = forged.to_wire()
    checked = check_wires(wires)
    assert [v is None for v in checked.verdicts] == [n != bad for n in range(len(wires))]
    assert checked.verdicts[bad] is not None and checked.verdicts[bad][0] == "bad_signature"
    assert checked.last_seqs == {owner.devices[0].peer_id: ops[-1].seq}
    assert checked.first_seqs == {owner.devices[0].peer_id: ops[0].seq}
    common = {
        "peer_id": owner.devices[0].peer_id,
        "peer_heads": heads(vaults[0]),
        "now_ms": NOW,
        "local_device": owner.devices[2].peer_id,
    }
    plain = apply_batch(vaults[2], decode_ops(wires), **common)  # type: ignore[arg-type]
    fast = apply_checked_batch(vaults[3], wires, checked.verdicts, **common)  # type: ignore[arg-type]
    assert (plain.applied, plain.heads) == (fast.applied, fast.heads) == (bad, plain.heads)
    assert [(r.op_id, r.error.code) for r in plain.refused] == [
        (r.op_id, r.error.code) for r in fast.refused
    ]
    assert state_hash(vaults[2]) == state_hash(vaults[3])


def stored_wire_of_nothing() -> bytes:
    return canonical_encode({"not": "an op"})


def test_a_batch_with_an_op_that_does_not_decode_is_refused_whole() -> None:
    with pytest.raises(MalformedInput, match="op 0 of the batch does not decode"):
        check_wires([stored_wire_of_nothing(), b"\xa0"])
