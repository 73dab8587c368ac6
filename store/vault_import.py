"""Importing conversations: every entity an import brings that the vault does not hold yet.

The hot path of the vault. Per conversation, one SELECT finds which of its ids (conversation,
messages, ACUs, links: all content ids) already have ops; every new entity gets its signed op
and its row, both built in Python and inserted with `executemany`, one statement per table. The
rows are what a fold of the single create op gives (the same row functions, store.vault_fold), so
`verify_vault` finds them equal to the log's replay.
"""

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from peewee import SqliteDatabase

from protocols.acu_generator import generate_acus
from protocols.oplog import OpKind, SyncOperation
from protocols.vault_records import (
    ImportedConversation,
    SharingLevel,
    conversation_id,
    message_records,
)
from store.database import write_transaction
from store.vault_fold import (
    FoldOp,
    acu_row,
    conversation_row,
    entity_ids_with_ops,
    link_row,
    message_row,
)
from store.vault_log import LocalLog, LocalSigner
from store.vault_sql import (
    ACU_COLUMNS,
    CONVERSATION_COLUMNS,
    LINK_COLUMNS,
    MESSAGE_COLUMNS,
    Row,
    chunks,
    connection,
    insert_sql,
)

_INSERTS = {
    "conversation": insert_sql("conversation", CONVERSATION_COLUMNS),
    "message": insert_sql("message", MESSAGE_COLUMNS),
    "acu": insert_sql("acu", ACU_COLUMNS),
    "acu_link": insert_sql("acu_link", LINK_COLUMNS),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ImportResult:
    """What an import created and what it found already in the vault (or deleted)."""

    conversations_created: int = 0
    conversations_skipped: int = 0
    messages_created: int = 0
    messages_skipped: int = 0
    acus_created: int = 0
    acus_skipped: int = 0
    links_created: int = 0
    links_skipped: int = 0
    ops_written: int = 0

    def __add__(self, other: "ImportResult") -> "ImportResult":
        return ImportResult(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


def import_conversation(
    db: SqliteDatabase, signer: LocalSigner, conversation: ImportedConversation, now_ms: int
) -> ImportResult:
    """Import one conversation in one transaction (module docstring)."""
    return import_conversations(db, signer, (conversation,), now_ms)


def import_conversations(
    db: SqliteDatabase,
    signer: LocalSigner,
    conversations: Iterable[ImportedConversation],
    now_ms: int,
) -> ImportResult:
    """Import several conversations in one transaction: all of them or none.

    Batching amortizes the commit (an fsync with synchronous=FULL) over the batch; a caller that
    wants a failure to cost one conversation only imports them one by one.
    """
    total = ImportResult()
    with write_transaction(db):
        conn = connection(db)
        log = LocalLog(conn, signer, now_ms)
        for conversation in conversations:
            total += _import(conn, log, signer, conversation)
        log.close()
    return total


def _import(
    conn: sqlite3.Connection,
    log: LocalLog,
    signer: LocalSigner,
    conversation: ImportedConversation,
) -> ImportResult:
    """Write what `conversation` holds and the vault does not, with one SELECT of known ids.

    An entity with no op in the log is new: its op is signed and its row built here and both are
    inserted in bulk. One with a create or a delete exists (or existed): skipped. One with only
    updates (they arrived before its create) gets its create by the general path, which folds the
    waiting updates in.
    """
    author = signer.author
    conversation_key = conversation_id(author, conversation.provider, conversation.source_id)
    messages = message_records(conversation, conversation_id=conversation_key)
    acus = generate_acus(
        conversation,
        author=author,
        conversation_id=conversation_key,
        message_ids=[message.id for message in messages[: len(conversation.messages)]],
    )
    links = [link for acu in acus for link in acu.links]
    known: dict[str, set[str]] = {}
    for chunk in chunks(
        [conversation_key]
        + [m.id for m in messages]
        + [a.id for a in acus]
        + [link.id for link in links]
    ):
        known.update(entity_ids_with_ops(conn, chunk))
    if "delete" in known.get(conversation_key, ()):
        return ImportResult(
            conversations_skipped=1,
            messages_skipped=len(messages),
            acus_skipped=len(acus),
            links_skipped=len(links),
        )

    rows: dict[str, list[Row]] = {table: [] for table in _INSERTS}
    general: list[tuple[str, str, dict[str, object]]] = []
    written_before = log.written

    def wanted(entity_id: str) -> bool:
        kinds = known.get(entity_id)
        return kinds is None or kinds == {"update"}

    def add(entity_type: str, entity_id: str, payload: dict[str, object]) -> int:
        if entity_id in known:
            general.append((entity_type, entity_id, payload))
        else:
            op = log.append(entity_type, entity_id, OpKind.CREATE, payload)
            rows[entity_type].append(_row(entity_type, entity_id, op, payload))
        known[entity_id] = {"create"}  # a repeat further down is not created twice
        return 1

    created = 0
    if wanted(conversation_key):
        created = add("conversation", conversation_key, conversation.create_payload())
    messages_created = sum(
        add("message", message.id, message.create_payload())
        for message in messages
        if wanted(message.id)
    )
    acus_created = links_created = 0
    for acu in acus:
        if wanted(acu.id):
            signature = signer.sign_acu(acu.id)
            acus_created += add(
                "acu",
                acu.id,
                acu.create_payload(author_signature=signature, author_signer=signer.device),
            )
        for link in acu.links:
            if wanted(link.id):
                links_created += add("acu_link", link.id, link.create_payload(created_by=author))

    for table, table_rows in rows.items():
        if table_rows:
            conn.executemany(_INSERTS[table], table_rows)
    for entity_type, entity_id, payload in general:
        log.write(entity_type, entity_id, OpKind.CREATE, payload)
    log.flush()
    return ImportResult(
        conversations_created=created,
        conversations_skipped=1 - created,
        messages_created=messages_created,
        messages_skipped=len(messages) - messages_created,
        acus_created=acus_created,
        acus_skipped=len(acus) - acus_created,
        links_created=links_created,
        links_skipped=len(links) - links_created,
        ops_written=log.written - written_before,
    )


def _row(entity_type: str, entity_id: str, op: SyncOperation, payload: Mapping[str, object]) -> Row:
    """The row a fold of this one create op gives (store.vault_fold)."""
    create = FoldOp(
        hlc_packed=op.hlc.packed(),
        hlc_node=op.hlc.node,
        op_id=op.id,
        author=op.author,
        kind=OpKind.CREATE.value,
        payload=payload,
    )
    if entity_type == "conversation":
        return conversation_row(entity_id, create)
    if entity_type == "message":
        return message_row(entity_id, create)
    if entity_type == "acu":
        return acu_row(entity_id, create, sharing_level=SharingLevel.SELF)
    return link_row(entity_id, create)
