"""Migration 2: the vault tables, no foreign keys between them, and the triggers that refuse."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation, snapshot

from protocols.vault_records import SharingLevel
from store.sql import execute_sql
from store.vault import import_conversation, raise_sharing_level, state_hash, verify_vault

REPLICATED = ("conversation", "message", "acu", "acu_link", "tombstone", "sync_operation")


@pytest.fixture
def owner() -> Owner:
    return Owner(count=1)


@pytest.fixture
def db(tmp_path: Path, owner: Owner) -> Iterator[peewee.SqliteDatabase]:
    db = owner.open_vault(tmp_path / "vault.db")
    import_conversation(db, owner.devices[0].signer, conversation(1), T0)
    yield db
    db.close()


def refused(db: peewee.SqliteDatabase, statement: str, message: str) -> None:
    """`statement` raises with `message` and leaves every table as it was."""
    before = snapshot(db)
    with pytest.raises(peewee.IntegrityError, match=message):
        execute_sql(db, statement)
    assert snapshot(db) == before


def test_replicated_tables_have_no_foreign_keys(db: peewee.SqliteDatabase) -> None:
    for table in REPLICATED:
        assert execute_sql(db, f"PRAGMA foreign_key_list({table})").fetchall() == []


def test_an_op_is_never_updated(db: peewee.SqliteDatabase) -> None:
    refused(
        db,
        "UPDATE sync_operation SET received_at_ms = 0",
        "append-only: a stored op is never updated",
    )


def test_an_op_is_never_deleted(db: peewee.SqliteDatabase) -> None:
    refused(db, "DELETE FROM sync_operation", "append-only: a stored op is never deleted")


def test_connections_have_recursive_triggers_on(db: peewee.SqliteDatabase) -> None:
    assert execute_sql(db, "PRAGMA recursive_triggers").fetchone()[0] == 1


def test_an_op_is_never_replaced(db: peewee.SqliteDatabase) -> None:
    # REPLACE deletes the old row, which fires the DELETE trigger (recursive_triggers is on).
    refused(
        db,
        "INSERT OR REPLACE INTO sync_operation SELECT * FROM sync_operation LIMIT 1",
        "append-only: a stored op is never deleted",
    )
    refused(
        db,
        "REPLACE INTO sync_operation SELECT * FROM sync_operation LIMIT 1",
        "append-only: a stored op is never deleted",
    )


@pytest.mark.parametrize(
    "assignment",
    [
        "content = 'rewritten'",
        "author = 'did:key:z6MkSomeoneElse'",
        "type = 'text'",
        "source_time_ms = source_time_ms + 1",
        "id = 'bafyreiother'",
    ],
)
def test_acu_content_is_immutable(db: peewee.SqliteDatabase, assignment: str) -> None:
    refused(db, f"UPDATE acu SET {assignment}", "content is immutable")


@pytest.mark.parametrize(
    "assignment",
    [
        "category = 'other'",
        "language = 'rust'",
        "conversation_id = 'elsewhere'",
        "message_id = 'elsewhere'",
        "position = position + 1",
        "provider = 'claude'",
        "model = 'another'",
        "author_signature = zeroblob(64)",
        "author_signer = 'another device'",
        "create_op_id = create_op_id || 'x'",
        "hlc_packed = hlc_packed + 1",
    ],
)
def test_acu_provenance_and_signature_are_immutable(
    db: peewee.SqliteDatabase, assignment: str
) -> None:
    refused(db, f"UPDATE acu SET {assignment}", "provenance changes only to an earlier create")


def test_acu_is_never_deleted(db: peewee.SqliteDatabase) -> None:
    refused(db, "DELETE FROM acu", "an ACU is never deleted")


def test_acu_is_never_replaced(db: peewee.SqliteDatabase) -> None:
    refused(db, "INSERT OR REPLACE INTO acu SELECT * FROM acu LIMIT 1", "an ACU is never deleted")
    refused(db, "REPLACE INTO acu SELECT * FROM acu LIMIT 1", "an ACU is never deleted")


def test_a_replaced_op_or_acu_is_found_by_verify(db: peewee.SqliteDatabase) -> None:
    # Another program's connection, without recursive triggers, can REPLACE past the triggers.
    execute_sql(db, "PRAGMA recursive_triggers = OFF")
    op_id = execute_sql(db, "SELECT id FROM sync_operation WHERE seq = 1").fetchone()[0]
    execute_sql(
        db,
        "INSERT OR REPLACE INTO sync_operation SELECT id, device, seq, hlc_packed + 1,"
        " entity_type, entity_id, kind, wire, 0"
        f" FROM sync_operation WHERE id = '{op_id}'",
    )
    acu_id = execute_sql(db, "SELECT id FROM acu LIMIT 1").fetchone()[0]
    execute_sql(
        db,
        "INSERT OR REPLACE INTO acu SELECT id, author, 'replaced', type, source_time_ms, category,"
        " language, conversation_id, message_id, position, provider, model, sharing_level,"
        f" author_signature, author_signer, hlc_packed, hlc_node, create_op_id FROM acu"
        f" WHERE id = '{acu_id}'",
    )
    found = {(problem.kind, problem.op_id or problem.entity_id) for problem in verify_vault(db, T0)}
    assert ("op_columns", op_id) in found
    assert ("row_differs", acu_id) in found


def test_sharing_level_is_never_lowered(db: peewee.SqliteDatabase, owner: Owner) -> None:
    acu_id = execute_sql(db, "SELECT id FROM acu LIMIT 1").fetchone()[0]
    raise_sharing_level(db, owner.devices[0].signer, acu_id, SharingLevel.NETWORK, T0 + 1)
    refused(db, "UPDATE acu SET sharing_level = 1", "can only rise, never be lowered")
    refused(db, "UPDATE acu SET sharing_level = 0", "can only rise, never be lowered")


def test_an_unchanged_write_and_a_raise_pass_the_triggers(db: peewee.SqliteDatabase) -> None:
    before = state_hash(db)
    execute_sql(db, "UPDATE acu SET content = content, category = category")
    assert state_hash(db) == before
    execute_sql(db, "UPDATE acu SET sharing_level = 3")
    assert state_hash(db) != before
