"""peewee models of the newest schema (the tables are created by `store.migrations`).

The models are never bound to a database (`database = None`): every query names its database
with `.execute(db)`, and every store function takes `db` as its first argument. peewee binds a
model class to one database for the whole process, and `Model.bind`/`bind_ctx` change that
class-wide (bind_ctx is not even thread-safe), so with bound models two databases open at once,
as in tests, would read each other's rows. An unbound model used without a database fails loudly
(`peewee.InterfaceError`) instead of reaching the wrong file.

The models do not leave `store/`: functions return frozen dataclasses (`IdentityRow`, ...), so
callers never hold an object that could lazily run a query on the wrong thread. JSON columns
hold compact lists, encoded and decoded by the store functions.
"""

from typing import Final

import peewee


class _Model(peewee.Model):
    class Meta:
        database = None  # never bound: see the module docstring


class Identity(_Model):
    """The vault owner's identity: one row (see `store.identity.save_identity`)."""

    did = peewee.TextField(unique=True)
    signing_public_key = peewee.BlobField()  # 32 bytes, Ed25519
    encryption_public_key = peewee.BlobField()  # 32 bytes, X25519, the current one
    # Wire bytes of the signed record binding the encryption key to the DID.
    encryption_key_binding = peewee.BlobField()
    key_version = peewee.IntegerField(default=1)
    previous_keys = peewee.TextField(default="[]")  # [{public_key hex, key_version, retired_at_ms}]
    created_at_ms = peewee.IntegerField()

    class Meta:
        table_name = "identity"


class Device(_Model):
    """A device approved to act for an identity."""

    peer_id = peewee.TextField(unique=True)
    did = peewee.TextField(index=True)  # the owner
    public_key = peewee.BlobField()  # 32 bytes
    certificate = peewee.BlobField()  # wire bytes of the signed device certificate
    # Approvers' peer ids/DID, from this device up to the identity key.
    trust_chain = peewee.TextField(default="[]")
    approved_by = peewee.TextField()
    created_at_ms = peewee.IntegerField()
    revoked_at_ms = peewee.IntegerField(null=True)
    # The trust state the log gives (store.trust_state): trusted | revoked | untrusted.
    status = peewee.TextField(default="trusted")
    revoked_by = peewee.TextField(null=True)
    cut_seq = peewee.IntegerField(null=True)  # ops after this seq do not count (not trusted)

    class Meta:
        table_name = "device"


class Peer(_Model):
    """A peer this node has seen, with the addresses it was last seen at."""

    peer_id = peewee.TextField(unique=True)
    did = peewee.TextField(null=True, index=True)
    addrs = peewee.TextField(default="[]")  # multiaddr strings
    last_seen_ms = peewee.IntegerField()

    class Meta:
        table_name = "peer"


# The vault (migration 2). Its hot paths write through sqlite3's executemany (`store.vault_sql`);
# these models describe the tables and keep the schema test honest.


class HlcState(_Model):
    """The local device's hybrid logical clock: the last stamp it issued or received, packed."""

    node = peewee.TextField(primary_key=True)  # the device's peer id
    last_packed = peewee.IntegerField()

    class Meta:
        table_name = "hlc_state"


class DeviceLog(_Model):
    """The head of one device's applied op chain."""

    device = peewee.TextField(primary_key=True)
    last_seq = peewee.IntegerField()
    last_op_id = peewee.TextField()

    class Meta:
        table_name = "device_log"


class SyncOp(_Model):
    """One signed op of the log (`protocols.oplog.SyncOperation`); append-only (triggers).

    `wire` is the whole op as signed; the other columns repeat what queries need without decoding
    it (store.vault_sql.OP_COLUMNS), and `verify_vault` checks they agree with it.
    """

    id = peewee.TextField(primary_key=True)  # content id of `wire`
    device = peewee.TextField()  # also the node of the op's HLC
    seq = peewee.IntegerField()
    hlc_packed = peewee.IntegerField()
    entity_type = peewee.TextField()
    entity_id = peewee.TextField()
    kind = peewee.TextField()
    wire = peewee.BlobField()  # the op's wire bytes, as signed and sent
    received_at_ms = peewee.IntegerField()  # local: when this node stored it

    class Meta:
        table_name = "sync_operation"


class PendingOp(_Model):
    """An op parked until the gap before it in its device's chain fills."""

    id = peewee.TextField(primary_key=True)
    device = peewee.TextField()
    seq = peewee.IntegerField()
    wire = peewee.BlobField()
    received_at_ms = peewee.IntegerField()

    class Meta:
        table_name = "pending_op"


class Conversation(_Model):
    """A conversation as folded from its ops."""

    id = peewee.TextField(primary_key=True)
    owner = peewee.TextField()
    title = peewee.TextField()
    provider = peewee.TextField()
    model = peewee.TextField(null=True)
    source_id = peewee.TextField()
    created_at_ms = peewee.IntegerField(null=True)
    updated_at_ms = peewee.IntegerField(null=True)
    hlc_packed = peewee.IntegerField()  # of the create op the row comes from
    hlc_node = peewee.TextField()
    create_op_id = peewee.TextField()

    class Meta:
        table_name = "conversation"


class Message(_Model):
    """A message of a conversation, folded from the conversation's ops (grow-only)."""

    id = peewee.TextField(primary_key=True)
    conversation_id = peewee.TextField()
    position = peewee.IntegerField()  # the payload's `index`
    role = peewee.TextField()
    content = peewee.TextField()
    created_at_ms = peewee.IntegerField(null=True)
    branch = peewee.TextField()  # main | alternate
    parent_id = peewee.TextField(null=True)
    author = peewee.TextField()
    hlc_packed = peewee.IntegerField()  # of the first op of the conversation that carried it
    hlc_node = peewee.TextField()
    create_op_id = peewee.TextField()

    class Meta:
        table_name = "message"


class Acu(_Model):
    """An atomic chat unit: immutable content, a sharing level that only rises (triggers)."""

    id = peewee.TextField(primary_key=True)
    author = peewee.TextField()
    content = peewee.TextField()
    type = peewee.TextField()
    source_time_ms = peewee.IntegerField()
    category = peewee.TextField()
    language = peewee.TextField(null=True)
    conversation_id = peewee.TextField()  # provenance
    message_id = peewee.TextField()
    position = peewee.IntegerField()  # the provenance `index`
    provider = peewee.TextField()
    model = peewee.TextField(null=True)
    sharing_level = peewee.IntegerField()  # SharingLevel: SELF 0 .. GLOBAL 3
    author_signature = peewee.BlobField()
    author_signer = peewee.TextField()
    hlc_packed = peewee.IntegerField()
    hlc_node = peewee.TextField()
    create_op_id = peewee.TextField()

    class Meta:
        table_name = "acu"


class AcuLink(_Model):
    """A link "source <relation> target" between two ACUs: carried by its source ACU's create op
    (the generator's links) or made by an acu_link op (store.vault_fold)."""

    id = peewee.TextField(primary_key=True)
    source = peewee.TextField()
    target = peewee.TextField()
    relation = peewee.TextField()
    created_by = peewee.TextField()
    hlc_packed = peewee.IntegerField()
    hlc_node = peewee.TextField()
    create_op_id = peewee.TextField()

    class Meta:
        table_name = "acu_link"


class Tombstone(_Model):
    """A deleted entity and the delete op that won (the first by HLC, node, op id)."""

    entity_type = peewee.TextField()
    entity_id = peewee.TextField()
    op_id = peewee.TextField()
    hlc_packed = peewee.IntegerField()
    hlc_node = peewee.TextField()

    class Meta:
        table_name = "tombstone"
        indexes = ((("entity_type", "entity_id"), True),)


MODELS: Final[tuple[type[peewee.Model], ...]] = (
    Identity,
    Device,
    Peer,
    HlcState,
    DeviceLog,
    SyncOp,
    PendingOp,
    Conversation,
    Message,
    Acu,
    AcuLink,
    Tombstone,
)
