"""Checking the vault: a digest of its replicated state, and a full verification of the log.

`state_hash` is what two replicas compare to know they converged. `verify_vault` trusts nothing
it reads: it decodes every op from its signed wire bytes, checks that its columns say the same,
verifies it against its device's key and chain as `apply_ops` would have, then replays the whole
log through the same fold and compares the result with the stored tables, row by row. It reports
every problem it finds and changes nothing, so it runs on a read-only connection too. It streams
the log (ordered scans) and holds one entity's ops at a time, plus the rows acu_link ops make
(user links and edits' version_of: few).

The replay compares each entity with the rows it owns, in one ordered pass per entity type: a
conversation with its messages, an ACU with its links (the ones it carries, and those acu_link
ops make from it; the ACU's win, store.vault_fold). acu_link tombstones are compared on their
own.
"""

import hashlib
import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from peewee import SqliteDatabase

from protocols.canonical import canonical_encode
from protocols.errors import ChainBreak, MalformedInput, ProtocolError, UnknownDevice
from protocols.oplog import SyncOperation, verify_op
from store.identity import DeviceRow, list_devices
from store.vault_fold import FOLD_COLUMNS, Folded, fold_entity, fold_op_from_row
from store.vault_payloads import check_payload
from store.vault_sql import (
    ACU_COLUMNS,
    CONVERSATION_COLUMNS,
    EFFECTIVE_OPS,
    ENTITY_TABLES,
    LINK_COLUMNS,
    MESSAGE_COLUMNS,
    TOMBSTONE_COLUMNS,
    Row,
    connection,
    select_sql,
)

V = TypeVar("V")

# The replicated tables and the order state_hash reads them in; the tombstone table's local `id`
# is left out.
_HASHED: Final = (
    ("conversation", CONVERSATION_COLUMNS, "id"),
    ("message", MESSAGE_COLUMNS, "id"),
    ("acu", ACU_COLUMNS, "id"),
    ("acu_link", LINK_COLUMNS, "id"),
    ("tombstone", TOMBSTONE_COLUMNS, "entity_type, entity_id"),
)

# The sync_operation columns read by the chain check, in this order.
_OP_CHECK_COLUMNS: Final = "id, device, seq, hlc_packed, entity_type, entity_id, kind, wire"

# A key of the replay's ordered passes: (entity id, "") for an entity's own row, (entity id,
# child id) for a row it owns (a message of a conversation, a link from an ACU).
_Key = tuple[str, str]
_OWN: Final = ""


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
        _check_tables(db, bad_ops, problems)
        return problems


def _check_log(db: SqliteDatabase, now_ms: int, problems: list[VaultProblem]) -> set[str]:
    """Check each device's chain op by op; return the ids of ops that fail."""
    conn = connection(db)
    devices = {device.peer_id: device for device in list_devices(db)}
    bad: set[str] = set()
    heads: dict[str, tuple[int, str]] = {}
    rows = conn.execute(f"SELECT {_OP_CHECK_COLUMNS} FROM sync_operation ORDER BY device, seq")
    for device, chain in itertools.groupby(rows, key=lambda row: row[1]):
        expected_seq: int = 1
        expected_prev: str | None = None
        last_hlc = -1
        for row in chain:
            op_id, seq = row[0], row[2]
            problem = _check_op(row, devices.get(device), expected_seq, expected_prev, now_ms)
            if problem is not None:
                kind, detail = problem
                problems.append(VaultProblem(kind=kind, detail=detail, op_id=op_id, device=device))
                bad.add(op_id)
            elif row[3] <= last_hlc:
                detail = f"op #{seq} is stamped at or before the op before it"
                problems.append(
                    VaultProblem(kind=ChainBreak.code, detail=detail, op_id=op_id, device=device)
                )
                bad.add(op_id)
            else:
                last_hlc = row[3]  # a stamp its own bytes vouch for
            # Carry on from this op, so one bad op is reported once, not with every later one.
            expected_seq, expected_prev = seq + 1, op_id
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
    op_id, device_column, seq, hlc_packed, entity_type, entity_id, kind, wire = row
    try:
        op = SyncOperation.from_wire(bytes(wire))
    except MalformedInput as err:
        return MalformedInput.code, f"wire bytes do not decode: {err}"
    stored = (op_id, device_column, seq, hlc_packed, entity_type, entity_id, kind)
    signed = (
        *(op.id, op.device, op.seq, op.hlc.packed()),
        *(op.entity_type, op.entity_id, op.kind.value),
    )
    names = ("id", "device", "seq", "hlc", "entity_type", "entity_id", "kind")
    wrong = [name for name, a, b in zip(names, stored, signed, strict=True) if a != b]
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
        check_payload(op)
    except ProtocolError as err:
        return err.code, str(err)
    return None


def _device_key(op: SyncOperation, device: DeviceRow | None) -> bytes:
    """The key to check a stored op with. A device that is no longer trusted still signed its
    stored ops: those past its cut were applied before the revocation reached this vault (it
    refuses them after), so they are checked like the others (store/TRUST_DESIGN.md)."""
    if device is None or device.did != op.author:
        raise UnknownDevice(f"{op.device} is not a known device of {op.author}")
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


def _check_tables(db: SqliteDatabase, bad_ops: set[str], problems: list[VaultProblem]) -> None:
    """Replay the log (all but `bad_ops`) and compare the result with the stored tables."""
    conn = connection(db)

    # acu_link ops: their tombstones by link id; the rows they make join the ACU pass.
    made: list[tuple[_Key, Row]] = []

    def links() -> Iterator[tuple[str, object]]:
        for entity_id, folded in _replay(db, "acu_link", bad_ops):
            if folded.row is not None:
                made.append(((str(folded.row[1]), entity_id), folded.row))
            if folded.tombstone is not None:
                yield entity_id, folded.tombstone

    for entity_id, (want, have) in _outer_join((links(), _tombstones(db, "acu_link"))):
        _report(problems, "tombstone", want, have, TOMBSTONE_COLUMNS, "acu_link", entity_id)
    made.sort(key=lambda item: item[0])

    _check_owner(db, "conversation", "message", bad_ops, (), problems)
    _check_owner(db, "acu", "acu_link", bad_ops, made, problems)

    known = ", ".join(f"'{entity_type}'" for entity_type in ENTITY_TABLES)
    for row in conn.execute(
        f"{select_sql('tombstone', TOMBSTONE_COLUMNS)} WHERE entity_type NOT IN ({known})"
        " ORDER BY entity_type, entity_id"
    ):
        _report(problems, "tombstone", None, tuple(row), TOMBSTONE_COLUMNS, row[0], row[1])


def _check_owner(
    db: SqliteDatabase,
    entity_type: str,
    child_table: str,
    bad_ops: set[str],
    made: Iterable[tuple[_Key, Row]],
    problems: list[VaultProblem],
) -> None:
    """One ordered pass over the entities of `entity_type` and the rows they own.

    `made` are child rows that ops of another type make (acu_link ops' links, by (source, id)):
    they count where the entity's fold does not make a row of the same key.
    """
    conn = connection(db)
    table, columns = ENTITY_TABLES[entity_type]
    child_columns = MESSAGE_COLUMNS if child_table == "message" else LINK_COLUMNS
    owner_column = "conversation_id" if child_table == "message" else "source"

    def expected() -> Iterator[tuple[_Key, object]]:
        for entity_id, folded in _replay(db, entity_type, bad_ops):
            yield (entity_id, _OWN), folded
            for child in folded.children:
                yield (entity_id, str(child[0])), Folded(row=child)

    rows = heapq.merge(
        (
            ((row[0], _OWN), tuple(row))
            for row in conn.execute(f"{select_sql(table, columns)} ORDER BY id")
        ),
        (
            ((row[1], row[0]), tuple(row))  # (its owner, its id)
            for row in conn.execute(
                f"{select_sql(child_table, child_columns)} ORDER BY {owner_column}, id"
            )
        ),
        key=lambda item: item[0],
    )
    tombstones = (((entity_id, _OWN), row) for entity_id, row in _tombstones(db, entity_type))
    made_rows = ((key, Folded(row=row)) for key, row in made)
    for (owner, child), (folded, extra, row, tombstone) in _outer_join(
        (expected(), made_rows, rows, tombstones)
    ):
        replay = folded if isinstance(folded, Folded) else extra
        if not isinstance(replay, Folded):
            replay = Folded()
        if child == _OWN:
            _report(problems, "row", replay.row, row, columns, entity_type, owner)
            _report(
                problems,
                "tombstone",
                replay.tombstone,
                tombstone,
                TOMBSTONE_COLUMNS,
                entity_type,
                owner,
            )
        else:
            _report(problems, "row", replay.row, row, child_columns, child_table, child)


def _replay(
    db: SqliteDatabase, entity_type: str, bad_ops: set[str]
) -> Iterator[tuple[str, Folded]]:
    """Each entity of `entity_type` with ops (other than `bad_ops`), by id, as its ops fold."""
    ops = connection(db).execute(
        f"SELECT entity_id, {FOLD_COLUMNS} FROM sync_operation WHERE entity_type = ?"
        f" AND {EFFECTIVE_OPS} ORDER BY entity_id",
        (entity_type,),
    )
    for entity_id, group in itertools.groupby(ops, key=lambda row: row[0]):
        # row[3] is the op id (FOLD_COLUMNS after entity_id).
        folds = [fold_op_from_row(row[1:]) for row in group if row[3] not in bad_ops]
        if folds:
            yield entity_id, fold_entity(entity_type, entity_id, folds)


def _tombstones(db: SqliteDatabase, entity_type: str) -> Iterator[tuple[str, object]]:
    rows = connection(db).execute(
        f"{select_sql('tombstone', TOMBSTONE_COLUMNS)} WHERE entity_type = ? ORDER BY entity_id",
        (entity_type,),
    )
    return ((row[1], tuple(row)) for row in rows)


def _report(
    problems: list[VaultProblem],
    what: str,
    want: object,
    have: object,
    names: Sequence[str],
    entity_type: str,
    entity_id: str,
) -> None:
    problem = _compare(what, want, have, names)
    if problem is not None:
        kind, detail = problem
        problems.append(
            VaultProblem(kind=kind, detail=detail, entity_type=entity_type, entity_id=entity_id)
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
    streams: Sequence[Iterator[tuple[Any, object]]],
) -> Iterator[tuple[Any, list[object]]]:
    """Join streams sorted by key (unique within each): each key with each stream's value."""
    tagged = [_tag(stream, index) for index, stream in enumerate(streams)]
    merged = heapq.merge(*tagged, key=lambda item: (item[0], item[1]))
    for key, group in itertools.groupby(merged, key=lambda item: item[0]):
        values: list[object] = [None] * len(streams)
        for _, index, value in group:
            values[index] = value
        yield key, values


def _tag(stream: Iterator[tuple[Any, object]], index: int) -> Iterator[tuple[Any, int, object]]:
    for key, value in stream:
        yield key, index, value
