"""Where a pulled batch leaves the cursor, read from a few ops' bytes before the batch is
checked, and the check that the checking process's count of every op agrees."""

from __future__ import annotations

from concurrent.futures import Future

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

import node.sync
from node.sync import SyncFailed, _check_positions, _positions, _Pulled, _stretches
from protocols.cid import content_id
from protocols.did import did_from_ed25519_public_key
from protocols.hlc import Timestamp
from protocols.oplog import OpKind, SyncOperation, op_position
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.sync_messages import Batch
from store.op_checks import check_wires

AUTHOR = did_from_ed25519_public_key(bytes(nacl.signing.SigningKey(bytes(32)).verify_key))
KEYS = [nacl.signing.SigningKey(bytes([n]) * 32) for n in (1, 2, 3)]
DEVICES = [peer_id_from_ed25519_public_key(bytes(key.verify_key)) for key in KEYS]


def wire(device: int, seq: int) -> bytes:
    key = KEYS[device]
    return SyncOperation.sign(
        signing_key=key,
        author=AUTHOR,
        device=DEVICES[device],
        seq=seq,
        prev=None if seq == 1 else content_id(f"op {seq - 1}"),
        hlc=Timestamp(wall_ms=1_700_000_000_000 + seq, counter=0, node=DEVICES[device]),
        entity_type="conversation",
        entity_id=content_id(f"entity {seq}"),
        kind=OpKind.UPDATE,
        payload={"title": f"t{seq}"},
    ).to_wire()


# Wires by (device, seq), made once: signing is the slow part.
WIRES = {(d, s): wire(d, s) for d in range(3) for s in range(1, 41)}


def batch(stretches: list[tuple[int, int, int]]) -> list[bytes]:
    """Ops of device d from seq a to b, for each (d, a, b), in that order."""
    return [WIRES[(d, s)] for d, a, b in stretches for s in range(a, b + 1)]


def every_position(ops: list[bytes]) -> dict[str, int]:
    highest: dict[str, int] = {}
    for op in ops:
        decoded = SyncOperation.from_wire(op)
        highest[decoded.device] = max(highest.get(decoded.device, 0), decoded.seq)
    return highest


@given(
    st.lists(st.integers(min_value=1, max_value=13), min_size=1, max_size=3),
    st.permutations([0, 1, 2]),
)
def test_a_sorted_batch_s_positions_are_those_of_reading_every_op(
    lengths: list[int], order: list[int]
) -> None:
    ops = batch([(order[n], 1, length) for n, length in enumerate(lengths)])
    assert _positions(ops, {}) == every_position(ops)
    assert _positions(ops, {}) == check_wires(ops).last_seqs


def test_a_batch_reads_few_of_its_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[bytes] = []

    def counted(op: bytes) -> tuple[str, int]:
        reads.append(op)
        return op_position(op)

    monkeypatch.setattr(node.sync, "op_position", counted)
    ops = batch([(0, 1, 40), (1, 1, 40), (2, 1, 40)])
    assert dict(_stretches(ops)) == {DEVICES[0]: 40, DEVICES[1]: 40, DEVICES[2]: 40}
    # Two ends, and a bisection (~log2(120) reads) for each of the two device changes.
    assert len(reads) <= 2 + 2 * 8
    reads.clear()
    assert _stretches(batch([(1, 1, 40)])) == [(DEVICES[1], 40)]
    assert len(reads) == 2
    assert _stretches([]) == []


def test_an_op_at_or_below_the_cursor_asked_is_refused() -> None:
    ops = batch([(0, 5, 9)])
    assert _positions(ops, {DEVICES[0]: 4}) == {DEVICES[0]: 9}
    with pytest.raises(SyncFailed, match="said we hold"):
        _positions(ops, {DEVICES[0]: 9})


def pulled(ops: list[bytes], asked: dict[str, int]) -> _Pulled:
    return _Pulled(
        batch=Batch(ops=tuple(ops), heads={}, done=False),
        asked=asked,
        positions=_positions(ops, asked),
        future=Future(),
    )


def test_the_checker_s_count_confirms_an_honest_batch() -> None:
    ops = batch([(0, 3, 20), (1, 1, 2)])
    _check_positions(check_wires(ops), pulled(ops, {DEVICES[0]: 2}))


def test_ops_hidden_between_the_ops_read_are_caught_by_the_checker_s_count() -> None:
    # Device 1's op sits inside device 0's stretch: the bisection never reads it.
    ops = batch([(0, 1, 10)])
    ops[4:5] = [WIRES[(1, 7)]]
    with pytest.raises(SyncFailed, match="not where their bytes say"):
        _check_positions(check_wires(ops), pulled(ops, {}))
    # An old op of the device, between new ones: the highest agree, the lowest does not.
    ops = batch([(0, 6, 12)])
    ops[3:4] = [WIRES[(0, 2)]]
    with pytest.raises(SyncFailed, match="said we hold"):
        _check_positions(check_wires(ops), pulled(ops, {DEVICES[0]: 5}))
