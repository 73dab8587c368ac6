"""Importing conversations: everything an import brings that the vault does not hold yet.

The hot path of the vault, so an import writes as few ops as the design allows: one per
conversation and one per ACU. A new conversation's create op carries all its messages; a new
ACU's create op carries the links whose source it is. Per conversation, one SELECT finds which
of its ids (the conversation and its ACUs: content ids) already have ops; every new entity gets
its signed op and its rows (the conversation's messages, the ACU's links), built in Python and
inserted with `executemany`, one statement per table. The rows are what a fold of the single
create op gives (the same row functions, store.vault_fold), so `verify_vault` finds them equal
to the log's replay.

Importing again what the vault holds:

- a conversation the vault holds gets one update op with the messages it lacks (a continued
  conversation), or none; one that was deleted stays deleted: it is skipped whole;
- an ACU the vault holds is not created again, so a link the generator makes from it now (to an
  ACU new in this import: the `next` of the last exchange) cannot travel in its create op: it
  gets an acu_link op of its own, unless the vault holds that link already;
- an entity with only updates in the log (they arrived before its create) gets its create by
  the general path, which folds the waiting updates in.
"""

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import cast

from peewee import SqliteDatabase

from protocols.acu_generator import GeneratedLink, generate_acus
from protocols.oplog import OpKind
from protocols.vault_records import (
    ImportedConversation,
    SharingLevel,
    conversation_id,
    message_records,
)
from store.database import write_transaction
from store.vault_fold import (
    LINK_UPSERT,
    acu_row,
    carried_link_row,
    conversation_row,
    entity_ids_with_ops,
    fold_op,
    message_row,
)
from store.vault_log import LocalLog, LocalSigner
from store.vault_sql import (
    ACU_COLUMNS,
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    Row,
    chunks,
    connection,
    insert_sql,
    placeholders,
)

# Table -> the statement its new rows are written with. Links may exist already with the same id
# (an acu_link op made them before their source ACU arrived): the ACU's row replaces theirs
# (store.vault_fold); the other rows are of entities with no op yet, so they cannot exist.
_INSERTS = {
    "conversation": insert_sql("conversation", CONVERSATION_COLUMNS),
    "message": insert_sql("message", MESSAGE_COLUMNS),
    "acu": insert_sql("acu", ACU_COLUMNS),
    "acu_link": LINK_UPSERT,
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
    """Write what `conversation` holds and the vault does not (module docstring)."""
    author = signer.author
    key = conversation_id(author, conversation.provider, conversation.source_id)
    messages = message_records(conversation, conversation_id=key)
    acus = generate_acus(
        conversation,
        author=author,
        conversation_id=key,
        message_ids=[message.id for message in messages[: len(conversation.messages)]],
    )
    link_count = sum(len(acu.links) for acu in acus)
    known: dict[str, set[str]] = {}
    for chunk in chunks([key, *(acu.id for acu in acus)]):
        known.update(entity_ids_with_ops(conn, chunk))
    conversation_kinds = known.get(key)
    if conversation_kinds is not None and "delete" in conversation_kinds:
        return ImportResult(
            conversations_skipped=1,
            messages_skipped=len(messages),
            acus_skipped=len(acus),
            links_skipped=link_count,
        )

    rows: dict[str, list[Row]] = {table: [] for table in _INSERTS}
    general: list[tuple[str, str, OpKind, dict[str, object]]] = []
    written_before = log.written

    conversations_created = messages_created = 0
    if conversation_kinds is None:
        payload = conversation.create_payload(messages)
        create = fold_op(log.append("conversation", key, OpKind.CREATE, payload))
        rows["conversation"].append(conversation_row(key, create))
        entries = cast(list[Mapping[str, object]], payload["messages"])
        rows["message"].extend(message_row(key, entry, create) for entry in entries)
        conversations_created, messages_created = 1, len(messages)
    elif "create" not in conversation_kinds:
        payload = conversation.create_payload(messages)
        general.append(("conversation", key, OpKind.CREATE, payload))
        conversations_created, messages_created = 1, len(messages)
    else:
        held = {
            message_id
            for (message_id,) in conn.execute(
                "SELECT id FROM message WHERE conversation_id = ?", (key,)
            )
        }
        new = [message.to_wire() for message in messages if message.id not in held]
        if new:
            # No op of the conversation carries these (they would have rows): their rows are
            # this update's, and the conversation's own row does not change.
            update = fold_op(log.append("conversation", key, OpKind.UPDATE, {"messages": new}))
            rows["message"].extend(message_row(key, entry, update) for entry in new)
            messages_created = len(new)

    acus_created = links_created = 0
    later_links: list[GeneratedLink] = []
    for acu in acus:
        kinds = known.get(acu.id)
        if kinds is not None and kinds != {"update"}:
            later_links.extend(acu.links)
            continue
        payload = acu.create_payload()
        if kinds is None:
            create = fold_op(log.append("acu", acu.id, OpKind.CREATE, payload))
            rows["acu"].append(acu_row(acu.id, create, sharing_level=SharingLevel.SELF))
            rows["acu_link"].extend(
                carried_link_row(link.id, acu.id, link.to_wire(), create) for link in acu.links
            )
        else:
            general.append(("acu", acu.id, OpKind.CREATE, payload))
        acus_created += 1
        links_created += len(acu.links)
    held_links = _links_held(conn, [link.id for link in later_links])
    for link in later_links:
        if link.id not in held_links:
            payload = link.create_payload(created_by=author)
            general.append(("acu_link", link.id, OpKind.CREATE, payload))
            links_created += 1

    for table, table_rows in rows.items():
        if table_rows:
            conn.executemany(_INSERTS[table], table_rows)
    for entity_type, entity_id, kind, payload in general:
        log.write(entity_type, entity_id, kind, payload)
    log.flush()
    return ImportResult(
        conversations_created=conversations_created,
        conversations_skipped=1 - conversations_created,
        messages_created=messages_created,
        messages_skipped=len(messages) - messages_created,
        acus_created=acus_created,
        acus_skipped=len(acus) - acus_created,
        links_created=links_created,
        links_skipped=link_count - links_created,
        ops_written=log.written - written_before,
    )


def _links_held(conn: sqlite3.Connection, link_ids: list[str]) -> set[str]:
    """The links among `link_ids` the vault has a row or an op of (a deleted one included)."""
    held: set[str] = set()
    for chunk in chunks(link_ids):
        marks = placeholders(len(chunk))
        held.update(
            link
            for (link,) in conn.execute(
                f"SELECT id FROM acu_link WHERE id IN ({marks})"
                f" UNION SELECT entity_id FROM sync_operation WHERE entity_id IN ({marks})",
                (*chunk, *chunk),
            )
        )
    return held
