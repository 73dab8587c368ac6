"""Migration 9: circles, grants, revocations, content keys, received shares (store.sharing).

Frozen SQL, like every step in store/migrations.py (which lists this one): never edit it once
released; append a new migration instead.

The owner's side: `circle`, `circle_version` (signed record wire + the circle key, which never
leaves this device unwrapped), `circle_member_key` (a version's key wrapped for each member),
`share_content` (per ACU: its content key, drawn once, and the ciphertext of its canonical
record), `sharing_grant` (record wire, plus the content key wrapped for a direct grant's target
or with the circle key for a circle grant) and `grant_revocation`. The recipient's side:
`received_share` (the decrypted record with the grant that gave it), `received_revocation` and
`received_circle_key`. `share_feed` says what each recipient may pull, in pull order.

Grants, revocations, circle versions and what was received are append-only: triggers refuse
UPDATE and DELETE. A revocation of a GLOBAL grant is refused by a trigger whatever wrote it, on
both sides ('IRREVOCABLE ...'). `seq` columns of `sharing_grant` and `circle_version` come from
one local counter (store.sharing), the order share bundles are offered in.
"""

from peewee import SqliteDatabase

from store.sql import execute_sql


def _append_only(table: str, what: str) -> tuple[str, str]:
    return (
        f"""
        CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN
            SELECT RAISE(ABORT, '{table} is append-only: a stored {what} is never updated');
        END
        """,
        f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN
            SELECT RAISE(ABORT, '{table} is append-only: a stored {what} is never deleted');
        END
        """,
    )


# The message of the trigger that refuses a global grant's revocation, whoever wrote it.
IRREVOCABLE = "IRREVOCABLE: a global grant can never be revoked: a global publication is permanent"

STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE circle (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
        owner_did TEXT NOT NULL,
        salt BLOB NOT NULL CHECK (typeof(salt) = 'blob' AND length(salt) = 16),
        created_at_ms INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE circle_version (
        circle_id TEXT NOT NULL REFERENCES circle (id),
        version INTEGER NOT NULL CHECK (version >= 1),
        seq INTEGER NOT NULL UNIQUE,
        record BLOB NOT NULL CHECK (typeof(record) = 'blob'),
        circle_key BLOB NOT NULL CHECK (typeof(circle_key) = 'blob' AND length(circle_key) = 32),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (circle_id, version)
    )
    """,
    """
    CREATE TABLE circle_member_key (
        circle_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        member_did TEXT NOT NULL,
        encrypted_key BLOB NOT NULL
            CHECK (typeof(encrypted_key) = 'blob' AND length(encrypted_key) = 48),
        ephemeral_pub_key BLOB NOT NULL
            CHECK (typeof(ephemeral_pub_key) = 'blob' AND length(ephemeral_pub_key) = 32),
        PRIMARY KEY (circle_id, version, member_did),
        FOREIGN KEY (circle_id, version) REFERENCES circle_version (circle_id, version)
    )
    """,
    "CREATE INDEX circle_member_key_member ON circle_member_key (member_did)",
    """
    CREATE TABLE share_content (
        acu_id TEXT PRIMARY KEY NOT NULL REFERENCES acu (id),
        content_key BLOB NOT NULL
            CHECK (typeof(content_key) = 'blob' AND length(content_key) = 32),
        ciphertext BLOB NOT NULL CHECK (typeof(ciphertext) = 'blob'),
        created_at_ms INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE sharing_grant (
        id TEXT PRIMARY KEY NOT NULL,
        seq INTEGER NOT NULL UNIQUE,
        acu_id TEXT NOT NULL REFERENCES acu (id),
        grantor_did TEXT NOT NULL,
        target_kind TEXT NOT NULL CHECK (target_kind IN ('did', 'circle', 'network', 'global')),
        target TEXT,
        wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
        issued_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        encrypted_key BLOB CHECK (encrypted_key IS NULL OR length(encrypted_key) = 48),
        ephemeral_pub_key BLOB CHECK (ephemeral_pub_key IS NULL OR length(ephemeral_pub_key) = 32),
        circle_version INTEGER,
        circle_encrypted_key BLOB
            CHECK (circle_encrypted_key IS NULL OR length(circle_encrypted_key) = 48),
        circle_nonce BLOB CHECK (circle_nonce IS NULL OR length(circle_nonce) = 24),
        CHECK ((target_kind = 'did') = (
            encrypted_key IS NOT NULL AND ephemeral_pub_key IS NOT NULL
        )),
        CHECK ((target_kind = 'circle') = (
            circle_version IS NOT NULL AND circle_encrypted_key IS NOT NULL
            AND circle_nonce IS NOT NULL
        )),
        CHECK ((target_kind IN ('did', 'circle')) = (target IS NOT NULL)),
        CHECK (target_kind <> 'global' OR expires_at_ms IS NULL)
    )
    """,
    "CREATE INDEX sharing_grant_acu ON sharing_grant (acu_id, seq)",
    "CREATE INDEX sharing_grant_target ON sharing_grant (target_kind, target, seq)",
    *_append_only("sharing_grant", "grant"),
    """
    CREATE TABLE grant_revocation (
        id TEXT PRIMARY KEY NOT NULL,
        grant_id TEXT NOT NULL UNIQUE REFERENCES sharing_grant (id),
        acu_id TEXT NOT NULL,
        wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
        revoked_at_ms INTEGER NOT NULL
    )
    """,
    f"""
    CREATE TRIGGER grant_revocation_irrevocable BEFORE INSERT ON grant_revocation
    WHEN (SELECT target_kind FROM sharing_grant WHERE id = NEW.grant_id) = 'global'
    BEGIN
        SELECT RAISE(ABORT, '{IRREVOCABLE}');
    END
    """,
    *_append_only("grant_revocation", "revocation"),
    # What each recipient may pull, in the order it became theirs: one row per (recipient,
    # grant) for a grant to a DID or a circle (and for a member added to a circle later, one per
    # grant of the circle then), NULL for a network grant (every accepted connection), and one
    # per recipient of a revocation. `seq` is the share pull's cursor; rows are never removed.
    """
    CREATE TABLE share_feed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_did TEXT,
        grant_id TEXT NOT NULL REFERENCES sharing_grant (id),
        revocation_id TEXT REFERENCES grant_revocation (id)
    )
    """,
    "CREATE INDEX share_feed_recipient ON share_feed (recipient_did, seq)",
    """
    CREATE TABLE received_share (
        grant_id TEXT PRIMARY KEY NOT NULL,
        acu_id TEXT NOT NULL,
        grantor_did TEXT NOT NULL,
        grantor_device TEXT NOT NULL,
        target_kind TEXT NOT NULL CHECK (target_kind IN ('did', 'circle', 'network', 'global')),
        target TEXT,
        permissions TEXT NOT NULL CHECK (json_valid(permissions)),
        grant_wire BLOB NOT NULL CHECK (typeof(grant_wire) = 'blob'),
        expires_at_ms INTEGER,
        record BLOB NOT NULL CHECK (typeof(record) = 'blob'),
        author TEXT NOT NULL,
        content TEXT NOT NULL,
        type TEXT NOT NULL,
        source_time_ms INTEGER NOT NULL,
        circle_version INTEGER,
        received_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX received_share_acu ON received_share (acu_id)",
    "CREATE INDEX received_share_recent ON received_share (received_at_ms, grant_id)",
    *_append_only("received_share", "received share"),
    """
    CREATE TABLE received_revocation (
        id TEXT PRIMARY KEY NOT NULL,
        grant_id TEXT NOT NULL UNIQUE REFERENCES received_share (grant_id),
        wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
        revoked_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL
    )
    """,
    f"""
    CREATE TRIGGER received_revocation_irrevocable BEFORE INSERT ON received_revocation
    WHEN (SELECT target_kind FROM received_share WHERE grant_id = NEW.grant_id) = 'global'
    BEGIN
        SELECT RAISE(ABORT, '{IRREVOCABLE}');
    END
    """,
    *_append_only("received_revocation", "revocation"),
    """
    CREATE TABLE received_circle_key (
        circle_id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        owner_did TEXT NOT NULL,
        record BLOB NOT NULL CHECK (typeof(record) = 'blob'),
        circle_key BLOB NOT NULL CHECK (typeof(circle_key) = 'blob' AND length(circle_key) = 32),
        received_at_ms INTEGER NOT NULL,
        PRIMARY KEY (circle_id, version)
    )
    """,
    *_append_only("received_circle_key", "circle key"),
    *_append_only("circle_version", "circle version"),
    *_append_only("circle_member_key", "wrapped circle key"),
    # Delivery (store.share_cursors): how far we pulled each friend device's share feed, and how
    # far each friend's feed was mailed to their relays while they were away.
    """
    CREATE TABLE share_pull_cursor (
        peer_id TEXT PRIMARY KEY NOT NULL,
        after INTEGER NOT NULL CHECK (after >= 0),
        pulled_at_ms INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE share_mailed (
        recipient_did TEXT PRIMARY KEY NOT NULL,
        after INTEGER NOT NULL CHECK (after >= 0),
        mailed_at_ms INTEGER NOT NULL
    )
    """,
)


def migrate(db: SqliteDatabase) -> None:
    for statement in STATEMENTS:
        execute_sql(db, statement)
