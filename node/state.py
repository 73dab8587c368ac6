"""What the control API and the metrics read from the running node."""

from __future__ import annotations

import math
import time
from importlib.metadata import version
from typing import Any

import trio
from libp2p.abc import IHost

from node.commons import CommonsService
from node.connections import ConnectionWatcher
from node.database import Database
from node.identity import LocalIdentity
from node.mailbox import MailboxService
from node.metrics import NodeMetrics
from node.pairing import PairingCodes
from node.peering import ACCEPT_LETTER, REQUEST_LETTER, PeeringService
from node.share_delivery import SHARE_LETTER, ShareDelivery
from node.sync import SyncService
from store import peers as peer_store


class NodeState:
    """The running node's identity, host and database, and the views built from them."""

    def __init__(
        self,
        identity: LocalIdentity,
        host: IHost,
        db: Database,
        *,
        sync_interval_s: float,
        encryption_key: bytes,
    ) -> None:
        self.identity = identity
        self.host = host
        self.db = db
        self.started = time.monotonic()
        self.pairing_codes = PairingCodes()
        # Unbounded: one entry per connect/disconnect/identify, consumed as fast as SQLite writes.
        self._seen_send, self._seen_receive = trio.open_memory_channel[tuple[str, list[str], int]](
            math.inf
        )
        self.watcher = ConnectionWatcher(host, self.record_peer_seen)
        self.sync = SyncService(
            host,
            db,
            identity.peer_id,
            interval_s=sync_interval_s,
            is_connected=self.watcher.is_connected,
        )
        self.mailbox = MailboxService(
            host,
            db,
            identity,
            encryption_key,
            is_connected=self.watcher.is_connected,
            on_written=self.local_changed,
        )
        self.peering = PeeringService(host, db, identity)
        self.mailbox.inbox.register_handler(REQUEST_LETTER, self.peering.on_letter)
        self.mailbox.inbox.register_handler(ACCEPT_LETTER, self.peering.on_letter)
        # Shares between friends: the /vivim/share/1.0.0 pull, hints, and mail while away.
        self.shares = ShareDelivery(
            host, db, identity, encryption_key, is_connected=self.watcher.is_connected
        )
        self.mailbox.inbox.register_handler(SHARE_LETTER, self.shares.on_letter)
        self.peering.on_connected = self.friend_connected
        self.peering.on_invited = self.mailbox.refresh_registrations
        # The global commons: GossipSub on vivim/global/1 and the /vivim/global/1.0.0 pull.
        self.commons = CommonsService(host, db, identity, on_written=self.local_changed)
        self.metrics = NodeMetrics(
            connected_peers=lambda: len(self.host.get_connected_peers()),
            uptime_s=self.uptime_s,
        )

    def local_changed(self) -> None:
        """Something was written here: announce it to our devices, mail it to absent ones."""
        self.sync.local_changed()
        self.mailbox.local_changed()
        self.shares.local_changed()

    def friend_connected(self, did: str) -> None:
        """A friendship was accepted: deliver what is shared with them, and let them mail us
        through our relays."""
        self.shares.local_changed()
        self.mailbox.friends_changed()

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

    def record_peer_seen(self, peer_id: str, addrs: list[str], seen_at_ms: int) -> None:
        """Queue a sighting for `record_peers`: the watcher must not wait on the database (a
        long import batch holds the writer)."""
        self._seen_send.send_nowait((peer_id, addrs, seen_at_ms))
        # A device that connects (or is identified) is synced with: both sides pull.
        if self.watcher.is_connected(peer_id):
            self.sync.request(peer_id)
            self.mailbox.peer_connected(peer_id)
            self.commons.peer_connected(peer_id)
            self.shares.peer_connected(peer_id)
            self.peering.peer_connected(peer_id)

    async def record_peers(self) -> None:
        """Write queued sightings to the peer table, in order, until cancelled."""
        async for peer_id, addrs, seen_at_ms in self._seen_receive:
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
