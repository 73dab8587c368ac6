"""Who we are connected to, and a way to wait until that changes.

py-libp2p 0.8.1 never calls its notifees' `disconnected` (Swarm.notify_disconnected has no caller),
so we poll the swarm's connection table. A poll every 250 ms costs nothing measurable and bounds how
late a redial starts after a peer drops.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio
from libp2p.abc import IHost
from libp2p.peer.peerstore import PeerStoreError

log = structlog.get_logger()

POLL_INTERVAL_S = 0.25

# Called without awaiting: recording a peer must never hold up connection tracking.
PeerSeen = Callable[[str, list[str], int], None]


class ConnectionWatcher:
    def __init__(self, host: IHost, on_peer_seen: PeerSeen) -> None:
        self._host = host
        self._on_peer_seen = on_peer_seen
        self._connected: frozenset[str] = frozenset()
        self._changed = trio.Event()
        # Connected peers whose listen addresses identify has not told us yet.
        self._unidentified: set[str] = set()

    def is_connected(self, peer_id: str) -> bool:
        """Live answer from the swarm (the polled set may be up to one interval old)."""
        return any(str(p) == peer_id for p in self._host.get_connected_peers())

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def peer_addrs(self, peer_id: str) -> list[str]:
        """The peer's listen addresses, once identify told us (an inbound peer's source port
        is not one); [] until then."""
        for p in self._host.get_connected_peers():
            if str(p) == peer_id:
                try:
                    return [str(a) for a in self._host.get_peerstore().addrs(p)]
                except PeerStoreError:
                    return []
        return []

    async def run(self) -> None:
        while True:
            await self._poll()
            await trio.sleep(POLL_INTERVAL_S)

    async def _poll(self) -> None:
        now = frozenset(str(p) for p in self._host.get_connected_peers())
        seen_ms = int(time.time() * 1000)
        if now != self._connected:
            gone, new = self._connected - now, now - self._connected
            self._connected = now
            changed, self._changed = self._changed, trio.Event()
            changed.set()
            for peer_id in sorted(new):
                log.info("peer.connected", peer_id=peer_id, connected=len(now))
                addrs = self.peer_addrs(peer_id)
                self._on_peer_seen(peer_id, addrs, seen_ms)
                if not addrs:
                    self._unidentified.add(peer_id)
            for peer_id in sorted(gone):
                log.info("peer.disconnected", peer_id=peer_id, connected=len(now))
                self._unidentified.discard(peer_id)
                self._on_peer_seen(peer_id, [], seen_ms)
        # Identify runs after connect: record a peer's addresses once they are known (one
        # peerstore lookup per poll until then, no database write).
        for peer_id in sorted(self._unidentified):
            addrs = self.peer_addrs(peer_id)
            if addrs:
                self._unidentified.discard(peer_id)
                self._on_peer_seen(peer_id, addrs, seen_ms)
