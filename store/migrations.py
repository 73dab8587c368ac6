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

from store import (
    migration_v8_peering,
    migration_v9_sharing,
    migration_v10_commons,
    migration_v11_checks,
)
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


def _v2_vault(db: SqliteDatabase) -> None:
    """The vault: the signed op log, the local clock and chain heads, ops parked until their gap
    fills, the tables materialized from the log (conversation, message, acu, acu_link,
    tombstone) and the triggers that keep the log and the ACUs append-only.

    No foreign keys between the replicated tables: ops arrive in any order across devices (a
    link before its ACUs, a title update before its conversation) and every order must converge.
    Every replicated row names the op it was folded from (`create_op_id`, with that op's HLC in
    `hlc_packed`/`hlc_node`): a message row the first op of its conversation that carried it, a
    link row the ACU create or acu_link create it came from; so a row can always be traced to
    the log.
    """
    statements = (
        # The local device's hybrid logical clock, persisted so a restart never goes backwards.
        """
        CREATE TABLE hlc_state (
            node TEXT PRIMARY KEY NOT NULL,
            last_packed INTEGER NOT NULL CHECK (last_packed >= 0)
        )
        """,
        # Per device: the head of its applied chain (highest contiguous seq and that op's id).
        """
        CREATE TABLE device_log (
            device TEXT PRIMARY KEY NOT NULL,
            last_seq INTEGER NOT NULL CHECK (last_seq >= 1),
            last_op_id TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE sync_operation (
            id TEXT PRIMARY KEY NOT NULL,
            device TEXT NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 1),
            hlc_packed INTEGER NOT NULL CHECK (hlc_packed >= 0),
            entity_type TEXT NOT NULL CHECK (entity_type IN ('conversation', 'acu', 'acu_link')),
            entity_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
            wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
            received_at_ms INTEGER NOT NULL,
            UNIQUE (device, seq)
        )
        """,
        # An entity's ops. Entity ids are content ids of maps that name their kind, so an id alone
        # picks one entity; an import checks its ids with `entity_id IN (...)`.
        "CREATE INDEX sync_operation_entity ON sync_operation (entity_id, entity_type)",
        # Ops that arrived ahead of a gap in their device's chain, signature already checked.
        """
        CREATE TABLE pending_op (
            id TEXT PRIMARY KEY NOT NULL,
            device TEXT NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 1),
            wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
            received_at_ms INTEGER NOT NULL
        )
        """,
        "CREATE INDEX pending_op_device_seq ON pending_op (device, seq)",
        """
        CREATE TABLE conversation (
            id TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            title TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT,
            source_id TEXT NOT NULL,
            created_at_ms INTEGER,
            updated_at_ms INTEGER,
            hlc_packed INTEGER NOT NULL,
            hlc_node TEXT NOT NULL,
            create_op_id TEXT NOT NULL
        )
        """,
        # Most recently updated first (the export's times; 0 when it has none), keyset-paginated.
        """
        CREATE INDEX conversation_recent
        ON conversation (coalesce(updated_at_ms, created_at_ms, 0), id)
        """,
        """
        CREATE TABLE message (
            id TEXT PRIMARY KEY NOT NULL,
            conversation_id TEXT NOT NULL,
            position INTEGER NOT NULL CHECK (position >= 0),
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at_ms INTEGER,
            branch TEXT NOT NULL CHECK (branch IN ('main', 'alternate')),
            parent_id TEXT,
            author TEXT NOT NULL,
            hlc_packed INTEGER NOT NULL,
            hlc_node TEXT NOT NULL,
            create_op_id TEXT NOT NULL
        )
        """,
        "CREATE INDEX message_conversation ON message (conversation_id, position, id)",
        """
        CREATE TABLE acu (
            id TEXT PRIMARY KEY NOT NULL,
            author TEXT NOT NULL,
            content TEXT NOT NULL,
            type TEXT NOT NULL,
            source_time_ms INTEGER NOT NULL,
            category TEXT NOT NULL,
            language TEXT,
            conversation_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            position INTEGER NOT NULL CHECK (position >= 0),
            provider TEXT NOT NULL,
            model TEXT,
            sharing_level INTEGER NOT NULL CHECK (sharing_level BETWEEN 0 AND 3),
            author_signature BLOB NOT NULL
                CHECK (typeof(author_signature) = 'blob' AND length(author_signature) = 64),
            author_signer TEXT NOT NULL,
            hlc_packed INTEGER NOT NULL,
            hlc_node TEXT NOT NULL,
            create_op_id TEXT NOT NULL
        )
        """,
        # Newest first with keyset pagination: ORDER BY hlc_packed DESC, id DESC.
        "CREATE INDEX acu_recent ON acu (hlc_packed, id)",
        "CREATE INDEX acu_conversation ON acu (conversation_id, hlc_packed, id)",
        "CREATE INDEX acu_type ON acu (type, hlc_packed, id)",
        """
        CREATE TABLE acu_link (
            id TEXT PRIMARY KEY NOT NULL,
            source TEXT NOT NULL,
            target TEXT NOT NULL,
            relation TEXT NOT NULL CHECK (relation IN (
                'version_of', 'derived_from', 'references', 'extends', 'contradicts', 'answers',
                'next'
            )),
            created_by TEXT NOT NULL,
            hlc_packed INTEGER NOT NULL,
            hlc_node TEXT NOT NULL,
            create_op_id TEXT NOT NULL
        )
        """,
        "CREATE INDEX acu_link_source ON acu_link (source, relation)",
        "CREATE INDEX acu_link_target ON acu_link (target, relation)",
        # A deleted entity: the first delete op by (hlc, node, op id). `id` is local.
        """
        CREATE TABLE tombstone (
            id INTEGER PRIMARY KEY,
            entity_type TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            op_id TEXT NOT NULL,
            hlc_packed INTEGER NOT NULL,
            hlc_node TEXT NOT NULL,
            UNIQUE (entity_type, entity_id)
        )
        """,
        # The log is append-only, and so are ACUs (below). `INSERT OR REPLACE` deletes the row it
        # replaces, which fires these DELETE triggers only on a connection with
        # `PRAGMA recursive_triggers = ON`: every connection store.database opens has it. A BEFORE
        # INSERT trigger could refuse it on any connection, but any trigger on INSERT makes each
        # insert run with a statement journal, which cost 15% of the import rate (measured); a
        # REPLACE by another program is found by `verify_vault`.
        """
        CREATE TRIGGER sync_operation_no_update BEFORE UPDATE ON sync_operation
        BEGIN
            SELECT RAISE(ABORT, 'sync_operation is append-only: a stored op is never updated');
        END
        """,
        """
        CREATE TRIGGER sync_operation_no_delete BEFORE DELETE ON sync_operation
        BEGIN
            SELECT RAISE(ABORT, 'sync_operation is append-only: a stored op is never deleted');
        END
        """,
        # ACUs are immutable and never deleted: an edit is a new ACU plus a version_of link.
        """
        CREATE TRIGGER acu_no_delete BEFORE DELETE ON acu
        BEGIN
            SELECT RAISE(ABORT, 'an ACU is never deleted: ACUs are immutable');
        END
        """,
        # The fields the id is the hash of never change.
        """
        CREATE TRIGGER acu_content_immutable BEFORE UPDATE ON acu
        WHEN NEW.id IS NOT OLD.id OR NEW.author IS NOT OLD.author
            OR NEW.content IS NOT OLD.content OR NEW.type IS NOT OLD.type
            OR NEW.source_time_ms IS NOT OLD.source_time_ms
        BEGIN
            SELECT RAISE(ABORT, 'an ACU''s content is immutable: an edit is a new version_of ACU');
        END
        """,
        # Provenance and author signature come from the ACU's create op. Two devices importing the
        # same conversation create the same ACU id with their own signatures; every replica keeps
        # the create that sorts first by (hlc, node, op id), so these fields may change only to
        # those of an earlier create, never otherwise.
        """
        CREATE TRIGGER acu_provenance_immutable BEFORE UPDATE ON acu
        WHEN (
            NEW.category IS NOT OLD.category OR NEW.language IS NOT OLD.language
            OR NEW.conversation_id IS NOT OLD.conversation_id
            OR NEW.message_id IS NOT OLD.message_id OR NEW.position IS NOT OLD.position
            OR NEW.provider IS NOT OLD.provider OR NEW.model IS NOT OLD.model
            OR NEW.author_signature IS NOT OLD.author_signature
            OR NEW.author_signer IS NOT OLD.author_signer
            OR NEW.hlc_packed IS NOT OLD.hlc_packed OR NEW.hlc_node IS NOT OLD.hlc_node
            OR NEW.create_op_id IS NOT OLD.create_op_id
        ) AND NOT (
            (NEW.hlc_packed, NEW.hlc_node, NEW.create_op_id)
            < (OLD.hlc_packed, OLD.hlc_node, OLD.create_op_id)
        )
        BEGIN
            SELECT RAISE(ABORT, 'an ACU''s provenance changes only to an earlier create op''s');
        END
        """,
        """
        CREATE TRIGGER acu_sharing_level_no_lowering BEFORE UPDATE OF sharing_level ON acu
        WHEN NEW.sharing_level < OLD.sharing_level
        BEGIN
            SELECT RAISE(ABORT, 'an ACU''s sharing level can only rise, never be lowered');
        END
        """,
    )
    for statement in statements:
        execute_sql(db, statement)


def _v3_trust(db: SqliteDatabase) -> None:
    """Devices and identity keys as ops in the log (store/TRUST_DESIGN.md).

    sync_operation takes two more entity types, `device` (certificates and revocations) and
    `identity` (key rotations). SQLite cannot change a CHECK constraint in place, so the table is
    rebuilt: created anew, filled, the old one dropped (dropping fires no DELETE trigger), and
    its index and triggers made again. The device table, now a materialization of the trust
    state the log gives (protocols.trust), gets its status, who revoked it, and its cut (the
    last seq of its ops that counts once it is not trusted).
    """
    statements = (
        """
        CREATE TABLE sync_operation_v3 (
            id TEXT PRIMARY KEY NOT NULL,
            device TEXT NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 1),
            hlc_packed INTEGER NOT NULL CHECK (hlc_packed >= 0),
            entity_type TEXT NOT NULL CHECK (entity_type IN (
                'conversation', 'acu', 'acu_link', 'device', 'identity'
            )),
            entity_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
            wire BLOB NOT NULL CHECK (typeof(wire) = 'blob'),
            received_at_ms INTEGER NOT NULL,
            UNIQUE (device, seq)
        )
        """,
        "INSERT INTO sync_operation_v3 SELECT * FROM sync_operation ORDER BY rowid",
        "DROP TABLE sync_operation",
        "ALTER TABLE sync_operation_v3 RENAME TO sync_operation",
        "CREATE INDEX sync_operation_entity ON sync_operation (entity_id, entity_type)",
        """
        CREATE TRIGGER sync_operation_no_update BEFORE UPDATE ON sync_operation
        BEGIN
            SELECT RAISE(ABORT, 'sync_operation is append-only: a stored op is never updated');
        END
        """,
        """
        CREATE TRIGGER sync_operation_no_delete BEFORE DELETE ON sync_operation
        BEGIN
            SELECT RAISE(ABORT, 'sync_operation is append-only: a stored op is never deleted');
        END
        """,
        """
        ALTER TABLE device ADD COLUMN status TEXT NOT NULL DEFAULT 'trusted'
            CHECK (status IN ('trusted', 'revoked', 'untrusted'))
        """,
        "ALTER TABLE device ADD COLUMN revoked_by TEXT",
        "ALTER TABLE device ADD COLUMN cut_seq INTEGER CHECK (cut_seq >= 0)",
    )
    for statement in statements:
        execute_sql(db, statement)


def _v4_sync(db: SqliteDatabase) -> None:
    """Sync progress per peer (store.sync_state): local bookkeeping, never replicated.

    What this vault holds of each device is its chain head (device_log), advanced in the same
    transaction as the ops; a peer's row says what that peer last reported holding (its heads),
    how many ops came from it, and how syncing with it went, for `sync status` and backoff.
    """
    execute_sql(
        db,
        """
        CREATE TABLE sync_cursor (
            peer_id TEXT PRIMARY KEY NOT NULL,
            peer_heads TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(peer_heads)),
            ops_received INTEGER NOT NULL DEFAULT 0 CHECK (ops_received >= 0),
            last_attempt_ms INTEGER,
            last_success_ms INTEGER,
            consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
            last_error TEXT
        )
        """,
    )


def _v5_revoked_acus(db: SqliteDatabase) -> None:
    """An ACU may be removed only when the op that created it stopped counting: its device was
    revoked (or a revocation cascaded to it) with a cut below that op, which this vault stored
    before it knew (store.vault_fold.rebuild). Every other DELETE is still refused."""
    for statement in (
        "DROP TRIGGER acu_no_delete",
        """
        CREATE TRIGGER acu_no_delete BEFORE DELETE ON acu
        WHEN NOT EXISTS (
            SELECT 1 FROM sync_operation AS o JOIN device AS d ON d.peer_id = o.device
            WHERE o.id = OLD.create_op_id AND d.cut_seq IS NOT NULL AND o.seq > d.cut_seq
        )
        BEGIN
            SELECT RAISE(ABORT, 'an ACU is never deleted: ACUs are immutable');
        END
        """,
    ):
        execute_sql(db, statement)


def _v6_relay(db: SqliteDatabase) -> None:
    """What this node holds as a relay (store.relay): the registrations it accepted and the
    envelopes deposited for them, in arrival order (`seq`, the list cursor). Local, never
    replicated: a relay's mail is its own duty, and it loses none across a restart (WAL, and
    every deposit is one committed transaction before it is answered)."""
    for statement in (
        """
        CREATE TABLE relay_registration (
            recipient_did TEXT PRIMARY KEY NOT NULL,
            registration BLOB NOT NULL CHECK (typeof(registration) = 'blob'),
            quota_bytes INTEGER NOT NULL CHECK (quota_bytes >= 1),
            expires_at_ms INTEGER NOT NULL,
            registered_at_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE relay_envelope (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            recipient_did TEXT NOT NULL,
            size INTEGER NOT NULL CHECK (size >= 0),
            expires_at_ms INTEGER NOT NULL,
            deposited_by TEXT NOT NULL,
            deposited_at_ms INTEGER NOT NULL,
            envelope BLOB NOT NULL CHECK (typeof(envelope) = 'blob')
        )
        """,
        "CREATE INDEX relay_envelope_recipient ON relay_envelope (recipient_did, seq)",
        "CREATE INDEX relay_envelope_expiry ON relay_envelope (expires_at_ms)",
    ):
        execute_sql(db, statement)


def _v7_mailbox(db: SqliteDatabase) -> None:
    """The mailbox, both roles. As a relay: the bytes each recipient holds (`used_bytes`, kept
    with every deposit, ack and removal, so the quota check reads one row instead of summing).
    As a sender (store.mailbox): the registrations this device made; the outbox, one row per
    envelope and relay until the relay takes it; `mailbox_cursor`, how far this device's own
    ops were mailed (so a restart mails each op once). As a recipient: the envelopes received
    and applied (dedupe across relays). All local, never replicated."""
    for statement in (
        "ALTER TABLE relay_registration ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0"
        " CHECK (used_bytes >= 0)",
        """
        UPDATE relay_registration SET used_bytes = (
            SELECT coalesce(sum(size), 0) FROM relay_envelope
            WHERE relay_envelope.recipient_did = relay_registration.recipient_did
        )
        """,
        # Ids of envelopes acked, until they would have expired: a replayed envelope is refused
        # as a duplicate even after its recipient took it.
        """
        CREATE TABLE relay_acked (
            id TEXT PRIMARY KEY NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX relay_acked_expiry ON relay_acked (expires_at_ms)",
        # The identity key rotations a relay has seen for the DIDs registered with it: a client
        # cannot leave a rotation out to make a retired key count again.
        """
        CREATE TABLE relay_rotation (
            did TEXT NOT NULL,
            rotation BLOB NOT NULL CHECK (typeof(rotation) = 'blob'),
            PRIMARY KEY (did, rotation)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE mailbox_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            envelope_id TEXT NOT NULL,
            relay TEXT NOT NULL,
            recipient_did TEXT NOT NULL,
            payload_type TEXT NOT NULL,
            envelope BLOB NOT NULL CHECK (typeof(envelope) = 'blob'),
            expires_at_ms INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            last_error TEXT,
            UNIQUE (envelope_id, relay)
        )
        """,
        "CREATE INDEX mailbox_outbox_due ON mailbox_outbox (next_attempt_ms)",
        # What this device last registered at each relay, to register again with the same
        # terms when the DID's revoked devices change (the relay must learn of them).
        """
        CREATE TABLE mailbox_registration (
            relay TEXT PRIMARY KEY NOT NULL,
            registration BLOB NOT NULL CHECK (typeof(registration) = 'blob'),
            registered_at_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE mailbox_cursor (
            device TEXT PRIMARY KEY NOT NULL,
            mailed_seq INTEGER NOT NULL CHECK (mailed_seq >= 0)
        )
        """,
        """
        CREATE TABLE mailbox_received (
            envelope_id TEXT PRIMARY KEY NOT NULL,
            relay TEXT NOT NULL,
            sender_did TEXT NOT NULL,
            sender_device TEXT NOT NULL,
            payload_type TEXT NOT NULL,
            outcome TEXT NOT NULL,
            received_at_ms INTEGER NOT NULL
        )
        """,
    ):
        execute_sql(db, statement)


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _v1_identity_devices_peers,
    _v2_vault,
    _v3_trust,
    _v4_sync,
    _v5_revoked_acus,
    _v6_relay,
    _v7_mailbox,
    migration_v8_peering.migrate,
    migration_v9_sharing.migrate,
    migration_v10_commons.migrate,
    migration_v11_checks.migrate,
)

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
