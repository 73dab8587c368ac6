"""The vault API: the only way replicated data (conversations, messages, ACUs, links) is written.

Functions, not a class: each takes `db` first, like every store function, so the node runs them
as `await database.write(import_conversation, signer, conversation, now_ms)`. What a class would
hold is passed in: `LocalSigner` (the author's DID, this device's peer id and key) to the local
writes, and `local_device` to `apply_ops`. Time is an argument (`now_ms`, Unix milliseconds).

Local writes sign one op per change with the device key and write it with the rows it changes,
this device's chain head and its persisted clock, in one transaction: all or nothing.

- `import_conversation(s)` creates what an imported conversation holds and the vault does not:
  the conversation with its messages (one op), the messages a continued conversation adds (one
  update op), the ACUs `protocols.acu_generator` cuts from it, each with its links (one op per
  ACU). Ids are content ids, so importing the same conversation again creates nothing and
  writes no op. A conversation that was deleted stays deleted: it is skipped whole.
- `edit_acu` creates a new ACU (the new content, the old one's type, category, language and
  provenance; its source time is the edit's time, so every version has its own id and a revert
  to earlier text is a new version, not a cycle) and a `version_of` link from it to the old one
  (an acu_link op). The old ACU is unchanged: ACUs are immutable.
- `set_title` renames a conversation (last writer wins); `raise_sharing_level` raises an ACU's
  sharing level, never lowers it (`SharingLevelLowered`); `delete_conversation` tombstones a
  conversation, which removes its messages (its ACUs stay: ACUs are never deleted).

The import is in store.vault_import, remote ops go through `apply_ops` (store.vault_apply),
`state_hash` and `verify_vault` (store.vault_state) check the result, and the queries for the CLI
are in store.vault_queries. Everything is re-exported here: callers import `store.vault`.
"""

from peewee import SqliteDatabase

from protocols import vault_records
from protocols.oplog import OpKind
from protocols.vault_records import LinkRelation, SharingLevel
from store.database import write_transaction
from store.errors import AcuNotFound, AcuUnchanged, ConversationNotFound, SharingLevelLowered
from store.vault_apply import ApplyReport, RefusedOp, apply_ops
from store.vault_fold import entity_ids_with_ops
from store.vault_import import ImportResult, import_conversation, import_conversations
from store.vault_log import LocalLog, LocalSigner
from store.vault_queries import (
    AcuLinkRow,
    AcuRow,
    ConversationDetail,
    ConversationRow,
    MessageRow,
    Page,
    acu_history,
    acu_links,
    get_acu,
    get_conversation,
    list_acus,
    list_conversations,
)
from store.vault_sql import connection
from store.vault_state import VaultProblem, state_hash, verify_vault

__all__ = [
    "AcuLinkRow",
    "AcuRow",
    "ApplyReport",
    "ConversationDetail",
    "ConversationRow",
    "ImportResult",
    "LocalSigner",
    "MessageRow",
    "Page",
    "RefusedOp",
    "VaultProblem",
    "acu_history",
    "acu_links",
    "apply_ops",
    "delete_conversation",
    "edit_acu",
    "get_acu",
    "get_conversation",
    "import_conversation",
    "import_conversations",
    "list_acus",
    "list_conversations",
    "raise_sharing_level",
    "set_title",
    "state_hash",
    "verify_vault",
]


def edit_acu(
    db: SqliteDatabase, signer: LocalSigner, acu_id: str, new_content: str, now_ms: int
) -> str:
    """Create the next version of an ACU with `new_content`; return the new ACU's id.

    Raises `AcuNotFound`, or `AcuUnchanged` if the content is the same.
    """
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT content, type, category, language, conversation_id, message_id, position,"
            " provider, model FROM acu WHERE id = ?",
            (acu_id,),
        ).fetchone()
        if row is None:
            raise AcuNotFound(acu_id)
        content, acu_type, category, language, conversation, message, index, provider, model = row
        if content == new_content:
            raise AcuUnchanged(acu_id)
        new_id = vault_records.acu_id(signer.author, new_content, acu_type, now_ms)
        version_link = vault_records.link_id(new_id, acu_id, LinkRelation.VERSION_OF)
        existing = entity_ids_with_ops(conn, [new_id, version_link])
        log = LocalLog(conn, signer, now_ms)
        if "create" not in existing.get(new_id, ()):
            payload: dict[str, object] = {
                "author": signer.author,
                "content": new_content,
                "type": acu_type,
                "category": category,
                "language": language,
                "source_time_ms": now_ms,
                "provenance": {
                    "conversation_id": conversation,
                    "message_id": message,
                    "index": index,
                    "provider": provider,
                    "model": model,
                },
                "sharing_level": SharingLevel.SELF.to_wire(),
                "links": [],
            }
            log.write("acu", new_id, OpKind.CREATE, payload)
        if not existing.get(version_link):
            payload = {
                "source": new_id,
                "target": acu_id,
                "relation": LinkRelation.VERSION_OF.value,
                "created_by": signer.author,
            }
            log.write("acu_link", version_link, OpKind.CREATE, payload)
        log.close()
    return new_id


def set_title(
    db: SqliteDatabase, signer: LocalSigner, conversation_id: str, title: str, now_ms: int
) -> None:
    """Rename a conversation (no op if it already has this title). Raises
    `ConversationNotFound`."""
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT title FROM conversation WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise ConversationNotFound(conversation_id)
        if row[0] == title:
            return
        log = LocalLog(conn, signer, now_ms)
        log.write("conversation", conversation_id, OpKind.UPDATE, {"title": title})
        log.close()


def raise_sharing_level(
    db: SqliteDatabase, signer: LocalSigner, acu_id: str, level: SharingLevel, now_ms: int
) -> None:
    """Raise an ACU's sharing level (no op if it is there already).

    Raises `AcuNotFound`, or `SharingLevelLowered` for a level below the current one.
    """
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute("SELECT sharing_level FROM acu WHERE id = ?", (acu_id,)).fetchone()
        if row is None:
            raise AcuNotFound(acu_id)
        current = SharingLevel(row[0])
        if level < current:
            raise SharingLevelLowered(acu_id, current=current.name, requested=level.name)
        if level == current:
            return
        log = LocalLog(conn, signer, now_ms)
        payload: dict[str, object] = {"sharing_level": level.to_wire()}
        log.write("acu", acu_id, OpKind.UPDATE, payload)
        log.close()


def delete_conversation(
    db: SqliteDatabase, signer: LocalSigner, conversation_id: str, now_ms: int
) -> None:
    """Delete a conversation and its messages (a tombstone; its ACUs stay). Raises
    `ConversationNotFound`."""
    with write_transaction(db):
        conn = connection(db)
        if not conn.execute(
            "SELECT 1 FROM conversation WHERE id = ?", (conversation_id,)
        ).fetchone():
            raise ConversationNotFound(conversation_id)
        log = LocalLog(conn, signer, now_ms)
        log.write("conversation", conversation_id, OpKind.DELETE, {})
        log.close()
