"""Forward migrations: ordered, each in one transaction, each applied once."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from store import migrations
from store.database import open_database
from store.errors import SchemaTooNew
from store.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from store.sql import execute_sql


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    db = open_database(tmp_path / "vault.db")
    yield db
    db.close()


@pytest.fixture
def bare_db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    """A new SQLite file that no migration has touched."""
    db = peewee.SqliteDatabase(str(tmp_path / "bare.db"))
    yield db
    db.close()


def test_migrate_applies_every_migration_and_returns_the_version(
    bare_db: peewee.SqliteDatabase,
) -> None:
    assert schema_version(bare_db) == 0
    assert migrate(bare_db) == SCHEMA_VERSION == len(MIGRATIONS)
    assert schema_version(bare_db) == SCHEMA_VERSION


def test_migrate_is_idempotent(db: peewee.SqliteDatabase) -> None:
    tables = db.get_tables()
    assert migrate(db) == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION
    assert db.get_tables() == tables


def test_a_new_migration_is_applied_once_to_an_existing_file(
    db: peewee.SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def add_notes(db: peewee.SqliteDatabase) -> None:
        calls.append(1)
        execute_sql(db, "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, add_notes))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)

    assert migrate(db) == SCHEMA_VERSION + 1
    assert migrate(db) == SCHEMA_VERSION + 1
    assert calls == [1]
    assert "note" in db.get_tables()


def test_a_failing_migration_is_rolled_back_whole(
    db: peewee.SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_done(db: peewee.SqliteDatabase) -> None:
        execute_sql(db, "CREATE TABLE note (id INTEGER PRIMARY KEY)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, half_done))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)

    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(db)

    assert schema_version(db) == SCHEMA_VERSION
    assert "note" not in db.get_tables()


def test_migrate_refuses_a_newer_file(db: peewee.SqliteDatabase) -> None:
    execute_sql(db, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew):
        migrate(db)
    assert schema_version(db) == SCHEMA_VERSION + 1
