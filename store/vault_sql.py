"""The vault's SQL plumbing: the sqlite3 connection behind a peewee database, and its columns.

The vault writes through the connection's `executemany` rather than peewee's query builder: an
import writes several rows per ACU (its op, its row, its links' rows, a share of the messages'),
and building each INSERT in Python costs more than signing the op (measured with the import
benchmark). The SQL stays in the `vault_*`
modules, next to the code that needs it; the peewee models in `store.models` describe the tables.

The connection is the one peewee opened for this thread, so these statements run inside the
transaction `write_transaction(db)` began (peewee runs sqlite3 in autocommit mode and issues BEGIN
itself).
"""

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Final, TypeVar, cast

from peewee import SqliteDatabase

T = TypeVar("T")

# SQLite's default limit on bound parameters is 32,766 (since 3.32); lists of ids are bound in
# chunks well under it, so one statement never approaches the limit whatever the build.
ID_CHUNK: Final = 5000

# The columns of the materialized tables, in table order: a folded row is a tuple in this order.
CONVERSATION_COLUMNS: Final = (
    "id",
    "owner",
    "title",
    "provider",
    "model",
    "source_id",
    "created_at_ms",
    "updated_at_ms",
    "hlc_packed",
    "hlc_node",
    "create_op_id",
)
MESSAGE_COLUMNS: Final = (
    "id",
    "conversation_id",
    "position",
    "role",
    "content",
    "created_at_ms",
    "branch",
    "parent_id",
    "author",
    "hlc_packed",
    "hlc_node",
    "create_op_id",
)
ACU_COLUMNS: Final = (
    "id",
    "author",
    "content",
    "type",
    "source_time_ms",
    "category",
    "language",
    "conversation_id",
    "message_id",
    "position",
    "provider",
    "model",
    "sharing_level",
    "author_signature",
    "author_signer",
    "hlc_packed",
    "hlc_node",
    "create_op_id",
)
LINK_COLUMNS: Final = (
    "id",
    "source",
    "target",
    "relation",
    "created_by",
    "hlc_packed",
    "hlc_node",
    "create_op_id",
)
# Without the table's local `id`.
TOMBSTONE_COLUMNS: Final = ("entity_type", "entity_id", "op_id", "hlc_packed", "hlc_node")

# Entity type -> (materialized table, its columns). Messages have a table but are not an entity
# type: they are folded from their conversation's ops (store.vault_fold).
# The ops that count (store/TRUST_DESIGN.md, cuts): all but those of a device that is no longer
# trusted past its cut. Such ops are refused once the revocation is known; this keeps out those a
# vault stored before it knew, so that every replica folds the same ops whatever the order.
EFFECTIVE_OPS: Final = (
    "NOT EXISTS (SELECT 1 FROM device AS d WHERE d.peer_id = sync_operation.device"
    " AND d.cut_seq IS NOT NULL AND sync_operation.seq > d.cut_seq)"
)

ENTITY_TABLES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "conversation": ("conversation", CONVERSATION_COLUMNS),
    "acu": ("acu", ACU_COLUMNS),
    "acu_link": ("acu_link", LINK_COLUMNS),
}

# The op's signed wire bytes, and beside them only what is indexed or queried without decoding
# them: the id, the chain position (device, seq), the stamp (chain heads, the clock check), the
# entity and the kind (an import asks which of its ids have ops, and of which kinds). Everything
# else (author, prev, payload, signature) is read from `wire`; the HLC node is the device.
OP_COLUMNS: Final = (
    "id",
    "device",
    "seq",
    "hlc_packed",
    "entity_type",
    "entity_id",
    "kind",
    "wire",
    "received_at_ms",
)

Row = tuple[object, ...]


def connection(db: SqliteDatabase) -> sqlite3.Connection:
    """This thread's sqlite3 connection of `db` (opened on first use)."""
    return cast(sqlite3.Connection, db.connection())  # type: ignore[no-untyped-call]


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)`."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def select_sql(table: str, columns: Sequence[str]) -> str:
    return f"SELECT {', '.join(columns)} FROM {table}"


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def chunks(items: Iterable[T], size: int = ID_CHUNK) -> Iterator[list[T]]:
    """`items` in lists of at most `size`."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
