"""`vivim-node sync status`, as a blocking function of the database (run behind the control API
or straight on the data directory, like node/vault_ops.py)."""

from __future__ import annotations

from typing import Any

from peewee import SqliteDatabase

from store import sync_state


def sync_status(db: SqliteDatabase) -> dict[str, Any]:
    ours, peers = sync_state.sync_status(db)
    return {
        "heads": ours,
        "ops_held": sum(ours.values()),
        "peers": [
            {
                "peer_id": peer.peer_id,
                "lag_ops": sum(peer.lag.values()),
                "lag_by_device": peer.lag,
                "peer_heads": peer.peer_heads,
                "ops_received": peer.ops_received,
                "last_attempt_ms": peer.last_attempt_ms,
                "last_success_ms": peer.last_success_ms,
                "consecutive_failures": peer.consecutive_failures,
                "last_error": peer.last_error,
            }
            for peer in peers
        ],
    }
