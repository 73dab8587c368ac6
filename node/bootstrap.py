"""Keep a connection to each bootstrap peer: dial at start, redial with capped backoff on loss."""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog
import trio
from libp2p.abc import IHost
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.connections import ConnectionWatcher
from node.host import DIAL_TIMEOUT_S

log = structlog.get_logger()

# A connection that lasted this long counts as healthy: its loss restarts the backoff schedule.
STABLE_CONNECTION_S = 10.0


def backoff_delay(attempt: int, min_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """Delay before redial number `attempt` (0-based): doubling from min_s, capped at max_s.

    The delay is drawn from [d/2, d] ("equal jitter") so that peers which lost a common neighbour
    do not all redial it in the same instant, while the wait never drops below half the schedule.
    """
    ceiling = min(max_s, min_s * 2.0 ** min(attempt, 62))
    return ceiling / 2 + rand() * ceiling / 2


async def keep_connected(
    host: IHost,
    watcher: ConnectionWatcher,
    addr: str,
    *,
    min_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> None:
    info = info_from_p2p_addr(Multiaddr(addr))
    peer_id = str(info.peer_id)
    attempt = 0

    async def back_off(reason: str, **details: object) -> None:
        nonlocal attempt
        delay = backoff_delay(attempt, min_s, max_s, rand)
        attempt += 1
        log.warning(reason, addr=addr, attempt=attempt, retry_in_s=round(delay, 2), **details)
        await trio.sleep(delay)

    with structlog.contextvars.bound_contextvars(peer_id=peer_id):
        while True:
            if not watcher.is_connected(peer_id):
                # py-libp2p refuses, for 60 s, to dial a peer whose addresses all failed once
                # (its "negative cache"); our backoff owns retry policy, so clear it.
                host.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
                try:
                    with trio.fail_after(DIAL_TIMEOUT_S * 2):
                        await host.connect(info)
                except (BaseLibp2pError, OSError, trio.TooSlowError) as err:
                    await back_off(
                        "bootstrap.dial_failed",
                        error=str(err) or type(err).__name__,
                        hint="check the address and that the peer is running; retrying",
                    )
                    continue
                log.info("bootstrap.connected", addr=addr, attempts=attempt + 1)
            since = trio.current_time()
            while watcher.is_connected(peer_id):
                await watcher.wait_changed()
            lasted = trio.current_time() - since
            if lasted < STABLE_CONNECTION_S:
                # A peer that accepts and then drops us must not be redialed in a tight loop.
                await back_off("bootstrap.connection_flapping", lasted_s=round(lasted, 2))
            else:
                attempt = 0
                log.info("bootstrap.connection_lost", addr=addr, lasted_s=round(lasted, 1))
