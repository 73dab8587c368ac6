"""verify_vault: a sound vault has no problems; each kind of tampering is found and named."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation, stored_ops

from protocols.vault_records import conversation_id
from store.sql import execute_sql
from store.vault import VaultProblem, import_conversation, set_title, verify_vault

NOW = T0 + 60_000


@pytest.fixture
def owner() -> Owner:
    return Owner(count=1)


@pytest.fixture
def db(tmp_path: Path, owner: Owner) -> Iterator[peewee.SqliteDatabase]:
    db = owner.open_vault(tmp_path / "vault.db")
    signer = owner.devices[0].signer
    import_conversation(db, signer, conversation(1), T0)
    import_conversation(db, signer, conversation(2), T0 + 1)
    yield db
    db.close()


def without_triggers(db: peewee.SqliteDatabase, *statements: str) -> None:
    """Run `statements` as someone with the file would: past the append-only triggers."""
    triggers = execute_sql(
        db, "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'"
    ).fetchall()
    for name, _ in triggers:
        execute_sql(db, f"DROP TRIGGER {name}")
    for statement in statements:
        execute_sql(db, statement)
    for _, sql in triggers:
        execute_sql(db, sql)


def kinds(problems: list[VaultProblem]) -> set[str]:
    return {problem.kind for problem in problems}


def test_a_sound_vault_has_no_problems(db: peewee.SqliteDatabase, owner: Owner) -> None:
    set_title(db, owner.devices[0].signer, stored_ops(db)[0].entity_id, "renamed", T0 + 2)
    assert verify_vault(db, NOW) == []


def test_a_tampered_title_is_found(db: peewee.SqliteDatabase, owner: Owner) -> None:
    key = conversation_id(owner.did, "chatgpt", "conversation-2")
    execute_sql(db, f"UPDATE conversation SET title = 'forged' WHERE id = '{key}'")
    assert verify_vault(db, NOW) == [
        VaultProblem(
            kind="row_differs",
            detail="columns title differ from the log's replay",
            entity_type="conversation",
            entity_id=key,
        )
    ]


def test_a_deleted_and_an_added_row_are_found(db: peewee.SqliteDatabase) -> None:
    message_id = execute_sql(db, "SELECT id FROM message LIMIT 1").fetchone()[0]
    execute_sql(db, f"DELETE FROM message WHERE id = '{message_id}'")
    execute_sql(
        db,
        "INSERT INTO acu_link VALUES ('bafyreifake', 'a', 'b', 'next', 'me', 1, 'node', 'op')",
    )
    problems = verify_vault(db, NOW)
    assert {(p.kind, p.entity_id) for p in problems} == {
        ("row_missing", message_id),
        ("row_unexpected", "bafyreifake"),
    }


def test_a_missing_op_breaks_the_chain(db: peewee.SqliteDatabase) -> None:
    ops = stored_ops(db)
    gone = ops[3]
    without_triggers(db, f"DELETE FROM sync_operation WHERE id = '{gone.id}'")
    problems = verify_vault(db, NOW)
    assert ("sequence_gap", ops[4].id) in {(p.kind, p.op_id) for p in problems}
    # The entity of the missing op no longer follows from the log.
    assert ("row_unexpected", gone.entity_id) in {(p.kind, p.entity_id) for p in problems}


@pytest.mark.parametrize(
    ("assignment", "column"),
    [
        ("hlc_packed = hlc_packed + 1", "hlc"),
        ("kind = 'update'", "kind"),
        ("entity_type = 'acu_link'", "entity_type"),
    ],
)
def test_an_op_whose_columns_disagree_with_its_bytes_is_found(
    db: peewee.SqliteDatabase, assignment: str, column: str
) -> None:
    op = stored_ops(db)[2]
    without_triggers(db, f"UPDATE sync_operation SET {assignment} WHERE id = '{op.id}'")
    problems = verify_vault(db, NOW)
    assert [(p.kind, p.op_id) for p in problems if p.op_id] == [("op_columns", op.id)]
    assert f"columns {column} disagree" in problems[0].detail


def test_a_tampered_message_and_a_tampered_carried_link_are_found(
    db: peewee.SqliteDatabase,
) -> None:
    message_id = execute_sql(db, "SELECT id FROM message LIMIT 1").fetchone()[0]
    link_id = execute_sql(db, "SELECT id FROM acu_link LIMIT 1").fetchone()[0]
    execute_sql(db, f"UPDATE message SET content = 'forged' WHERE id = '{message_id}'")
    execute_sql(db, f"UPDATE acu_link SET relation = 'extends' WHERE id = '{link_id}'")
    assert {(p.kind, p.entity_type, p.entity_id, p.detail) for p in verify_vault(db, NOW)} == {
        ("row_differs", "message", message_id, "columns content differ from the log's replay"),
        ("row_differs", "acu_link", link_id, "columns relation differ from the log's replay"),
    }


def test_a_tombstone_of_no_entity_type_is_found(db: peewee.SqliteDatabase) -> None:
    execute_sql(
        db,
        "INSERT INTO tombstone (entity_type, entity_id, op_id, hlc_packed, hlc_node)"
        " VALUES ('message', 'm', 'op', 1, 'node')",
    )
    problems = verify_vault(db, NOW)
    assert [(p.kind, p.entity_type, p.entity_id) for p in problems] == [
        ("tombstone_unexpected", "message", "m")
    ]


def test_a_forged_signature_is_found(db: peewee.SqliteDatabase) -> None:
    op = stored_ops(db)[5]
    forged = replace(op, signature=bytes(64))
    without_triggers(
        db,
        f"UPDATE sync_operation SET id = '{forged.id}', wire = x'{forged.to_wire().hex()}'"
        f" WHERE id = '{op.id}'",
    )
    problems = verify_vault(db, NOW)
    assert ("bad_signature", forged.id) in {(p.kind, p.op_id) for p in problems}


def test_a_rewound_chain_head_and_clock_are_found(db: peewee.SqliteDatabase) -> None:
    execute_sql(db, "UPDATE device_log SET last_seq = 3")
    execute_sql(db, "UPDATE hlc_state SET last_packed = 5")
    assert kinds(verify_vault(db, NOW)) == {"chain_head", "clock"}


def test_an_op_of_a_device_the_vault_does_not_know_is_found(
    db: peewee.SqliteDatabase, owner: Owner
) -> None:
    execute_sql(db, "DELETE FROM device")
    problems = verify_vault(db, NOW)
    assert {p.kind for p in problems if p.op_id} == {"unknown_device"}
    assert {p.op_id for p in problems if p.op_id} == {op.id for op in stored_ops(db)}


def test_the_replay_leaves_out_ops_past_a_revoked_devices_cut(
    db: peewee.SqliteDatabase, owner: Owner
) -> None:
    # A cut set behind the fold's back: the rows those ops made are no longer what the log
    # gives (a real revocation folds them away: test_store_revocation_race.py). Their
    # signatures and chains still check out.
    execute_sql(db, "UPDATE device SET status = 'revoked', cut_seq = 1")
    kinds = {p.kind for p in verify_vault(db, NOW)}
    assert kinds and kinds <= {"row_unexpected"}
