"""Who we are connected to, and a way to wait until that changes.

py-libp2p 0.8.1 never calls its notifees' `disconnected` (Swarm.notify_disconnected has no caller),
so we poll the swarm's connection table. A poll every 250 ms costs nothing measurable and bounds how
late a redial starts after a peer drops.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
import trio
from libp2p.abc import IHost

log = structlog.get_logger()

POLL_INTERVAL_S = 0.25

PeerSeen = Callable[[str, list[str], int], Awaitable[None]]


class ConnectionWatcher:
    def __init__(self, host: IHost, on_peer_seen: PeerSeen) -> None:
        self._host = host
        self._on_peer_seen = on_peer_seen
        self._connected: frozenset[str] = frozenset()
        self._changed = trio.Event()

    @property
    def connected(self) -> frozenset[str]:
        return self._connected

    def is_connected(self, peer_id: str) -> bool:
        """Live answer from the swarm (the polled set may be up to one interval old)."""
        return any(str(p) == peer_id for p in self._host.get_connected_peers())

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def peer_addrs(self, peer_id: str) -> list[str]:
        for p in self._host.get_connected_peers():
            if str(p) == peer_id:
                return [str(a) for a in self._host.get_peerstore().addrs(p)]
        return []

    async def run(self) -> None:
        while True:
            now = frozenset(str(p) for p in self._host.get_connected_peers())
            if now != self._connected:
                gone, new = self._connected - now, now - self._connected
                self._connected = now
                changed, self._changed = self._changed, trio.Event()
                changed.set()
                seen_ms = int(time.time() * 1000)
                for peer_id in sorted(new):
                    log.info("peer.connected", peer_id=peer_id, connected=len(now))
                    await self._on_peer_seen(peer_id, self.peer_addrs(peer_id), seen_ms)
                for peer_id in sorted(gone):
                    log.info("peer.disconnected", peer_id=peer_id, connected=len(now))
                    await self._on_peer_seen(peer_id, [], seen_ms)
            await trio.sleep(POLL_INTERVAL_S)
