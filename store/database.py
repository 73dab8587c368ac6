"""Opening the vault's SQLite database: connection pragmas, checks on the file, migrations.

`open_database(path)` returns a `peewee.SqliteDatabase` at the newest schema. peewee keeps one
connection per thread (`thread_safe=True`), each opened on first use in its thread with the
pragmas below; the node's trio side relies on that (`node/database.py` runs one writer thread
and a few reader threads). The connection `open_database` used stays open in the calling
thread; `db.close()` closes it.

The file is checked before anything is written to it: a file that is not SQLite raises
`DatabaseCorrupt`, one written by a newer build raises `SchemaTooNew`, and neither is changed.
That is why WAL mode, which is persistent and rewrites the header, is switched on once per open
after the checks, rather than listed with the per-connection pragmas (which never write), and so
is the page size of a new file.

Models are not bound to the database: every store function takes `db` first (`store.models`).
"""

import contextlib
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final, cast

import peewee
from peewee import SqliteDatabase

from store.errors import DatabaseCorrupt, DatabaseUnavailable
from store.migrations import APPLICATION_ID, check_not_too_new, migrate, schema_version
from store.sql import execute_sql, scalar

# WAL: readers keep reading the last committed snapshot while the single writer writes, and a
# commit is one append to the log. Persistent in the file once set.
JOURNAL_MODE: Final = "wal"

# How long a connection waits for another connection's lock before failing with "database is
# locked". 5 s is the default of Python's sqlite3 module and of peewee; it covers a checkpoint
# or another process's write, and a node stuck longer than that is better told so than left
# waiting.
BUSY_TIMEOUT_MS: Final = 5000

# SQLite ships with foreign-key enforcement off, per connection.
FOREIGN_KEYS: Final = 1

# FULL, not NORMAL: in WAL mode NORMAL is safe from corruption and from a process crash, but the
# last commits can be lost on power loss or an OS crash, because the log is only fsynced at
# checkpoints. The node acknowledges writes to peers (a peer may drop its copy once we say we
# hold it), so an acknowledged write must survive a power cut. FULL costs one fsync of the log
# per commit, small at a personal node's write rate.
SYNCHRONOUS: Final = "FULL"

# `INSERT OR REPLACE` deletes the row it replaces without firing DELETE triggers unless this is
# on; with it on, the append-only triggers of the op log and of ACUs (store.migrations) refuse a
# REPLACE too.
RECURSIVE_TRIGGERS: Final = 1

# Page cache per connection, in KiB when negative: 64 MiB. The default (2 MiB) is far smaller
# than the indexes an import writes into at random (content ids are random: op, entity, ACU,
# link ids); with 64 MiB the import benchmark ran 9% faster at 2,000 conversations. At its full
# size (10,000) these indexes outgrow 64 MiB too: 128 MiB was 8% and 256 MiB 11% faster again
# (measured), but every reader thread's connection may fill its cache as well. Pages are
# allocated as used, so an idle connection does not hold the memory.
CACHE_SIZE_KIB: Final = -65536

# Checkpoint the WAL into the database once it holds this many pages (384 MiB of 16 KiB pages;
# SQLite's default is 1,000). Each import transaction rewrites most pages of the indexes keyed
# by content ids (random), and a checkpoint copies each page once however many transactions
# rewrote it since the last one. With the default (a checkpoint after every 100-conversation
# import batch) the full-size import benchmark wrote 13 GB for a 925 MB database; with this,
# 8.8 GB, and it ran ~10% faster (256 MiB: ~5%; 1 GiB: no better). A WAL of hundreds of MB costs
# readers little; one of GBs does (no checkpoint at all was ~25% slower).
WAL_AUTOCHECKPOINT_PAGES: Final = 24576

# After a checkpoint the WAL file is truncated to this size (64 MiB) rather than kept at its
# largest, so a big import does not leave hundreds of MB of WAL behind.
JOURNAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024

# Applied by peewee to every new connection, in every thread. None of them writes to the file.
CONNECTION_PRAGMAS: Final = (
    ("foreign_keys", FOREIGN_KEYS),
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("synchronous", SYNCHRONOUS),
    ("recursive_triggers", RECURSIVE_TRIGGERS),
    ("cache_size", CACHE_SIZE_KIB),
    ("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
    ("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES),
)

# The page size of a new database file (SQLite's default is 4 KiB); it is fixed when the first
# table is created, so existing files keep theirs. An ACU's op (its wire bytes, ~1.2 KB) and
# row fit 11 to a 16 KiB page but only 2 to a 4 KiB one, and a conversation's op (every message,
# often 5-10 KB) fits in one page instead of spilling onto overflow pages: the full-size import
# benchmark ran 18% faster, with an 11% smaller file.
PAGE_SIZE: Final = 16384

# SQLite primary result codes meaning "this is not (or no longer) a database file".
_NOT_A_DATABASE_CODES: Final = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def open_database(path: Path) -> SqliteDatabase:
    """Open the database at `path`, creating the file if missing, and migrate it to the newest
    schema.

    Raises `DatabaseCorrupt` (not a vivim-node SQLite file) or `SchemaTooNew` (written by a newer
    build), both leaving the file untouched, or `DatabaseUnavailable` (cannot open or lock it).
    """
    db = SqliteDatabase(
        str(path), pragmas=CONNECTION_PRAGMAS, timeout=BUSY_TIMEOUT_MS / 1000, thread_safe=True
    )
    try:
        try:
            db.connect()
            _check_file(db, path)
            # A no-op on a file that has tables already (its page size is fixed).
            execute_sql(db, f"PRAGMA page_size = {PAGE_SIZE:d}")
            _enable_wal(db, path)
            migrate(db)
        except peewee.DatabaseError as err:
            translated = _translate(err, path)
            if translated is None:
                raise
            raise translated from err
    except BaseException:
        db.close()
        raise
    return db


def write_transaction(db: SqliteDatabase) -> peewee._atomic:
    """A transaction for writing, that takes the write lock at BEGIN (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes can fail at once with "database is locked" if
    another connection wrote in between; taking the lock first makes it wait (busy timeout) instead.
    Nested inside another transaction it is a savepoint.
    """
    return db.atomic("IMMEDIATE")


def joined_write_transaction(db: SqliteDatabase) -> AbstractContextManager[object]:
    """`write_transaction`, except that inside a transaction already open it joins that one
    instead of opening a savepoint.

    A savepoint makes SQLite copy every page the nested part changes first to a sub-journal, so
    that it can be rolled back alone: for sync, which applies several batches in the writer's one
    transaction, that was ~20 us of the ~125 us an op costs (store level, 100k ops). Joined, an
    error inside leaves what came before it in the caller's transaction, so the caller must end
    that transaction on an error (`node.database.Database.write` rolls it back), not catch it and
    go on. For the apply path (`store.vault_apply.apply_ops`, `store.sync_state.apply_batch`),
    whose callers all let errors end the transaction.
    """
    if db.in_transaction():
        return contextlib.nullcontext()
    return write_transaction(db)


def _check_file(db: SqliteDatabase, path: Path) -> None:
    """Refuse a file this build must not touch, before anything writes to it."""
    application_id = cast(int, scalar(db, "PRAGMA application_id"))
    if application_id not in (0, APPLICATION_ID):
        raise DatabaseCorrupt(
            path, f"it belongs to another program (application_id {application_id})"
        )
    version = schema_version(db)
    check_not_too_new(version)
    if application_id == 0 and (version != 0 or db.get_tables()):
        raise DatabaseCorrupt(path, "it is a SQLite database written by another program")


def _enable_wal(db: SqliteDatabase, path: Path) -> None:
    mode = str(scalar(db, f"PRAGMA journal_mode = {JOURNAL_MODE}"))
    if mode.lower() != JOURNAL_MODE:
        raise DatabaseUnavailable(
            path, f"its file system does not support WAL mode (journal_mode stays {mode!r})"
        )


def _translate(
    err: peewee.DatabaseError, path: Path
) -> DatabaseCorrupt | DatabaseUnavailable | None:
    """`err` as ours if it is about the file (not a database, cannot open or lock it)."""
    # peewee re-raises the driver's error as its own while handling it: the original is the context.
    original = err.__context__ if isinstance(err.__context__, sqlite3.Error) else None
    code = getattr(original, "sqlite_errorcode", None)
    reason = str(original or err)
    if code is not None and code & 0xFF in _NOT_A_DATABASE_CODES:
        return DatabaseCorrupt(path, reason)
    if isinstance(err, peewee.OperationalError):
        return DatabaseUnavailable(path, reason)
    return None
