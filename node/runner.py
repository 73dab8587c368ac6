"""`vivim-node run`: the node process, from start to ready line to clean shutdown.

One trio nursery holds everything the node does (connection watcher, control API, bootstrap
redialers); SIGINT or SIGTERM cancels it, the host closes its connections, and the process exits 0.
"""

from __future__ import annotations

import json
import signal
import sys
from functools import partial
from typing import TextIO

import structlog
import trio
from libp2p.custom_types import TProtocol
from multiaddr import Multiaddr

from node.api import ApiBackend, build_app, serve_api
from node.bootstrap import keep_connected
from node.commons_api import commons_routes
from node.config import Config, ConfigError
from node.database import Database
from node.errors import NodeError, find_exception
from node.host import build_host, check_listening
from node.identity import LocalIdentity, load_local_identity
from node.keys import encryption_key_file
from node.mailbox_api import mailbox_routes
from node.pairing import pairing_route, serve_pairing
from node.peering_api import peering_routes
from node.relay import RelayService, RelaySettings
from node.runtime import (
    TOKEN_FILE,
    EarlySignals,
    read_token,
    remove_runtime_file,
    run_lock,
    write_runtime_file,
)
from node.sharing_api import sharing_routes
from node.state import NodeState
from node.vault_api import build_vault_routes
from protocols.global_sync import GLOBAL_SYNC_PROTOCOL_ID
from protocols.gossip import GOSSIP_PROTOCOL_ID
from protocols.mailbox import MAILBOX_PROTOCOL_ID
from protocols.mailbox_notice import MAILBOX_NOTICE_PROTOCOL_ID
from protocols.pairing import PROTOCOL_ID as PAIRING_PROTOCOL_ID
from protocols.peering_session import PEERING_PROTOCOL_ID
from protocols.share_sync import SHARE_PROTOCOL_ID
from protocols.sync import SYNC_PROTOCOL_ID
from store import peering as peering_store
from store.mailbox import relay_list
from store.sync_state import device_addresses

log = structlog.get_logger()

# Budget for closing libp2p connections at shutdown (SIGTERM to exit must stay under 3 s).
HOST_CLOSE_TIMEOUT_S = 1.0


async def _stop_on_signal(cancel_scope: trio.CancelScope, early: EarlySignals) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # A signal that came while Python was still importing counts as if it came now.
        signum = early.signum
        if signum is None:
            signum = await signals.__anext__()
        log.info("node.stopping", signal=signal.Signals(signum).name)
        cancel_scope.cancel()


async def run_node(
    config: Config, early: EarlySignals | None = None, stdout: TextIO = sys.stdout
) -> None:
    """Run until SIGINT/SIGTERM, which stop it cleanly at any point, start-up included."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope, early or EarlySignals())
        await _run(config, stdout)
    log.info("node.stopped")


async def _run(config: Config, stdout: TextIO) -> None:
    # The lock first: nothing is opened, migrated or written before this process owns the
    # data directory.
    with run_lock(config.data_dir):
        identity = load_local_identity(config.data_dir)
        with structlog.contextvars.bound_contextvars(node_id=identity.peer_id):
            token = read_token(config.data_dir)
            db = await Database.open(config.data_dir / "vivim.db")
            try:
                await _serve(config, identity, db, token, stdout)
            finally:
                remove_runtime_file(config.data_dir)
                # Every caller of a running job is being cancelled: stop the job too.
                db.interrupt()
                await db.aclose()


async def _serve(
    config: Config, identity: LocalIdentity, db: Database, token: str, stdout: TextIO
) -> None:
    for addr in config.bootstrap:
        if addr.rstrip("/").endswith(f"/p2p/{identity.peer_id}"):
            raise ConfigError(
                f"bootstrap address {addr} names this node itself: remove it from --bootstrap "
                "or config.toml"
            )
    host = build_host(identity.device_seed)
    encryption_key = encryption_key_file(config.data_dir).read()
    state = NodeState(
        identity,
        host,
        db,
        sync_interval_s=config.sync_interval_s,
        encryption_key=encryption_key,
    )
    host.set_stream_handler(TProtocol(SYNC_PROTOCOL_ID), state.sync.serve_sync)
    host.set_stream_handler(TProtocol(GOSSIP_PROTOCOL_ID), state.sync.serve_gossip)
    host.set_stream_handler(TProtocol(MAILBOX_NOTICE_PROTOCOL_ID), state.mailbox.serve_notice)
    host.set_stream_handler(TProtocol(PEERING_PROTOCOL_ID), state.peering.serve)
    host.set_stream_handler(TProtocol(SHARE_PROTOCOL_ID), state.shares.serve)
    host.set_stream_handler(TProtocol(GLOBAL_SYNC_PROTOCOL_ID), state.commons.serve_pull)
    relay: RelayService | None = None
    if config.relay:
        relay = RelayService(
            host,
            db,
            identity.peer_id,
            RelaySettings(
                allow=config.relay_allow,
                max_envelope_bytes=config.relay_max_envelope_bytes,
                sweep_interval_s=config.relay_sweep_interval_s,
            ),
        )
        host.set_stream_handler(TProtocol(MAILBOX_PROTOCOL_ID), relay.serve)
    host.set_stream_handler(
        TProtocol(PAIRING_PROTOCOL_ID),
        partial(
            serve_pairing,
            codes=state.pairing_codes,
            database=db,
            signer=identity.signer(),
            encryption_key=encryption_key,
            on_certified=state.local_changed,
        ),
    )
    # Besides the bootstrap list, keep connections to our other devices we know addresses of.
    devices = await db.read(device_addresses, identity.peer_id)
    # And to our relays, which push a notice the moment mail for us arrives.
    relays = await db.read(relay_list)
    for peer, addrs in relays.relays if relays else ():
        devices.setdefault(peer, addrs)
    bootstrapped = {addr.rstrip("/").rsplit("/p2p/", 1)[-1] for addr in config.bootstrap}
    dial = [*config.bootstrap]
    dial += [
        f"{addrs[0]}/p2p/{peer}" for peer, addrs in devices.items() if peer not in bootstrapped
    ]
    # And to our friends (at the first address each gave), so shares reach them at once, and
    # to those we asked and who have not answered, so an acceptance they made while we were
    # away reaches us when we meet (node/peering.py, `peer_connected`).
    dialled = {addr.rstrip("/").rsplit("/p2p/", 1)[-1] for addr in dial}
    people = [friend.addrs for friend in await db.read(peering_store.friends)]
    people += [
        asked.addrs
        for asked in await db.read(partial(peering_store.connections, state="pending"))
        if asked.direction == "outgoing"
    ]
    for addrs in people:
        first = next((a for a in addrs if "/p2p/" in a), None)
        if first is not None and first.rsplit("/p2p/", 1)[-1] not in dialled:
            dial.append(first)
            dialled.add(first.rsplit("/p2p/", 1)[-1])
    async with host.run([Multiaddr(a) for a in config.listen]):
        try:
            check_listening(host, config.listen)
            async with trio.open_nursery() as nursery:
                await nursery.start(state.sync.run)
                await nursery.start(state.mailbox.run)
                await nursery.start(state.commons.run)
                await nursery.start(state.shares.run)
                await nursery.start(state.peering.run)
                if relay is not None:
                    await nursery.start(relay.run)
                nursery.start_soon(state.watcher.run)
                nursery.start_soon(state.record_peers)
                api_url = await _start_api(nursery, state, config, token)
                for addr in dial:
                    nursery.start_soon(
                        partial(
                            keep_connected,
                            host,
                            state.watcher,
                            addr,
                            min_s=config.redial_min_s,
                            max_s=config.redial_max_s,
                        )
                    )
                _announce_ready(config, state, api_url, stdout)
        finally:
            # Close connections ourselves so peers see us leave at once (py-libp2p's run()
            # leaves outbound sockets open); bounded so shutdown stays well under 3 s.
            with trio.move_on_after(HOST_CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                await host.close()


async def _start_api(nursery: trio.Nursery, state: NodeState, config: Config, token: str) -> str:
    app = build_app(
        ApiBackend(status=state.status, peers=state.peers, metrics=state.metrics.render),
        token,
        config.data_dir / TOKEN_FILE,
        [
            *build_vault_routes(
                state.db, state.identity.signer(), config.data_dir, state.local_changed
            ),
            *mailbox_routes(state.mailbox),
            *sharing_routes(
                state.db, state.identity.signer(), state.local_changed, state.commons.gossip
            ),
            *peering_routes(state.peering),
            *commons_routes(state.commons, state.db),
            pairing_route(
                state.pairing_codes, state.identity.did, state.identity.peer_id, state.addrs
            ),
        ],
    )
    try:
        binds = await nursery.start(serve_api, app, config.api_port)
    except (OSError, BaseExceptionGroup) as err:
        bind_error = find_exception(err, OSError)
        if bind_error is None:
            raise
        raise NodeError(
            f"cannot serve the control API on 127.0.0.1:{config.api_port}: "
            f"{bind_error.strerror}. Set api_port = 0 (any free port) or pick another port"
        ) from err
    return str(binds[0])


def _announce_ready(config: Config, state: NodeState, api_url: str, stdout: TextIO) -> None:
    """node.json for the CLI, a log line, and the one JSON line on stdout, in that order: whoever
    reads the ready line can use the CLI at once."""
    ready = {
        "event": "ready",
        "did": state.identity.did,
        "peer_id": state.identity.peer_id,
        "addrs": state.addrs(),
        "api": api_url,
    }
    write_runtime_file(config.data_dir, ready)
    log.info(
        "node.ready",
        addrs=ready["addrs"],
        api=api_url,
        bootstrap=len(config.bootstrap),
        relay=config.relay,
    )
    stdout.write(json.dumps(ready) + "\n")
    stdout.flush()
