"""Opening a database file: pragmas, refusing files we must not touch, several files at once."""

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from store.database import (
    BUSY_TIMEOUT_MS,
    CACHE_SIZE_KIB,
    JOURNAL_SIZE_LIMIT_BYTES,
    PAGE_SIZE,
    WAL_AUTOCHECKPOINT_PAGES,
    joined_write_transaction,
    open_database,
    write_transaction,
)
from store.errors import DatabaseCorrupt, DatabaseUnavailable, SchemaTooNew
from store.migrations import APPLICATION_ID, SCHEMA_VERSION
from store.models import MODELS
from store.peers import list_peers, record_peer_seen

SYNCHRONOUS_FULL = 2  # what PRAGMA synchronous reports for FULL


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "vault.db"


@pytest.fixture
def db(path: Path) -> Iterator[peewee.SqliteDatabase]:
    db = open_database(path)
    yield db
    db.close()


def files_in(directory: Path) -> dict[str, bytes]:
    """Every file in `directory` with its bytes: sidecar files (-wal, -shm, -journal) included."""
    return {child.name: child.read_bytes() for child in sorted(directory.iterdir())}


def pragmas(db: peewee.SqliteDatabase) -> dict[str, object]:
    return {
        name: db.pragma(name)
        for name in (
            "journal_mode",
            "foreign_keys",
            "busy_timeout",
            "synchronous",
            "recursive_triggers",
            "cache_size",
            "wal_autocheckpoint",
            "journal_size_limit",
            "page_size",
        )
    }


EXPECTED_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": BUSY_TIMEOUT_MS,
    "synchronous": SYNCHRONOUS_FULL,
    "recursive_triggers": 1,
    "cache_size": CACHE_SIZE_KIB,
    "wal_autocheckpoint": WAL_AUTOCHECKPOINT_PAGES,
    "journal_size_limit": JOURNAL_SIZE_LIMIT_BYTES,
    "page_size": PAGE_SIZE,
}


def test_creates_a_missing_file_at_the_newest_schema(path: Path) -> None:
    db = open_database(path)
    try:
        assert path.exists()
        assert db.pragma("user_version") == SCHEMA_VERSION
        assert db.pragma("application_id") == APPLICATION_ID
        assert {"identity", "device", "peer", "sync_operation", "acu"} <= set(db.get_tables())
    finally:
        db.close()


def test_pragmas_are_set_on_the_opening_thread(db: peewee.SqliteDatabase) -> None:
    assert pragmas(db) == EXPECTED_PRAGMAS


def test_pragmas_are_set_on_every_thread_s_own_connection(db: peewee.SqliteDatabase) -> None:
    seen: list[object] = []

    def in_thread() -> None:
        assert db.is_closed()  # peewee connections are per thread: this one is new
        try:
            seen.append(pragmas(db))
        finally:
            db.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [EXPECTED_PRAGMAS]
    assert not db.is_closed()  # this thread's connection was left alone


def test_opening_twice_keeps_data_and_version(path: Path) -> None:
    db = open_database(path)
    record_peer_seen(db, "peer-a", ["/ip4/127.0.0.1/tcp/4001"], 1)
    db.close()
    db = open_database(path)
    try:
        assert db.pragma("user_version") == SCHEMA_VERSION
        assert [peer.peer_id for peer in list_peers(db)] == ["peer-a"]
    finally:
        db.close()


def test_an_empty_file_is_a_new_database(path: Path) -> None:
    path.touch()
    db = open_database(path)
    try:
        assert db.pragma("user_version") == SCHEMA_VERSION
    finally:
        db.close()


def _set_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {version}")
    connection.close()


def test_a_file_from_a_newer_build_is_refused_and_left_unchanged(path: Path) -> None:
    open_database(path).close()
    _set_version(path, SCHEMA_VERSION + 1)
    before = files_in(path.parent)

    with pytest.raises(SchemaTooNew) as caught:
        open_database(path)

    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"up to version {SCHEMA_VERSION}" in message
    assert "upgrade vivim-node" in message
    assert (caught.value.found, caught.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert files_in(path.parent) == before


def test_a_newer_file_in_rollback_journal_mode_is_not_switched_to_wal(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE future (x)")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    connection.close()
    before = files_in(path.parent)

    with pytest.raises(SchemaTooNew):
        open_database(path)

    assert files_in(path.parent) == before


@pytest.mark.parametrize(
    "content",
    [
        b"this is a text file, not a database\n" * 20,
        bytes(range(256)) * 16,
        b"SQLite format 3\x00" + b"\xff" * 200,
    ],
    ids=["text", "binary", "bad-header"],
)
def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(
    path: Path, content: bytes
) -> None:
    path.write_bytes(content)
    before = files_in(path.parent)

    with pytest.raises(DatabaseCorrupt) as caught:
        open_database(path)

    assert str(path) in str(caught.value)
    assert "left untouched" in str(caught.value)
    assert files_in(path.parent) == before


def test_another_program_s_sqlite_database_is_refused_and_left_unchanged(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE bookmarks (url TEXT)")
    connection.close()
    before = files_in(path.parent)

    with pytest.raises(DatabaseCorrupt, match="another program"):
        open_database(path)

    assert files_in(path.parent) == before


def test_a_database_with_another_application_id_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA application_id = 1234")
    connection.close()
    before = files_in(path.parent)

    with pytest.raises(DatabaseCorrupt, match="application_id 1234"):
        open_database(path)

    assert files_in(path.parent) == before


def test_a_missing_directory_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "vault.db"
    with pytest.raises(DatabaseUnavailable, match="cannot open the database"):
        open_database(path)
    assert not path.parent.exists()


def test_two_databases_open_at_once_do_not_share_rows(tmp_path: Path) -> None:
    first = open_database(tmp_path / "first.db")
    second = open_database(tmp_path / "second.db")
    try:
        record_peer_seen(first, "peer-a", [], 1)
        record_peer_seen(second, "peer-b", [], 2)
        assert [peer.peer_id for peer in list_peers(first)] == ["peer-a"]
        assert [peer.peer_id for peer in list_peers(second)] == ["peer-b"]
    finally:
        first.close()
        second.close()


def test_models_are_never_bound_to_a_database() -> None:
    for model in MODELS:
        assert model._meta.database is None
        with pytest.raises(peewee.InterfaceError):
            model.select().execute()


def test_models_match_the_migrated_schema(db: peewee.SqliteDatabase) -> None:
    for model in MODELS:
        columns = {column.name: column for column in db.get_columns(model._meta.table_name)}
        fields = {field.column_name: field for field in model._meta.sorted_fields}
        assert columns.keys() == fields.keys(), model.__name__
        for name, field in fields.items():
            column = columns[name]
            assert column.primary_key == field.primary_key, f"{model.__name__}.{name}"
            if not field.primary_key:  # SQLite reports INTEGER PRIMARY KEY as nullable
                assert column.null == field.null, f"{model.__name__}.{name}"


def _items(db: peewee.SqliteDatabase) -> list[str]:
    return [row[0] for row in db.execute_sql("SELECT v FROM t ORDER BY v")]


def test_a_joined_write_transaction_alone_commits_and_rolls_back(
    db: peewee.SqliteDatabase,
) -> None:
    db.execute_sql("CREATE TABLE t (v TEXT)")
    with joined_write_transaction(db):
        db.execute_sql("INSERT INTO t VALUES ('kept')")
    with pytest.raises(RuntimeError), joined_write_transaction(db):
        db.execute_sql("INSERT INTO t VALUES ('dropped')")
        raise RuntimeError("boom")
    assert _items(db) == ["kept"]


def test_a_joined_write_transaction_is_part_of_the_caller_s(db: peewee.SqliteDatabase) -> None:
    db.execute_sql("CREATE TABLE t (v TEXT)")
    # No savepoint of its own: what it wrote goes with the caller's transaction, both ways.
    with write_transaction(db):
        with joined_write_transaction(db):
            db.execute_sql("INSERT INTO t VALUES ('inner')")
        db.execute_sql("INSERT INTO t VALUES ('outer')")
    with pytest.raises(RuntimeError), write_transaction(db):
        with joined_write_transaction(db):
            db.execute_sql("INSERT INTO t VALUES ('inner 2')")
        raise RuntimeError("the caller fails after the joined part")
    assert _items(db) == ["inner", "outer"]
    # Nested in a transaction, it opened nothing: an error inside it, caught by the caller,
    # leaves what it wrote in the caller's transaction (the contract: let such errors end it).
    with write_transaction(db), pytest.raises(RuntimeError), joined_write_transaction(db):
        db.execute_sql("INSERT INTO t VALUES ('left in')")
        raise RuntimeError("inner")
    assert _items(db) == ["inner", "left in", "outer"]
