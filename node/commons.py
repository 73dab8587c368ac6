"""The global commons on the wire: GossipSub topic `vivim/global/1` and `/vivim/global/1.0.0`.

- **Gossip.** The node runs a standard GossipSub router (`/meshsub/1.2.0` and older, heartbeat
  1 s, the spec's mesh degrees) and subscribes to `vivim/global/1`, so every connected node,
  strangers included, relays publications. A topic validator decodes and verifies each message
  (`protocols.publication.verify_publication`) and stores it before GossipSub delivers or
  forwards it: what fails is logged (`commons.refused`), not stored and not forwarded. Message
  ids are the hash of the message data, so a publication is one message whoever sends it.
- **Pull.** GossipSub reaches the nodes connected at the time; a node that connects later pulls
  what it lacks from each peer it connects to (`peer_connected`): "publications after your seq
  N", N being our cursor for that peer, verified and stored batch by batch, the cursor advanced
  after each batch is stored. Anyone may pull: what is published is public.
- **Publish.** `publish` writes the publication (store.commons.publish: level, grants, record)
  and hands it to GossipSub, whose `publish` never raises and may drop (spam protection, full
  queues): the pull on connect is what makes a publication reach everyone eventually.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from node.database import Database
from node.identity import LocalIdentity
from node.streams import close_quietly, read_some, write_quietly
from protocols.errors import RemoteProtocolError
from protocols.global_sync import (
    GLOBAL_SYNC_PROTOCOL_ID,
    MAX_FRAME,
    MAX_LIMIT,
    Batch,
    GlobalError,
    GlobalSyncClient,
    GlobalSyncServer,
    NeedData,
    StreamEnded,
    take_fitting,
)
from protocols.publication import GlobalPublication, verify_publication
from store import commons as commons_store

log = structlog.get_logger()

TOPIC = "vivim/global/1"
# The GossipSub spec's values: heartbeat 1 s (py-libp2p defaults to 120 s), mesh degree 6
# (between 4 and 12).
HEARTBEAT_S = 1
MESH_DEGREE, MESH_DEGREE_LOW, MESH_DEGREE_HIGH = 6, 4, 12
# A pull stream idle this long between frames is given up on (the peer can pull again).
READ_TIMEOUT_S = 30.0
# A whole pull from one peer (every batch) is bounded; the next connection pulls the rest.
PULL_TIMEOUT_S = 120.0


def now_ms() -> int:
    return int(time.time() * 1000)


def _message_id(message: rpc_pb2.Message) -> bytes:
    return hashlib.sha256(message.data).digest()


def check_received(data: bytes) -> GlobalPublication:
    """Decode and verify a publication from elsewhere; `RemoteProtocolError` says why not."""
    publication = GlobalPublication.from_wire(data)
    verify_publication(publication)
    return publication


class CommonsService:
    """GossipSub for `vivim/global/1` and the pull protocol (module docstring)."""

    def __init__(
        self,
        host: IHost,
        db: Database,
        identity: LocalIdentity,
        *,
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._host = host
        self._db = db
        self._identity = identity
        self._on_written = on_written
        self._router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=MESH_DEGREE,
            degree_low=MESH_DEGREE_LOW,
            degree_high=MESH_DEGREE_HIGH,
            heartbeat_interval=HEARTBEAT_S,
        )
        # Built here, before the host runs: it registers the meshsub handlers and a notifee
        # for connections, which must see the first connection too.
        self._pubsub = Pubsub(host, self._router, msg_id_constructor=_message_id)
        self._nursery: trio.Nursery | None = None
        self._pulling: set[str] = set()
        self._pull_again: set[str] = set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with (
            background_trio_service(self._pubsub),
            background_trio_service(self._router),
            trio.open_nursery() as nursery,
        ):
            await self._pubsub.wait_until_ready()
            self._pubsub.set_topic_validator(TOPIC, self._validate, is_async_validator=True)
            subscription = await self._pubsub.subscribe(TOPIC)
            self._nursery = nursery
            task_status.started()
            # Delivered messages were stored by the validator already: drain the subscription
            # so its buffer never fills.
            while True:
                await subscription.get()

    # --- gossip ------------------------------------------------------------------------------

    async def _validate(self, forwarder: ID, message: rpc_pb2.Message) -> bool:
        peer_id = str(forwarder)
        try:
            publication = check_received(bytes(message.data))
        except RemoteProtocolError as err:
            log.warning("commons.refused", peer_id=peer_id, error=err.code, message=str(err))
            return False
        if peer_id == self._identity.peer_id:
            return True  # our own publish: stored before it was handed to GossipSub
        report = await self._db.write(
            partial(commons_store.store_publications, received_from=peer_id, now_ms=now_ms()),
            [publication],
        )
        self._log_stored(report, peer_id, "gossip", [publication])
        return not report.refused

    async def publish(
        self, subject_id: str, *, title: str, tags: Sequence[str], license: str
    ) -> commons_store.Published:
        """Publish a subject of the vault and gossip it; raises store errors as they are."""
        published = await self._db.write(
            partial(
                commons_store.publish,
                title=title,
                tags=tags,
                license=license,
                now_ms=now_ms(),
            ),
            self._identity.signer(),
            subject_id,
        )
        publication = published.publication
        log.info(
            "commons.published",
            publication_id=publication.id,
            subject_id=subject_id,
            version=publication.version,
            grants=list(published.grants),
            bytes=len(publication.to_wire()),
        )
        self._on_written()  # the ACUs' raised levels are ops for our other devices
        await self._pubsub.publish(TOPIC, publication.to_wire())
        return published

    async def gossip(self, publication_id: str) -> None:
        """Gossip a publication this node stored already (`share ACU --global`, which writes it
        through the sharing API)."""
        found = await self._db.read(commons_store.get_publication, publication_id)
        if found is None:
            return
        _, publication = found
        log.info("commons.published", publication_id=publication.id, version=publication.version)
        await self._pubsub.publish(TOPIC, publication.to_wire())

    # --- pull --------------------------------------------------------------------------------

    def peer_connected(self, peer_id: str) -> None:
        """Pull what `peer_id` holds that we lack (at most one pull per peer at a time)."""
        if self._nursery is None or peer_id == self._identity.peer_id:
            return
        if peer_id in self._pulling:
            self._pull_again.add(peer_id)
            return
        self._pulling.add(peer_id)
        self._nursery.start_soon(self._pull_from, peer_id)

    async def _pull_from(self, peer_id: str) -> None:
        try:
            while True:
                self._pull_again.discard(peer_id)
                await self._pull(peer_id)
                if peer_id not in self._pull_again:
                    return
        finally:
            self._pulling.discard(peer_id)

    async def _pull(self, peer_id: str) -> None:
        with structlog.contextvars.bound_contextvars(
            peer_id=peer_id, protocol=GLOBAL_SYNC_PROTOCOL_ID
        ):
            try:
                with trio.move_on_after(PULL_TIMEOUT_S):
                    stream = await self._host.new_stream(
                        ID.from_base58(peer_id), [TProtocol(GLOBAL_SYNC_PROTOCOL_ID)]
                    )
                    try:
                        await self._pull_on(stream, peer_id)
                    finally:
                        await close_quietly(stream)
            except (BaseLibp2pError, StreamError) as err:
                # Not a vivim node, or gone: nothing to pull from it.
                log.info("commons.pull_unavailable", message=str(err) or type(err).__name__)
            except RemoteProtocolError as err:
                log.warning("commons.pull_failed", error=err.code, message=str(err))
            except trio.TooSlowError:
                log.warning("commons.pull_failed", error="timeout", after_s=READ_TIMEOUT_S)

    async def _pull_on(self, stream: INetStream, peer_id: str) -> None:
        client = GlobalSyncClient()
        after = await self._db.read(commons_store.pull_cursor, peer_id)
        stored = refused = 0
        while True:
            await stream.write(client.pull(after=after, limit=MAX_LIMIT))
            event = await _next_event(client, stream)
            if isinstance(event, GlobalError):
                log.warning("commons.pull_refused", error=event.code, message=event.message)
                return
            if isinstance(event, StreamEnded):
                return
            assert isinstance(event, Batch)
            good: list[GlobalPublication] = []
            for publication in event.publications:
                try:
                    verify_publication(publication)
                except RemoteProtocolError as err:
                    refused += 1
                    log.warning(
                        "commons.refused",
                        publication_id=publication.id,
                        error=err.code,
                        message=str(err),
                    )
                    continue
                good.append(publication)
            report = await self._db.write(
                partial(commons_store.store_publications, received_from=peer_id, now_ms=now_ms()),
                good,
            )
            self._log_stored(report, peer_id, "pull", good)
            stored += len(report.stored)
            await self._db.write(
                commons_store.advance_cursor, peer_id, event.last, len(good), now_ms()
            )
            after = event.last
            if not event.more:
                break
        client.finish()
        log.info("commons.pulled", stored=stored, refused=refused, cursor=after)

    async def serve_pull(self, stream: INetStream) -> None:
        """Answer a peer's pulls (the handler of GLOBAL_SYNC_PROTOCOL_ID)."""
        peer_id = str(stream.muxed_conn.peer_id)
        server = GlobalSyncServer()
        sent = 0
        with structlog.contextvars.bound_contextvars(
            peer_id=peer_id, protocol=GLOBAL_SYNC_PROTOCOL_ID
        ):
            try:
                while True:
                    event = await _next_event(server, stream)
                    if isinstance(event, StreamEnded):
                        break
                    rows = await self._db.read(
                        commons_store.publications_after, event.after, event.limit + 1
                    )
                    wires = [wire for _, wire in rows[: event.limit]]
                    count = take_fitting(wires)
                    publications = [GlobalPublication.from_wire(w) for w in wires[:count]]
                    last = rows[count - 1][0] if count else event.after
                    await stream.write(server.batch(publications, last, len(rows) > count))
                    sent += count
                if sent:
                    log.info("commons.served", publications=sent)
            except RemoteProtocolError as err:
                log.warning("commons.bad_request", error=err.code, message=str(err))
                await write_quietly(stream, server.fail(err.code, str(err)))
            except trio.TooSlowError:
                log.warning("commons.bad_request", error="timeout", after_s=READ_TIMEOUT_S)
            except StreamError as err:
                log.info("commons.stream_closed", message=str(err) or type(err).__name__)
            finally:
                await close_quietly(stream)

    def _log_stored(
        self,
        report: commons_store.StoreReport,
        peer_id: str,
        via: str,
        publications: Sequence[GlobalPublication],
    ) -> None:
        by_id = {p.id: p for p in publications}
        for publication_id in report.stored:
            publication = by_id[publication_id]
            log.info(
                "commons.received",
                publication_id=publication_id,
                publisher=publication.publisher_did,
                version=publication.version,
                peer_id=peer_id,
                via=via,
            )
        for publication_id, why in report.refused:
            log.warning(
                "commons.refused", publication_id=publication_id, error="immutable", message=why
            )


async def _next_event(session: GlobalSyncClient | GlobalSyncServer, stream: INetStream) -> Any:
    """The session's next event, reading the stream as needed (idle at most READ_TIMEOUT_S)."""
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            event = session.next_event()
            if not isinstance(event, NeedData):
                return event
            session.receive_data(await read_some(stream, MAX_FRAME))
