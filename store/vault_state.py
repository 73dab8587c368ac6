"""Checking the vault: a digest of its replicated state, and a full verification of the log.

`state_hash` is what two replicas compare to know they converged. `verify_vault` trusts nothing
it reads: it decodes every op from its signed wire bytes, checks that its columns say the same,
verifies it against its device's key and chain as `apply_ops` would have, then replays the whole
log through the same fold and compares the result with the stored tables, row by row. It reports
every problem it finds and changes nothing, so it runs on a read-only connection too; it streams
the log (two ordered scans) and holds one entity's ops at a time.
"""

import hashlib
import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from peewee import SqliteDatabase

from protocols.canonical import canonical_encode
from protocols.errors import ChainBreak, MalformedInput, ProtocolError, UnknownDevice
from protocols.oplog import SyncOperation, verify_op
from store.identity import DeviceRow, list_devices
from store.vault_fold import FOLD_COLUMNS, Folded, fold_entity, fold_op_from_row
from store.vault_payloads import check_payload
from store.vault_sql import ENTITY_TABLES, TOMBSTONE_COLUMNS, connection, select_sql

V = TypeVar("V")

# The replicated tables and the order state_hash reads them in; the tombstone table's local `id`
# is left out.
_HASHED: Final = (
    *((table, columns, "id") for table, columns in ENTITY_TABLES.values()),
    ("tombstone", TOMBSTONE_COLUMNS, "entity_type, entity_id"),
)

# The sync_operation columns read by the chain check, in this order.
_OP_CHECK_COLUMNS: Final = (
    "id, author, device, seq, prev, hlc_packed, hlc_node, entity_type, entity_id, kind, payload,"
    " signature, wire"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class VaultProblem:
    """One thing wrong in the vault.

    `kind` is a protocol error code for an op that should not have been accepted
    (`bad_signature`, `unknown_device`, `chain_break`, `sequence_gap`, `clock_drift`,
    `malformed`), or one of `op_columns` (an op's columns disagree with its signed bytes),
    `chain_head` (device_log disagrees with the log), `clock` (the persisted clock is behind
    the device's own ops), `row_missing`, `row_unexpected`, `row_differs`, `tombstone_missing`,
    `tombstone_unexpected`, `tombstone_differs` (a table disagrees with the replay of the log).
    """

    kind: str
    detail: str
    op_id: str | None = None
    device: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None


def state_hash(db: SqliteDatabase) -> str:
    """SHA-256 (hex) of the canonical CBOR of every replicated row, table by table, sorted by id.

    Every column of conversation, message, acu and acu_link, and the tombstones without their
    local id: all of it is a function of the set of ops applied, so replicas holding the same
    ops have the same hash. The log itself (with its local receive times) is not included.
    """
    digest = hashlib.sha256()
    with db.atomic():
        conn = connection(db)
        for table, columns, order in _HASHED:
            digest.update(canonical_encode(table))
            for row in conn.execute(f"{select_sql(table, columns)} ORDER BY {order}"):
                digest.update(canonical_encode(list(row)))
    return digest.hexdigest()


def verify_vault(db: SqliteDatabase, now_ms: int) -> list[VaultProblem]:
    """Every problem in the vault's log and tables (empty: the vault is sound)."""
    with db.atomic():
        problems: list[VaultProblem] = []
        bad_ops = _check_log(db, now_ms, problems)
        for entity_type in ENTITY_TABLES:
            _check_tables(db, entity_type, bad_ops, problems)
        return problems


def _check_log(db: SqliteDatabase, now_ms: int, problems: list[VaultProblem]) -> set[str]:
    """Check each device's chain op by op; return the ids of ops that fail."""
    conn = connection(db)
    devices = {device.peer_id: device for device in list_devices(db)}
    bad: set[str] = set()
    heads: dict[str, tuple[int, str]] = {}
    rows = conn.execute(f"SELECT {_OP_CHECK_COLUMNS} FROM sync_operation ORDER BY device, seq")
    for device, chain in itertools.groupby(rows, key=lambda row: row[2]):
        expected_seq, expected_prev, last_hlc = 1, None, -1
        for row in chain:
            op_id, seq = row[0], row[3]
            problem = _check_op(row, devices.get(device), expected_seq, expected_prev, now_ms)
            if problem is not None:
                kind, detail = problem
                problems.append(VaultProblem(kind=kind, detail=detail, op_id=op_id, device=device))
                bad.add(op_id)
            elif row[5] <= last_hlc:
                detail = f"op #{seq} is stamped at or before the op before it"
                problems.append(
                    VaultProblem(kind=ChainBreak.code, detail=detail, op_id=op_id, device=device)
                )
                bad.add(op_id)
            # Carry on from this op, so one bad op is reported once, not with every later one.
            expected_seq, expected_prev, last_hlc = seq + 1, op_id, row[5]
        heads[device] = (expected_seq - 1, expected_prev or "")
    _check_heads(db, heads, problems)
    return bad


def _check_op(
    row: Any,
    device: DeviceRow | None,
    expected_seq: int,
    expected_prev: str | None,
    now_ms: int,
) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with one stored op, or None."""
    op_id, author, _, seq, prev, hlc_packed, hlc_node, entity_type, entity_id, kind = row[:10]
    payload, signature, wire = row[10:]
    try:
        op = SyncOperation.from_wire(bytes(wire))
    except MalformedInput as err:
        return MalformedInput.code, f"wire bytes do not decode: {err}"
    stored = (op_id, author, seq, prev, hlc_packed, hlc_node, entity_type, entity_id, kind)
    signed = (
        *(op.id, op.author, op.seq, op.prev, op.hlc.packed(), op.hlc.node),
        *(op.entity_type, op.entity_id, op.kind.value),
    )
    names = ("id", "author", "seq", "prev", "hlc", "hlc node", "entity_type", "entity_id", "kind")
    wrong = [name for name, a, b in zip(names, stored, signed, strict=True) if a != b]
    if bytes(payload) != canonical_encode(op.payload):
        wrong.append("payload")
    if bytes(signature) != op.signature:
        wrong.append("signature")
    if wrong:
        return "op_columns", f"columns {', '.join(wrong)} disagree with the op's signed bytes"
    try:
        key = _device_key(op, device)
        verify_op(
            op,
            device_public_key=key,
            expected_seq=expected_seq,
            expected_prev=expected_prev,
            now_ms=now_ms,
        )
        check_payload(op, key)
    except ProtocolError as err:
        return err.code, str(err)
    return None


def _device_key(op: SyncOperation, device: DeviceRow | None) -> bytes:
    if device is None or device.did != op.author:
        raise UnknownDevice(f"{op.device} is not a known device of {op.author}")
    if device.revoked_at_ms is not None and op.hlc.wall_ms >= device.revoked_at_ms:
        raise UnknownDevice(
            f"device {op.device} was revoked at {device.revoked_at_ms} ms; this op is stamped "
            f"{op.hlc.wall_ms} ms"
        )
    return device.public_key


def _check_heads(
    db: SqliteDatabase, heads: dict[str, tuple[int, str]], problems: list[VaultProblem]
) -> None:
    conn = connection(db)
    stored = {
        device: (seq, op_id)
        for device, seq, op_id in conn.execute(
            "SELECT device, last_seq, last_op_id FROM device_log"
        )
    }
    for device in sorted(heads.keys() | stored.keys()):
        if heads.get(device) != stored.get(device):
            problems.append(
                VaultProblem(
                    kind="chain_head",
                    detail=f"device_log holds {stored.get(device)}, the log ends at "
                    f"{heads.get(device)} (seq, op id)",
                    device=device,
                )
            )
    for node, last_packed, newest in conn.execute(
        "SELECT node, last_packed, (SELECT max(hlc_packed) FROM sync_operation WHERE device = node)"
        " FROM hlc_state"
    ):
        if newest is not None and newest > last_packed:
            problems.append(
                VaultProblem(
                    kind="clock",
                    detail=f"the persisted clock ({last_packed}) is behind the device's own "
                    f"newest op ({newest}): its next stamps could repeat",
                    device=node,
                )
            )


def _check_tables(
    db: SqliteDatabase, entity_type: str, bad_ops: set[str], problems: list[VaultProblem]
) -> None:
    """Replay the ops of one entity type and compare with its table and tombstones."""
    conn = connection(db)
    table, columns = ENTITY_TABLES[entity_type]
    ops = conn.execute(
        f"SELECT entity_id, {FOLD_COLUMNS} FROM sync_operation WHERE entity_type = ?"
        " ORDER BY entity_id",
        (entity_type,),
    )
    expected = (
        (entity_id, fold_entity(entity_type, entity_id, folds))
        for entity_id, group in itertools.groupby(ops, key=lambda row: row[0])
        if (folds := [fold_op_from_row(row[1:]) for row in group if row[3] not in bad_ops])
    )
    rows = (
        (row[0], tuple(row)) for row in conn.execute(f"{select_sql(table, columns)} ORDER BY id")
    )
    tombstones = (
        (row[1], tuple(row))
        for row in conn.execute(
            f"{select_sql('tombstone', TOMBSTONE_COLUMNS)} WHERE entity_type = ?"
            " ORDER BY entity_id",
            (entity_type,),
        )
    )
    for entity_id, (folded, row, tombstone) in _outer_join((expected, rows, tombstones)):
        replay = folded if isinstance(folded, Folded) else Folded()
        for what, want, have, names in (
            ("row", replay.row, row, columns),
            ("tombstone", replay.tombstone, tombstone, TOMBSTONE_COLUMNS),
        ):
            problem = _compare(what, want, have, names)
            if problem is not None:
                kind, detail = problem
                problems.append(
                    VaultProblem(
                        kind=kind, detail=detail, entity_type=entity_type, entity_id=entity_id
                    )
                )


def _compare(what: str, want: object, have: object, names: Sequence[str]) -> tuple[str, str] | None:
    if want == have:
        return None
    if want is None:
        return f"{what}_unexpected", f"a {what} is stored that the log's replay does not make"
    if have is None:
        return f"{what}_missing", f"the log's replay makes a {what} that is not stored"
    assert isinstance(want, tuple) and isinstance(have, tuple)
    differing = [name for name, a, b in zip(names, want, have, strict=True) if a != b]
    return f"{what}_differs", f"columns {', '.join(differing)} differ from the log's replay"


def _outer_join(
    streams: Sequence[Iterator[tuple[str, object]]],
) -> Iterator[tuple[str, list[object]]]:
    """Join streams sorted by key (unique within each): each key with each stream's value."""
    tagged = [_tag(stream, index) for index, stream in enumerate(streams)]
    merged = heapq.merge(*tagged, key=lambda item: (item[0], item[1]))
    for key, group in itertools.groupby(merged, key=lambda item: item[0]):
        values: list[object] = [None] * len(streams)
        for _, index, value in group:
            values[index] = value
        yield key, values


def _tag(stream: Iterator[tuple[str, object]], index: int) -> Iterator[tuple[str, int, object]]:
    for key, value in stream:
        yield key, index, value
