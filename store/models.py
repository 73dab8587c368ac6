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


MODELS: Final[tuple[type[peewee.Model], ...]] = (Identity, Device, Peer)
