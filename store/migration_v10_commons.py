"""Migration 10: global publications (store.commons), append-only.

Frozen SQL, like every step in store/migrations.py (which lists this one): never edit it once
released; append a new migration instead.

- `global_publication`: every publication this node holds, its own and received ones, in the
  order it stored them (`seq`, the cursor peers pull with: `/vivim/global/1.0.0`). Append-only:
  triggers refuse UPDATE and DELETE, whoever asks (`INSERT OR REPLACE` deletes, and so is
  refused too on connections with recursive_triggers, which store.database turns on).
  No uniqueness on (publisher, subject, version): two devices of one DID may publish the same
  version at once, and every node must keep both, whatever order they arrive in.
- `global_cursor`: per peer, the last seq of theirs pulled (local bookkeeping, mutable).
"""

from peewee import SqliteDatabase

from store.sql import execute_sql

STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE global_publication (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        publisher_did TEXT NOT NULL,
        publisher_device TEXT NOT NULL,
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('acu', 'conversation')),
        subject_id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        previous_id TEXT CHECK ((version = 1) = (previous_id IS NULL)),
        content_id TEXT NOT NULL,
        title TEXT NOT NULL,
        tags TEXT NOT NULL CHECK (json_valid(tags)),
        license TEXT NOT NULL,
        published_at_ms INTEGER NOT NULL,
        received_from TEXT,
        received_at_ms INTEGER NOT NULL,
        wire BLOB NOT NULL CHECK (typeof(wire) = 'blob')
    )
    """,
    """
    CREATE INDEX global_publication_subject
    ON global_publication (publisher_did, subject_id, version)
    """,
    "CREATE INDEX global_publication_recent ON global_publication (published_at_ms, id)",
    """
    CREATE TRIGGER global_publication_no_update BEFORE UPDATE ON global_publication
    BEGIN
        SELECT RAISE(ABORT, 'a global publication is immutable: publish a new version instead');
    END
    """,
    """
    CREATE TRIGGER global_publication_no_delete BEFORE DELETE ON global_publication
    BEGIN
        SELECT RAISE(ABORT, 'a global publication is never deleted: what is published stays');
    END
    """,
    """
    CREATE TABLE global_cursor (
        peer_id TEXT PRIMARY KEY NOT NULL,
        after_seq INTEGER NOT NULL CHECK (after_seq >= 0),
        pulled INTEGER NOT NULL DEFAULT 0 CHECK (pulled >= 0),
        last_pull_ms INTEGER
    )
    """,
)


def migrate(db: SqliteDatabase) -> None:
    for statement in STATEMENTS:
        execute_sql(db, statement)
