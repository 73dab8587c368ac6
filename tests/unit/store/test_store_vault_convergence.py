"""Convergence: the ops of three devices, delivered in any order, in any batches, with duplicates,
give every receiving vault the same state."""

import itertools
from pathlib import Path

import hypothesis.strategies as st
import peewee
import pytest
from hypothesis import HealthCheck, event, given, settings
from test_store_vault_support import T0, Owner, conversation, count, stored_ops

from protocols.oplog import OpKind, SyncOperation
from protocols.vault_records import SharingLevel
from store.vault import (
    apply_ops,
    delete_conversation,
    edit_acu,
    import_conversation,
    list_acus,
    list_conversations,
    raise_sharing_level,
    set_title,
    state_hash,
    verify_vault,
)

OWNER = Owner(count=3)
# Few conversations, so that devices import the same ones concurrently; each in a short and a
# continued version (the same conversation id), so that importing the longer one after the
# shorter adds messages to a conversation that exists (an update op) and links from ACUs that
# exist (acu_link ops).
POOL = [conversation(n, messages=m) for n in range(2) for m in (2, 4, 6)]
# Imports and syncs twice as often: most other actions need something imported or received.
ACTIONS = ("import", "import", "title", "share", "delete", "edit", "sync", "sync")
STEP_MS = 1000
SKEW_MS = 5000  # each device's wall clock is off by up to this much
END = T0 + 1_000_000


def act(dbs: list[peewee.SqliteDatabase], device: int, action: str, choice: int, now: int) -> None:
    """One device does one thing to its own vault."""
    db = dbs[device]
    signer = OWNER.devices[device].signer
    conversations = list_conversations(db, limit=100).items
    acus = list_acus(db, limit=1000).items
    if action == "import":
        import_conversation(db, signer, POOL[choice % len(POOL)], now)
    elif action == "title" and conversations:
        target = conversations[choice % len(conversations)]
        set_title(db, signer, target.id, f"title {choice}", now)
    elif action == "delete" and conversations:
        delete_conversation(db, signer, conversations[choice % len(conversations)].id, now)
    elif action == "share" and acus:
        acu = acus[choice % len(acus)]
        level = SharingLevel(min(SharingLevel.GLOBAL, acu.sharing_level + 1 + choice % 2))
        raise_sharing_level(db, signer, acu.id, level, now)
    elif action == "edit" and acus:
        acu = acus[choice % len(acus)]
        if acu.content != f"edited {choice}":  # else nothing to edit (AcuUnchanged)
            edit_acu(db, signer, acu.id, f"edited {choice}", now)
    elif action == "sync":
        source = (device + 1 + choice % 2) % len(dbs)
        report = apply_ops(db, stored_ops(dbs[source]), now, local_device=signer.device)
        assert report.refused == ()


def deliver(db: peewee.SqliteDatabase, ops: list[SyncOperation], cuts: list[int]) -> None:
    """Apply `ops` in batches split at `cuts`."""
    bounds = [0, *sorted(cut % (len(ops) + 1) for cut in cuts), len(ops)]
    for start, end in itertools.pairwise(bounds):
        report = apply_ops(db, ops[start:end], END, local_device=OWNER.devices[0].peer_id)
        assert report.refused == ()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_delivery_order_converges(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    directory: Path = tmp_path_factory.mktemp("convergence")
    dbs = [OWNER.open_vault(directory / f"device-{n}.db") for n in range(3)]
    receivers = [OWNER.open_vault(directory / f"receiver-{n}.db") for n in range(3)]
    try:
        # Each device imports first or not (one at least), often the same conversations.
        importing = data.draw(st.lists(st.booleans(), min_size=3, max_size=3), label="importers")
        steps = [
            (device, "import", data.draw(st.integers(0, 2)), 0)
            for device in range(3)
            if importing[device] or not any(importing)
        ]
        steps += data.draw(
            st.lists(
                st.tuples(
                    st.integers(0, 2),
                    st.sampled_from(ACTIONS),
                    st.integers(0, 1000),
                    st.integers(-SKEW_MS, SKEW_MS),
                ),
                max_size=14,
            ),
            label="steps",
        )
        for number, (device, action, choice, skew) in enumerate(steps):
            act(dbs, device, action, choice, T0 + number * STEP_MS + skew)

        everything = {op.id: op for db in dbs for op in stored_ops(db)}
        event(f"devices with ops: {len({op.device for op in everything.values()})}")
        for kind in sorted(
            {
                f"{op.entity_type} {op.kind.value} {sorted(op.payload)}"
                for op in everything.values()
                if op.kind is not OpKind.CREATE
            }
            | {f"{op.entity_type} create" for op in everything.values()}
        ):
            event(kind)
        in_order = sorted(everything.values(), key=lambda op: (op.device, op.seq))
        deliver(receivers[0], in_order, [])
        for receiver in receivers[1:]:
            shuffled = data.draw(st.permutations(in_order), label="order")
            repeats = (
                data.draw(st.lists(st.sampled_from(in_order), max_size=5), label="repeats")
                if in_order
                else []
            )
            mixed = data.draw(st.permutations([*shuffled, *repeats]), label="with repeats")
            cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=6), label="cuts")
            deliver(receiver, mixed, cuts)

        expected = state_hash(receivers[0])
        for receiver in receivers:
            assert state_hash(receiver) == expected
            assert count(receiver, "pending_op") == 0
            assert count(receiver, "sync_operation") == len(everything)
        assert verify_vault(receivers[0], END) == []
    finally:
        for db in (*dbs, *receivers):
            db.close()
