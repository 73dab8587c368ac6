"""Migration 8: Friends: invites, connection requests and accepted connections (store.peering).

Frozen SQL, like every step in store/migrations.py (which lists this one): never edit it once
released; append a new migration instead.

- `peering_invite`: the one-time tokens this node handed out (`vivim-node invite`), until they
  expire; a token is spent by the first request that carries it (`spent_by`).
- `peer_connection`: one row per other person (DID): a request pending in either direction, or
  an accepted connection holding both signed records (`request` and `acceptance`, wire bytes,
  each with its signature). `encryption_key` is the person's X25519 key from their
  `EncryptionKeyBinding` (`encryption_binding`), checked before it was stored.
- `peer_device`: the devices known to speak for a connection's DID (their certificate chains
  were checked), so a Noise-authenticated peer id maps to a person. Removed with the connection.
- `peer_block`: DIDs whose requests are dropped.

All local, never replicated (store/SHARING_DESIGN.md: the sharing mesh is held by the device
where it was made).
"""

from peewee import SqliteDatabase

from store.sql import execute_sql

STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE peering_invite (
        token BLOB PRIMARY KEY NOT NULL CHECK (typeof(token) = 'blob' AND length(token) = 16),
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        spent_by TEXT,
        spent_at_ms INTEGER,
        CHECK ((spent_by IS NULL) = (spent_at_ms IS NULL))
    ) WITHOUT ROWID
    """,
    "CREATE INDEX peering_invite_expiry ON peering_invite (expires_at_ms)",
    """
    CREATE TABLE peer_connection (
        did TEXT PRIMARY KEY NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
        state TEXT NOT NULL CHECK (state IN ('pending', 'accepted')),
        trust TEXT NOT NULL CHECK (trust IN ('acquaintance', 'trusted', 'close')),
        encryption_key BLOB NOT NULL
            CHECK (typeof(encryption_key) = 'blob' AND length(encryption_key) = 32),
        encryption_binding BLOB NOT NULL CHECK (typeof(encryption_binding) = 'blob'),
        request_id TEXT NOT NULL UNIQUE,
        request BLOB NOT NULL CHECK (typeof(request) = 'blob'),
        acceptance BLOB CHECK (acceptance IS NULL OR typeof(acceptance) = 'blob'),
        addrs TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(addrs)),
        relays TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(relays)),
        via_invite INTEGER NOT NULL CHECK (via_invite IN (0, 1)),
        message TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        CHECK ((state = 'accepted') = (acceptance IS NOT NULL))
    )
    """,
    """
    CREATE TABLE peer_device (
        peer_id TEXT PRIMARY KEY NOT NULL,
        did TEXT NOT NULL REFERENCES peer_connection (did) ON DELETE CASCADE,
        learned_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX peer_device_did ON peer_device (did)",
    """
    CREATE TABLE peer_block (
        did TEXT PRIMARY KEY NOT NULL,
        blocked_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)


def migrate(db: SqliteDatabase) -> None:
    for statement in STATEMENTS:
        execute_sql(db, statement)
