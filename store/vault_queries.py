"""Reading the vault: conversations, messages, ACUs and their history, for the CLI and the API.

Lists are newest first and keyset-paginated: a page ends with an opaque `next_cursor` (None on the
last page) that the caller passes back for the next page, so a page costs the same however deep
it is and rows written meanwhile never shift a page. ACUs are ordered by their create op's HLC
(then id), served by an index per filter (all, by conversation, by type); conversations by the
export's updated time (else created time, else 0), then id.
"""

from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from peewee import SqliteDatabase

from protocols.acu_generator import AcuProvenance
from protocols.hlc import Timestamp
from protocols.vault_records import AcuType, Branch, LinkRelation, SharingLevel
from store.errors import InvalidCursor
from store.vault_sql import (
    ACU_COLUMNS,
    CONVERSATION_COLUMNS,
    LINK_COLUMNS,
    MESSAGE_COLUMNS,
    chunks,
    connection,
    placeholders,
    select_sql,
)

T = TypeVar("T")

# A CLI page; the API may ask for more, up to MAX_LIMIT, which keeps one page's rows (ACU content
# is up to a few KB each) to a few MB.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000

_CONVERSATION_ORDER: Final = "coalesce(updated_at_ms, created_at_ms, 0)"


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationRow:
    id: str
    owner: str
    title: str
    provider: str
    model: str | None
    source_id: str
    created_at_ms: int | None
    updated_at_ms: int | None
    hlc: Timestamp  # of the create op
    create_op_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageRow:
    id: str
    conversation_id: str
    index: int
    role: str
    content: str
    created_at_ms: int | None
    branch: Branch
    parent_id: str | None
    author: str
    hlc: Timestamp
    create_op_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationDetail:
    """A conversation with its messages: by index, the main branch before alternates."""

    conversation: ConversationRow
    messages: tuple[MessageRow, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class AcuRow:
    id: str
    author: str
    content: str
    type: AcuType
    source_time_ms: int
    category: str
    language: str | None
    provenance: AcuProvenance
    sharing_level: SharingLevel
    author_signature: bytes
    author_signer: str
    hlc: Timestamp
    create_op_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AcuLinkRow:
    id: str
    source: str
    target: str
    relation: LinkRelation
    created_by: str
    hlc: Timestamp
    create_op_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None  # None: this is the last page


def list_conversations(
    db: SqliteDatabase, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[ConversationRow]:
    """Conversations, most recently updated first. Raises `InvalidCursor`."""
    limit = _check_limit(limit)
    where = ""
    params: tuple[int, str] | tuple[()] = ()
    if cursor is not None:
        where = f"WHERE ({_CONVERSATION_ORDER}, id) < (?, ?)"
        params = _parse_cursor(cursor)
    rows = (
        connection(db)
        .execute(
            f"SELECT {', '.join(CONVERSATION_COLUMNS)}, {_CONVERSATION_ORDER} FROM conversation"
            f" {where} ORDER BY {_CONVERSATION_ORDER} DESC, id DESC LIMIT ?",
            (*params, limit + 1),
        )
        .fetchall()
    )
    items = tuple(_conversation(row[:-1]) for row in rows[:limit])
    more = len(rows) > limit
    return Page(
        items=items, next_cursor=_cursor(rows[limit - 1][-1], items[-1].id) if more else None
    )


def get_conversation(db: SqliteDatabase, conversation_id: str) -> ConversationDetail | None:
    """A conversation and its messages, or None if it is not in the vault (or was deleted)."""
    conn = connection(db)
    row = conn.execute(
        f"{select_sql('conversation', CONVERSATION_COLUMNS)} WHERE id = ?", (conversation_id,)
    ).fetchone()
    if row is None:
        return None
    messages = conn.execute(
        f"{select_sql('message', MESSAGE_COLUMNS)} WHERE conversation_id = ?"
        " ORDER BY position, branch != 'main', id",
        (conversation_id,),
    )
    return ConversationDetail(
        conversation=_conversation(row), messages=tuple(_message(m) for m in messages)
    )


def list_acus(
    db: SqliteDatabase,
    conversation_id: str | None = None,
    acu_type: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[AcuRow]:
    """ACUs, newest first, optionally of one conversation and/or one type.

    Raises `InvalidCursor`.
    """
    limit = _check_limit(limit)
    conditions: list[str] = []
    params: list[object] = []
    if conversation_id is not None:
        conditions.append("conversation_id = ?")
        params.append(conversation_id)
    if acu_type is not None:
        conditions.append("type = ?")
        params.append(str(acu_type))
    if cursor is not None:
        conditions.append("(hlc_packed, id) < (?, ?)")
        params.extend(_parse_cursor(cursor))
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = (
        connection(db)
        .execute(
            f"{select_sql('acu', ACU_COLUMNS)} {where} ORDER BY hlc_packed DESC, id DESC LIMIT ?",
            (*params, limit + 1),
        )
        .fetchall()
    )
    items = tuple(_acu(row) for row in rows[:limit])
    more = len(rows) > limit
    return Page(
        items=items, next_cursor=_cursor(rows[limit - 1][15], items[-1].id) if more else None
    )


def get_acu(db: SqliteDatabase, acu_id: str) -> AcuRow | None:
    row = (
        connection(db)
        .execute(f"{select_sql('acu', ACU_COLUMNS)} WHERE id = ?", (acu_id,))
        .fetchone()
    )
    return None if row is None else _acu(row)


def acu_links(db: SqliteDatabase, acu_id: str) -> list[AcuLinkRow]:
    """Every link from or to an ACU, oldest first."""
    rows = connection(db).execute(
        f"{select_sql('acu_link', LINK_COLUMNS)} WHERE source = ?"
        f" UNION {select_sql('acu_link', LINK_COLUMNS)} WHERE target = ?"
        " ORDER BY hlc_packed, hlc_node, id",
        (acu_id, acu_id),
    )
    return [_link(row) for row in rows]


def acu_history(db: SqliteDatabase, acu_id: str) -> list[AcuRow]:
    """Every version of an ACU, oldest to newest: the ACUs reachable from it through version_of
    links in either direction (concurrent edits make branches; they are all listed). Empty if
    the ACU is not in the vault."""
    conn = connection(db)
    seen = {acu_id}
    frontier = [acu_id]
    while frontier:
        found: set[str] = set()
        for chunk in chunks(frontier):
            marks = placeholders(len(chunk))
            found.update(
                other
                for (other,) in conn.execute(
                    f"SELECT target FROM acu_link WHERE relation = 'version_of'"
                    f" AND source IN ({marks})"
                    f" UNION SELECT source FROM acu_link WHERE relation = 'version_of'"
                    f" AND target IN ({marks})",
                    (*chunk, *chunk),
                )
            )
        frontier = sorted(found - seen)
        seen.update(found)
    versions: list[AcuRow] = []
    for chunk in chunks(sorted(seen)):
        rows = conn.execute(
            f"{select_sql('acu', ACU_COLUMNS)} WHERE id IN ({placeholders(len(chunk))})", chunk
        )
        versions.extend(_acu(row) for row in rows)
    return sorted(versions, key=lambda acu: (acu.hlc, acu.id))


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _cursor(order: int, row_id: str) -> str:
    return f"{order}.{row_id}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    order, dot, row_id = cursor.partition(".")
    if not dot or not row_id or not order.lstrip("-").isdigit():
        raise InvalidCursor(cursor)
    return int(order), row_id


def _stamp(packed: int, node: str) -> Timestamp:
    return Timestamp.from_packed(packed, node)


# The row functions take `Any`: sqlite3 rows are untyped tuples, whose columns the SELECTs fix.


def _conversation(row: Any) -> ConversationRow:
    (id_, owner, title, provider, model, source_id, created, updated, packed, node, op_id) = row
    return ConversationRow(
        id=id_,
        owner=owner,
        title=title,
        provider=provider,
        model=model,
        source_id=source_id,
        created_at_ms=created,
        updated_at_ms=updated,
        hlc=_stamp(packed, node),
        create_op_id=op_id,
    )


def _message(row: Any) -> MessageRow:
    (id_, conversation, index, role, content, created, branch, parent, author, *stamp) = row
    packed, node, op_id = stamp
    return MessageRow(
        id=id_,
        conversation_id=conversation,
        index=index,
        role=role,
        content=content,
        created_at_ms=created,
        branch=Branch(branch),
        parent_id=parent,
        author=author,
        hlc=_stamp(packed, node),
        create_op_id=op_id,
    )


def _acu(row: Any) -> AcuRow:
    (id_, author, content, acu_type, source_time, category, language, *rest) = row
    conversation, message, index, provider, model, level, signature, signer, *stamp = rest
    packed, node, op_id = stamp
    return AcuRow(
        id=id_,
        author=author,
        content=content,
        type=AcuType(acu_type),
        source_time_ms=source_time,
        category=category,
        language=language,
        provenance=AcuProvenance(
            conversation_id=conversation,
            message_id=message,
            index=index,
            provider=provider,
            model=model,
        ),
        sharing_level=SharingLevel(level),
        author_signature=bytes(signature),
        author_signer=signer,
        hlc=_stamp(packed, node),
        create_op_id=op_id,
    )


def _link(row: Any) -> AcuLinkRow:
    id_, source, target, relation, created_by, packed, node, op_id = row
    return AcuLinkRow(
        id=id_,
        source=source,
        target=target,
        relation=LinkRelation(relation),
        created_by=created_by,
        hlc=_stamp(packed, node),
        create_op_id=op_id,
    )
