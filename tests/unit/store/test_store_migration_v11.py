"""Migration 11: a vault written at version 10 keeps every row, index and trigger when its
`sync_operation` and `acu_link` checks are rebuilt as OR chains, and the checks refuse what
they refused before."""

from pathlib import Path

import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation, snapshot

from store import migrations
from store.database import open_database
from store.migrations import SCHEMA_VERSION, schema_version
from store.sql import execute_sql
from store.vault import import_conversation

V10 = 10


def schema(db: peewee.SqliteDatabase) -> dict[str, str]:
    return {
        name: sql
        for name, sql in execute_sql(
            db, "SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name"
        )
    }


def test_a_version_10_vault_keeps_everything_through_migration_11(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = Owner(count=2)
    path = tmp_path / "vault.db"
    with monkeypatch.context() as old_build:
        old_build.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:V10])
        old_build.setattr(migrations, "SCHEMA_VERSION", V10)
        db = owner.open_vault(path)
        assert schema_version(db) == V10
        for number in range(3):
            import_conversation(db, owner.devices[0].signer, conversation(number), T0 + number)
        before = snapshot(db)
        names_before = set(schema(db))
        db.close()

    db = open_database(path)
    try:
        assert schema_version(db) == SCHEMA_VERSION
        assert snapshot(db) == before
        assert set(schema(db)) == names_before
        for table in ("sync_operation", "acu_link"):
            assert " IN (" not in schema(db)[table]
        # The triggers came back: the log and the ACUs are still append-only.
        with pytest.raises(peewee.IntegrityError, match="append-only"):
            execute_sql(db, "DELETE FROM sync_operation")
        with pytest.raises(peewee.IntegrityError, match="append-only"):
            execute_sql(db, "UPDATE sync_operation SET received_at_ms = 0")
        with pytest.raises(peewee.IntegrityError, match="never deleted"):
            execute_sql(db, "DELETE FROM acu")
        # The checks allow what they allowed and refuse what they refused.
        with pytest.raises(peewee.IntegrityError, match="CHECK"):
            execute_sql(
                db,
                "INSERT INTO sync_operation SELECT 'x', device, seq + 100, hlc_packed,"
                " 'note', entity_id, kind, wire, 0 FROM sync_operation LIMIT 1",
            )
        with pytest.raises(peewee.IntegrityError, match="CHECK"):
            execute_sql(
                db,
                "INSERT INTO sync_operation SELECT 'x', device, seq + 100, hlc_packed,"
                " entity_type, entity_id, 'merge', wire, 0 FROM sync_operation LIMIT 1",
            )
        with pytest.raises(peewee.IntegrityError, match="CHECK"):
            execute_sql(
                db,
                "INSERT INTO acu_link SELECT 'x', source, target, 'likes', created_by,"
                " hlc_packed, hlc_node, create_op_id FROM acu_link LIMIT 1",
            )
        # And the vault goes on: another import lands next to the migrated rows.
        import_conversation(db, owner.devices[0].signer, conversation(9), T0 + 9)
        assert len(snapshot(db)["sync_operation"]) > len(before["sync_operation"])
    finally:
        db.close()
