"""Forward-only schema migrations, versioned by SQLite's `PRAGMA user_version`.

Why `user_version` rather than a schema_version table: it lives in the file header, so it can
be read from any file before knowing anything about its tables, which is exactly what the
"written by a newer build" check needs; it is written in the same transaction as a migration's
DDL (the header is page 1, journaled like every other page), so a version and its schema never
disagree; and there is no table of our own whose shape could itself need migrating. What it
cannot say is when each step ran, which a single-user vault has no use for.

A migration is a function of the database appended to `MIGRATIONS`; its version is its 1-based
position. Migrations are frozen SQL, never the peewee models: the models describe the newest
schema, while migration 1 must create the version-1 schema forever. Never edit, remove or
reorder a released migration; append a new one.
"""

from collections.abc import Callable
from typing import Final, cast

from peewee import SqliteDatabase

from store.errors import SchemaTooNew
from store.sql import execute_sql, scalar

# SQLite's header field for "which file format is this" (PRAGMA application_id, offset 68):
# ASCII "vivm". It lets the opener tell our database from another program's SQLite file before
# changing anything.
APPLICATION_ID: Final = 0x7669766D

Migration = Callable[[SqliteDatabase], None]


def _v1_identity_devices_peers(db: SqliteDatabase) -> None:
    """The vault owner's identity, the owner's devices, and the peers this node has seen."""
    statements = (
        """
        CREATE TABLE identity (
            id INTEGER PRIMARY KEY,
            did TEXT NOT NULL UNIQUE,
            signing_public_key BLOB NOT NULL
                CHECK (typeof(signing_public_key) = 'blob' AND length(signing_public_key) = 32),
            encryption_public_key BLOB NOT NULL CHECK (
                typeof(encryption_public_key) = 'blob' AND length(encryption_public_key) = 32
            ),
            encryption_key_binding BLOB NOT NULL CHECK (typeof(encryption_key_binding) = 'blob'),
            key_version INTEGER NOT NULL DEFAULT 1 CHECK (key_version >= 1),
            previous_keys TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(previous_keys)),
            created_at_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE device (
            id INTEGER PRIMARY KEY,
            peer_id TEXT NOT NULL UNIQUE,
            did TEXT NOT NULL,
            public_key BLOB NOT NULL
                CHECK (typeof(public_key) = 'blob' AND length(public_key) = 32),
            certificate BLOB NOT NULL CHECK (typeof(certificate) = 'blob'),
            trust_chain TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(trust_chain)),
            approved_by TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            revoked_at_ms INTEGER
        )
        """,
        "CREATE INDEX device_did ON device (did)",
        """
        CREATE TABLE peer (
            id INTEGER PRIMARY KEY,
            peer_id TEXT NOT NULL UNIQUE,
            did TEXT,
            addrs TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(addrs)),
            last_seen_ms INTEGER NOT NULL
        )
        """,
        "CREATE INDEX peer_did ON peer (did)",
        f"PRAGMA application_id = {APPLICATION_ID}",
    )
    for statement in statements:
        execute_sql(db, statement)


MIGRATIONS: Final[tuple[Migration, ...]] = (_v1_identity_devices_peers,)

# The schema version this build writes and understands.
SCHEMA_VERSION: Final = len(MIGRATIONS)


def schema_version(db: SqliteDatabase) -> int:
    """The version recorded in the file: 0 for a new, empty database."""
    return int(cast(int, scalar(db, "PRAGMA user_version")))


def check_not_too_new(version: int) -> None:
    """Raise `SchemaTooNew` if `version` was written by a newer build than this one."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(found=version, supported=SCHEMA_VERSION)


def migrate(db: SqliteDatabase) -> int:
    """Apply the migrations the file lacks, each in its own transaction; return the version.

    A file already at `SCHEMA_VERSION` is not written to. Each step takes the write lock up front
    (BEGIN IMMEDIATE) and re-reads the version inside it, so two processes opening the same file at
    once apply each step exactly once. A step that raises is rolled back whole, version included.
    """
    current = schema_version(db)
    check_not_too_new(current)
    for version, migration in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        with db.atomic("IMMEDIATE"):
            current = schema_version(db)
            check_not_too_new(current)
            if version <= current:
                continue
            migration(db)
            # PRAGMA takes no bound parameters; `version` is an int from enumerate().
            execute_sql(db, f"PRAGMA user_version = {version:d}")
            current = version
    return current
