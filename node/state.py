"""What the control API and the metrics read from the running node."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from libp2p.abc import IHost

from node.connections import ConnectionWatcher
from node.database import Database
from node.identity import LocalIdentity
from node.metrics import NodeMetrics
from store import peers as peer_store


class NodeState:
    """The running node's identity, host and database, and the views built from them."""

    def __init__(self, identity: LocalIdentity, host: IHost, db: Database) -> None:
        self.identity = identity
        self.host = host
        self.db = db
        self.started = time.monotonic()
        self.watcher = ConnectionWatcher(host, self.record_peer_seen)
        self.metrics = NodeMetrics(
            connected_peers=lambda: len(self.host.get_connected_peers()),
            uptime_s=self.uptime_s,
        )

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def status(self) -> dict[str, Any]:
        return {
            "did": self.identity.did,
            "peer_id": self.identity.peer_id,
            "addrs": self.addrs(),
            "uptime_s": round(self.uptime_s(), 3),
            "connected_peers": len(self.host.get_connected_peers()),
            "version": version("vivim-node"),
        }

    async def record_peer_seen(self, peer_id: str, addrs: list[str], seen_at_ms: int) -> None:
        await self.db.write(peer_store.record_peer_seen, peer_id, addrs, seen_at_ms)

    async def peers(self) -> list[dict[str, Any]]:
        known = await self.db.read(peer_store.list_peers)
        connected = {str(p) for p in self.host.get_connected_peers()}
        rows: dict[str, dict[str, Any]] = {
            p.peer_id: {
                "peer_id": p.peer_id,
                "did": p.did,
                "addrs": list(p.addrs),
                "connected": p.peer_id in connected,
                "last_seen_ms": p.last_seen_ms,
            }
            for p in known
        }
        for peer_id in connected - rows.keys():
            # Connected before the watcher's next poll recorded it.
            rows[peer_id] = {
                "peer_id": peer_id,
                "did": None,
                "addrs": self.watcher.peer_addrs(peer_id),
                "connected": True,
                "last_seen_ms": None,
            }
        return sorted(rows.values(), key=lambda r: (not r["connected"], r["peer_id"]))
