"""`mailbox status` and `relay status`, as blocking functions of the database (run behind the
control API or straight on the data directory, like node/sync_ops.py)."""

from __future__ import annotations

from typing import Any

from peewee import SqliteDatabase

from store import mailbox as mailbox_store
from store import relay as relay_store
from store.vault_log import LocalSigner


def mailbox_status(db: SqliteDatabase, signer: LocalSigner) -> dict[str, Any]:
    status = mailbox_store.mailbox_status(db, signer.device)
    return {
        "did": signer.author,
        "relays": [
            {"relay": relay, "addrs": list(addrs)}
            for relay, addrs in (status.relays.relays if status.relays else ())
        ],
        "relay_list_version": status.relays.version if status.relays else 0,
        "outbox": [
            {
                "relay": row.relay,
                "envelopes": row.pending,
                "bytes": row.bytes,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "next_attempt_ms": row.next_attempt_ms,
            }
            for row in status.outbox
        ],
        "outbox_envelopes": sum(row.pending for row in status.outbox),
        "received": status.received,
        "received_by_outcome": status.received_by_outcome,
        "mailed_seq": status.mailed_seq,
    }


def relay_status(db: SqliteDatabase) -> dict[str, Any]:
    status = relay_store.relay_status(db)
    return {
        "recipients": status.recipients,
        "envelopes": status.envelopes,
        "bytes": status.bytes,
        "by_recipient": [
            {"did": did, "envelopes": envelopes, "bytes": size, "quota_bytes": quota}
            for did, envelopes, size, quota in relay_store.recipients(db)
        ],
    }
