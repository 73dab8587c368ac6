"""The state of an entity as a fold of its ops (vault_spec.md section 5), and writing it.

An entity's state depends only on the set of its stored ops, never on the order they arrived in:
the ops are sorted by (HLC packed, HLC node, op id), and

- any delete makes the entity a tombstone, recording the first delete: a remove wins over every
  create and update, whatever their stamps (ACUs are never deleted). A deleted conversation
  takes its messages with it;
- otherwise the first create sets the row; a conversation's title is the one of the last op (by
  that order) that set it, the create included (last writer wins per field); an ACU's sharing
  level is the highest any of its ops names (a ratchet, so order cannot matter);
- a conversation's messages are the union of the `messages` of all its creates and updates (a
  grow-only set: order cannot matter); each message's row comes from the first op, by that
  order, that carries it;
- an ACU's links (the generator's, whose source it is) are the union of the `links` of its
  creates, each row from the first create that carries it, with the ACU's author as
  `created_by`;
- with no create and no delete (an update that arrived before its create) there is no row yet:
  the update waits in the log and takes effect when the create arrives and the entity is folded
  again.

Two devices importing the same conversation create the same entities (ids are content ids) with
ops of their own; every replica keeps the create that sorts first. For an ACU that changes only
the create's provenance and author signature, never its content (the id is the hash of the
content, and creates are checked against it), which the ACU triggers allow.

A link row has two possible origins with the same id, and so the same source, target and
relation: the create op of its source ACU, or an acu_link create op (a user linking what the
generator linked already). The rule: a link carried by an ACU create op belongs to that ACU.
Its row is the ACU's (author, stamp and op of the first create carrying it) whatever acu_link
ops say, and nothing removes it: an acu_link delete of it is kept in the log and leaves a
tombstone, but the row stays, as the ACU it belongs to does. acu_link ops shape the row only of
a link no ACU op carries. So a link inside an ACU op cannot be deleted on its own.

The same fold materializes the tables when an op is applied (`write_folded`) and replays the
log when the vault is verified (`store.vault_state`), and the import fast path builds its rows
with the same row functions, so the three cannot disagree about what a row holds.
"""

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, cast

from protocols.canonical import decode_stored
from protocols.oplog import SyncOperation
from protocols.vault_records import SharingLevel, link_id
from store.trust_state import TRUST_ENTITY_TYPES, refresh_trust
from store.vault_sql import (
    ACU_COLUMNS,
    CONVERSATION_COLUMNS,
    EFFECTIVE_OPS,
    ENTITY_TABLES,
    LINK_COLUMNS,
    MESSAGE_COLUMNS,
    TOMBSTONE_COLUMNS,
    Row,
    insert_sql,
    placeholders,
)

# The ACU columns an UPDATE may set: the rest is the content the id is the hash of.
_ACU_MUTABLE_AT: Final = ACU_COLUMNS.index("category")
_ACU_MUTABLE: Final = ACU_COLUMNS[_ACU_MUTABLE_AT:]


def upsert_sql(table: str, columns: Sequence[str]) -> str:
    """Insert a row, or overwrite every column of the row with its id."""
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns[1:])
    return insert_sql(table, columns) + f" ON CONFLICT (id) DO UPDATE SET {updates}"


MESSAGE_UPSERT: Final = upsert_sql("message", MESSAGE_COLUMNS)
LINK_UPSERT: Final = upsert_sql("acu_link", LINK_COLUMNS)
_CONVERSATION_UPSERT: Final = upsert_sql("conversation", CONVERSATION_COLUMNS)
_ACU_INSERT: Final = insert_sql("acu", ACU_COLUMNS)
_TOMBSTONE_UPSERT: Final = (
    insert_sql("tombstone", TOMBSTONE_COLUMNS)
    + " ON CONFLICT (entity_type, entity_id) DO UPDATE SET op_id = excluded.op_id,"
    " hlc_packed = excluded.hlc_packed, hlc_node = excluded.hlc_node"
)


@dataclass(frozen=True, slots=True)
class FoldOp:
    """What the fold needs of one stored op."""

    hlc_packed: int
    hlc_node: str
    op_id: str
    author: str
    kind: str  # create | update | delete
    payload: Mapping[str, object]
    signature: bytes  # by the key of hlc_node, the op's device

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.hlc_packed, self.hlc_node, self.op_id)


@dataclass(frozen=True, slots=True)
class Folded:
    """An entity's state: a row of its table, a tombstone row, or neither (no create yet); and
    the rows it carries (`children`, sorted by id): a conversation's messages, an ACU's links."""

    row: Row | None = None
    tombstone: Row | None = None  # in TOMBSTONE_COLUMNS order
    children: tuple[Row, ...] = ()


NOTHING: Final = Folded()

# The columns of one stored op that `fold_op_from_row` reads, in this order.
FOLD_COLUMNS: Final = "hlc_packed, device, id, kind, wire"


def fold_op_from_row(row: Sequence[object]) -> FoldOp:
    """A `FoldOp` from a row of FOLD_COLUMNS: author and payload are read from the wire bytes,
    checked when the op was stored (`decode_stored`)."""
    hlc_packed, device, op_id, kind, wire = row
    decoded = cast(Mapping[str, object], decode_stored(cast(bytes, wire)))
    return FoldOp(
        hlc_packed=cast(int, hlc_packed),
        hlc_node=cast(str, device),
        op_id=cast(str, op_id),
        author=cast(str, decoded["author"]),
        kind=cast(str, kind),
        payload=cast(Mapping[str, object], decoded["payload"]),
        signature=cast(bytes, decoded["signature"]),
    )


def fold_op(op: SyncOperation) -> FoldOp:
    """A `FoldOp` of an op at hand."""
    return FoldOp(
        hlc_packed=op.hlc.packed(),
        hlc_node=op.hlc.node,
        op_id=op.id,
        author=op.author,
        kind=op.kind.value,
        payload=op.payload,
        signature=op.signature,
    )


def fold_entity(entity_type: str, entity_id: str, ops: Iterable[FoldOp]) -> Folded:
    """The state the ops of one entity fold to (module docstring)."""
    ordered = sorted(ops, key=lambda op: op.key)
    for op in ordered:
        if op.kind == "delete":
            return Folded(tombstone=(entity_type, entity_id, op.op_id, op.hlc_packed, op.hlc_node))
    creates = [op for op in ordered if op.kind == "create"]
    if not creates:
        return NOTHING
    first = creates[0]
    if entity_type == "conversation":
        row = conversation_row(entity_id, first)
        title = row[2]
        messages: dict[str, Row] = {}
        for op in ordered:
            if op.kind == "update" and op.key > first.key and "title" in op.payload:
                title = op.payload["title"]
            for message in _entries(op.payload, "messages"):
                if message["id"] not in messages:
                    messages[cast(str, message["id"])] = message_row(entity_id, message, op)
        return Folded(
            row=(*row[:2], title, *row[3:]),
            children=tuple(messages[key] for key in sorted(messages)),
        )
    if entity_type == "acu":
        level = max(SharingLevel.from_wire(op.payload["sharing_level"]) for op in ordered)
        links: dict[str, Row] = {}
        for create in creates:
            for link in _entries(create.payload, "links"):
                key = link_id(entity_id, cast(str, link["target"]), cast(str, link["relation"]))
                if key not in links:
                    links[key] = carried_link_row(key, entity_id, link, create)
        return Folded(
            row=acu_row(entity_id, first, sharing_level=level),
            children=tuple(links[key] for key in sorted(links)),
        )
    return Folded(row=link_row(entity_id, first))


def _entries(payload: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
    return cast(list[Mapping[str, object]], payload.get(name, ()))


def conversation_row(entity_id: str, create: FoldOp) -> Row:
    payload = create.payload
    return (
        entity_id,
        create.author,
        payload["title"],
        payload["provider"],
        payload["model"],
        payload["source_id"],
        payload["created_at_ms"],
        payload["updated_at_ms"],
        create.hlc_packed,
        create.hlc_node,
        create.op_id,
    )


def message_row(conversation_id: str, message: Mapping[str, object], op: FoldOp) -> Row:
    """The row of `message`, an entry of the `messages` of `op`, an op of its conversation."""
    return (
        message["id"],
        conversation_id,
        message["index"],
        message["role"],
        message["content"],
        message["created_at_ms"],
        message["branch"],
        message["parent_id"],
        op.author,
        op.hlc_packed,
        op.hlc_node,
        op.op_id,
    )


def acu_row(entity_id: str, create: FoldOp, *, sharing_level: int) -> Row:
    """The row of ACU `entity_id` created by `create`, its first create op (by HLC), whose
    signature and device are the ACU's author signature and signer."""
    payload = create.payload
    provenance = cast(Mapping[str, object], payload["provenance"])
    return (
        entity_id,
        payload["author"],
        payload["content"],
        payload["type"],
        payload["source_time_ms"],
        payload["category"],
        payload["language"],
        provenance["conversation_id"],
        provenance["message_id"],
        provenance["index"],
        provenance["provider"],
        provenance["model"],
        int(sharing_level),
        create.signature,
        create.hlc_node,
        create.hlc_packed,
        create.hlc_node,
        create.op_id,
    )


def carried_link_row(
    entity_id: str, source: str, link: Mapping[str, object], create: FoldOp
) -> Row:
    """The row of `link`, an entry of the `links` of `create`, a create op of ACU `source`."""
    return (
        entity_id,
        source,
        link["target"],
        link["relation"],
        create.author,
        create.hlc_packed,
        create.hlc_node,
        create.op_id,
    )


def link_row(entity_id: str, create: FoldOp) -> Row:
    """The row an acu_link create op makes."""
    payload = create.payload
    return (
        entity_id,
        payload["source"],
        payload["target"],
        payload["relation"],
        payload["created_by"],
        create.hlc_packed,
        create.hlc_node,
        create.op_id,
    )


def load_entity_ops(conn: sqlite3.Connection, entity_type: str, entity_id: str) -> list[FoldOp]:
    """Every stored op of one entity that counts (EFFECTIVE_OPS)."""
    rows = conn.execute(
        f"SELECT {FOLD_COLUMNS} FROM sync_operation WHERE entity_id = ? AND entity_type = ?"
        f" AND {EFFECTIVE_OPS}",
        (entity_id, entity_type),
    )
    return [fold_op_from_row(row) for row in rows]


def refold(conn: sqlite3.Connection, entity_type: str, entity_id: str) -> Folded:
    """Fold one entity from its stored ops and write the result to its tables.

    Devices and identity keys are not folded one by one: a certificate or a revocation can
    change the trust of other devices (a cascade), so their ops recompute the whole trust state
    (store.trust_state), which is small.
    """
    if entity_type in TRUST_ENTITY_TYPES:
        before = _cuts(conn)
        refresh_trust(conn)
        _rebuild_past_changed_cuts(conn, before, _cuts(conn))
        return NOTHING
    folded = fold_entity(entity_type, entity_id, load_entity_ops(conn, entity_type, entity_id))
    write_folded(conn, entity_type, entity_id, folded)
    return folded


def _cuts(conn: sqlite3.Connection) -> dict[str, int | None]:
    return {device: cut for device, cut in conn.execute("SELECT peer_id, cut_seq FROM device")}


def _rebuild_past_changed_cuts(
    conn: sqlite3.Connection, before: dict[str, int | None], after: dict[str, int | None]
) -> None:
    """A trust change moved some devices' cuts (a revocation, a re-approval): the entities their
    ops past the lower of the two cuts touched are folded again from scratch, so ops a vault
    stored before it knew of a revocation stop counting, and count again after a re-approval."""
    for device in sorted(before.keys() | after.keys()):
        old, new = before.get(device), after.get(device)
        if old == new:
            continue
        lowest = min(c for c in (old, new) if c is not None)
        touched = conn.execute(
            "SELECT DISTINCT entity_type, entity_id FROM sync_operation"
            " WHERE device = ? AND seq > ? AND entity_type IN ('conversation', 'acu', 'acu_link')"
            " ORDER BY entity_type, entity_id",
            (device, lowest),
        ).fetchall()
        for entity_type, entity_id in touched:
            rebuild(conn, entity_type, entity_id)


def rebuild(conn: sqlite3.Connection, entity_type: str, entity_id: str) -> Folded:
    """Remove what the tables hold of one entity and write its fold afresh: for a state that
    may move backwards (ops that stopped counting), which `write_folded` never does."""
    carried: list[str] = []
    if entity_type == "conversation":
        conn.execute("DELETE FROM message WHERE conversation_id = ?", (entity_id,))
        conn.execute("DELETE FROM conversation WHERE id = ?", (entity_id,))
    elif entity_type == "acu":
        carried = [
            link
            for (link,) in conn.execute(
                "SELECT id FROM acu_link WHERE source = ? AND create_op_id IN"
                " (SELECT id FROM sync_operation WHERE entity_type = 'acu' AND entity_id = ?)",
                (entity_id, entity_id),
            )
        ]
        conn.executemany("DELETE FROM acu_link WHERE id = ?", [(link,) for link in carried])
        # The trigger lets an ACU go only when its create op stopped counting (migration 5).
        conn.execute("DELETE FROM acu WHERE id = ?", (entity_id,))
    elif not _carried_by_an_acu(conn, entity_id):
        conn.execute("DELETE FROM acu_link WHERE id = ?", (entity_id,))
    conn.execute(
        "DELETE FROM tombstone WHERE entity_type = ? AND entity_id = ?", (entity_type, entity_id)
    )
    folded = fold_entity(entity_type, entity_id, load_entity_ops(conn, entity_type, entity_id))
    write_folded(conn, entity_type, entity_id, folded)
    for link in carried:
        # A link the ACU no longer carries may still be made by acu_link ops of its own.
        if conn.execute("SELECT 1 FROM acu_link WHERE id = ?", (link,)).fetchone() is None:
            refold(conn, "acu_link", link)
    return folded


def write_folded(
    conn: sqlite3.Connection,
    entity_type: str,
    entity_id: str,
    folded: Folded,
    *,
    new: bool = False,
) -> None:
    """Make the materialized tables hold `folded` for this entity (`new`: the caller knows it
    has no rows yet, so an ACU's is inserted without looking first).

    A state only ever moves forward (nothing -> row -> tombstone; carried rows only added, or
    moved to an earlier op), since ops are only added. ACU rows are never replaced: only their
    mutable columns are updated, so the triggers that guard their content hold for this path
    too. A link row that an ACU carries is left to that ACU (module docstring).
    """
    if new:
        statements = new_entity_rows(entity_type, folded)
        if statements is not None:
            for statement, rows in statements:
                conn.executemany(statement, rows)
            return
    table, columns = ENTITY_TABLES[entity_type]
    if entity_type == "acu_link" and _carried_by_an_acu(conn, entity_id):
        if folded.tombstone is not None:
            conn.execute(_TOMBSTONE_UPSERT, folded.tombstone)
        return
    if folded.tombstone is not None:
        conn.execute(f"DELETE FROM {table} WHERE id = ?", (entity_id,))
        if entity_type == "conversation":
            conn.execute("DELETE FROM message WHERE conversation_id = ?", (entity_id,))
        conn.execute(_TOMBSTONE_UPSERT, folded.tombstone)
        return
    row = folded.row
    if row is None:
        return
    if entity_type != "acu":
        conn.execute(upsert_sql(table, columns), row)
        if folded.children:
            conn.executemany(MESSAGE_UPSERT, folded.children)
        return
    stored = conn.execute(
        f"SELECT {', '.join(_ACU_MUTABLE)} FROM acu WHERE id = ?", (entity_id,)
    ).fetchone()
    if stored is None:
        conn.execute(_ACU_INSERT, row)
    elif tuple(stored) != row[_ACU_MUTABLE_AT:]:
        assignments = ", ".join(f"{column} = ?" for column in _ACU_MUTABLE)
        conn.execute(
            f"UPDATE acu SET {assignments} WHERE id = ?", (*row[_ACU_MUTABLE_AT:], entity_id)
        )
    if folded.children:
        conn.executemany(LINK_UPSERT, folded.children)


def new_entity_rows(
    entity_type: str, folded: Folded
) -> tuple[tuple[str, Sequence[Row]], ...] | None:
    """What `write_folded(..., new=True)` writes for a conversation or an ACU with no rows yet,
    as (statement, rows) pairs: its row, then its messages or links. Nothing in them reads the
    tables, so a caller applying many such entities can gather their rows and insert each
    statement's with one `executemany` (a statement executed per entity costs ~5 us more per
    call: bench_sync's apply path). None for anything else (an acu_link, whose row may belong to
    an ACU, or a tombstone), which `write_folded` must look at the tables for."""
    row = folded.row
    if row is None or folded.tombstone is not None:
        return None
    if entity_type == "acu":
        return ((_ACU_INSERT, (row,)), (LINK_UPSERT, folded.children))
    if entity_type == "conversation":
        return ((_CONVERSATION_UPSERT, (row,)), (MESSAGE_UPSERT, folded.children))
    return None


def _carried_by_an_acu(conn: sqlite3.Connection, link: str) -> bool:
    """Whether the row of `link` comes from an ACU create op (the ACU's fold wrote it)."""
    return (
        conn.execute(
            "SELECT 1 FROM acu_link AS l JOIN sync_operation AS o ON o.id = l.create_op_id"
            " WHERE l.id = ? AND o.entity_type = 'acu'",
            (link,),
        ).fetchone()
        is not None
    )


def entity_ids_with_ops(conn: sqlite3.Connection, entity_ids: Sequence[str]) -> dict[str, set[str]]:
    """For each id among `entity_ids` that has ops in the log, the kinds of those ops."""
    found: dict[str, set[str]] = {}
    if not entity_ids:
        return found
    rows = conn.execute(
        "SELECT DISTINCT entity_id, kind FROM sync_operation"
        f" WHERE entity_id IN ({placeholders(len(entity_ids))})",
        tuple(entity_ids),
    )
    for entity_id, kind in rows:
        found.setdefault(entity_id, set()).add(kind)
    return found
