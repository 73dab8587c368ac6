"""Sync between the devices of one identity: /vivim/sync/1.0.0 both ways, gossip of heads, and
when to sync.

- **Pull** (`_pull`): the client sends its cursor (our chain heads), the server answers with a
  batch of the ops past it (store.sync_state.ops_after), the client verifies and applies the
  batch together with its cursor advance in one transaction (apply_batch) and pulls again until
  the server says done. A crash between batches loses nothing and applies nothing twice: the
  cursor is the heads the last committed batch left. The client pulls ahead of what it has
  applied (`_fetch`), and applies several batches in one transaction (`_apply`).
- **Who**: only trusted devices of our DID, both ways (store.sync_state.may_sync, checked on
  every pull, so a revocation takes effect within a batch); anyone else gets `unauthorized`.
- **When** (`SyncService`): on connect, every `sync_interval_s` (anti-entropy), and when a device
  announces heads we lack (gossip). After every local write, and after a sync that applied
  something, we announce our heads to the connected devices (bursts coalesced), so a write
  reaches the others in one announce and one pull, hop by hop.
- **Refused ops**: an invalid op stops its device's chain for this session: nothing after it is
  applied (apply_batch refuses the rest of that device's ops), the refusal is logged with the op
  id, the server is told (`invalid_op`), and the next sync tries again (its certificate may have
  arrived by then).
"""

from __future__ import annotations

import gc
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from peewee import SqliteDatabase

from node.database import Database
from node.errors import NodeError
from node.op_checker import CheckerDied, OpChecker, sync_checking_processes
from node.streams import close_quietly, read_some, reset_quietly, write_quietly
from protocols.errors import MalformedInput, RemoteProtocolError
from protocols.gossip import GOSSIP_PROTOCOL_ID, AnnounceReader, behind, encode_announce
from protocols.gossip import MAX_FRAME as GOSSIP_MAX_FRAME
from protocols.oplog import op_position
from protocols.peer_id import ed25519_public_key_from_peer_id
from protocols.sync import (
    MAX_FRAME,
    MAX_SEQ,
    SYNC_PROTOCOL_ID,
    Batch,
    BatchReceived,
    ClientFinished,
    ErrorReceived,
    NeedData,
    PullReceived,
    SyncClient,
    SyncServer,
)
from store import op_checks, sync_state

log = structlog.get_logger()

# Per pull: larger batches cost less per op on both sides, but every batch pulled and not yet
# applied is in memory. Measured with scripts/bench_sync.py (100k ops), one batch a
# transaction: 1000 ops / 2 MiB 3.9k ops/s; 2000 / 2 MiB 4.7k ops/s at 216/207 MB peak RSS;
# 4000 / 4 MiB (the protocol's bound) 5.3k ops/s but 232/237 MB, too close to the 250 MB budget.
PULL_MAX_OPS = 2000
PULL_MAX_BYTES = 2 * 1024 * 1024
# Batches pulled and handed to the checking processes that may wait for the writer (one more is
# being handed over, so up to AHEAD_BATCHES + 1 are checked at once: enough for MAX_PROCESSES
# checkers). Measured with bench_sync: 2 ahead kept B at 220 MB, 3 at ~227 MB with batches
# applied several at a time, 6 at 236-248 MB; 4, with two checkers, at 222-223 MB.
AHEAD_BATCHES = 4
# The writer applies up to this many batches in one transaction, taking each as soon as it is
# checked and letting it go once applied (`_apply_fed`), so a transaction holds more batches
# than memory does. A commit writes out every page the transaction dirtied, most pages of each
# index keyed by random content ids: ~40 us/op committing 2,000 ops at a time, ~20 at 8,000,
# ~13 at 16,000 (store level). bench_sync: groups of 3.5 batches 6.8k ops/s, of 7 7.1k ops/s,
# and 6 MB less peak RSS (batches are let go as applied).
GROUP_BATCHES = 8
# How long the writer waits in its transaction for the next batch before it commits what it
# holds: the writer thread runs every write of the node, which wait meanwhile.
GROUP_WAIT_S = 0.2
# Batches in a row that apply nothing before we give up on the peer: the batches asked for
# before a refusal stopped a device may hold only that device's ops; more than those means the
# peer keeps sending what we refuse.
MAX_IDLE_BATCHES = AHEAD_BATCHES + GROUP_BATCHES + 1
# A peer that does not answer a read within this is given up on for this sync.
READ_TIMEOUT_S = 30.0
# Announcements within this window are sent as one (an import writes in bursts).
ANNOUNCE_COALESCE_S = 0.01
ANNOUNCE_TIMEOUT_S = 5.0
# A progress line every this many batches of one sync.
PROGRESS_EVERY = 10


class SyncFailed(NodeError):
    """A sync with a peer ended early; the message says why."""


def now_ms() -> int:
    return int(time.time() * 1000)


class SyncService:
    """Runs syncs with the connected devices of our identity (module docstring)."""

    def __init__(
        self,
        host: IHost,
        database: Database,
        local_device: str,
        *,
        interval_s: float,
        is_connected: Callable[[str], bool],
    ) -> None:
        self._host = host
        self._db = database
        self._local = local_device
        self._interval_s = interval_s
        self._is_connected = is_connected
        self._nursery: trio.Nursery | None = None
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._changed = trio.Event()
        self._checker = OpChecker(sync_checking_processes())

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; started (`nursery.start`) once syncs can be requested."""
        # The node's start-up objects (libp2p, the API, the modules) are made by now and live
        # to the end: keep the garbage collector from walking them again on every collection
        # while a sync allocates decoded ops by the hundred thousand (~6 us/op applied, store
        # level with the node's modules loaded).
        gc.freeze()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._announcer)
                nursery.start_soon(self._anti_entropy)
                task_status.started()
        finally:
            self._checker.close()

    # --- when ------------------------------------------------------------------------------

    def request(self, peer_id: str) -> None:
        """Sync with `peer_id` soon (again after the running one, if one runs)."""
        if self._nursery is None or peer_id == self._local:
            return
        if peer_id in self._running:
            self._again.add(peer_id)
            return
        self._running.add(peer_id)
        self._nursery.start_soon(self._sync_loop, peer_id)

    def local_changed(self) -> None:
        """Something was committed here: announce our heads to the connected devices."""
        self._changed.set()

    def connected_devices(self) -> list[str]:
        return [
            str(peer)
            for peer in self._host.get_connected_peers()
            if self._is_connected(str(peer)) and str(peer) != self._local
        ]

    async def _anti_entropy(self) -> None:
        while True:
            await trio.sleep(self._interval_s)
            for peer_id in self.connected_devices():
                self.request(peer_id)

    async def _sync_loop(self, peer_id: str) -> None:
        try:
            while True:
                self._again.discard(peer_id)
                await self._sync_once(peer_id)
                if peer_id not in self._again:
                    return
        finally:
            self._running.discard(peer_id)

    async def _sync_once(self, peer_id: str) -> None:
        if not await self._db.read(sync_state.may_sync, peer_id):
            return
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol=SYNC_PROTOCOL_ID):
            try:
                applied = await self._pull(peer_id)
            except (
                SyncFailed,
                CheckerDied,
                RemoteProtocolError,
                StreamError,
                BaseLibp2pError,
                OSError,
            ) as err:
                reason = getattr(err, "code", None) or type(err).__name__
                log.warning("sync.failed", error=reason, message=str(err) or reason)
                await self._db.write(
                    sync_state.record_outcome, peer_id, now_ms(), f"{reason}: {err}"
                )
                return
            except trio.TooSlowError:
                log.warning("sync.failed", error="timeout", after_s=READ_TIMEOUT_S)
                await self._db.write(
                    sync_state.record_outcome,
                    peer_id,
                    now_ms(),
                    "timeout: the peer stopped answering",
                )
                return
            await self._db.write(sync_state.record_outcome, peer_id, now_ms(), None)
            if applied:
                log.info(
                    "sync.completed", applied=applied, ms=round((time.monotonic() - started) * 1000)
                )
                self.local_changed()

    # --- the client ------------------------------------------------------------------------

    async def _pull(self, peer_id: str) -> int:
        """Pull everything `peer_id` has that we lack; return how many ops were applied."""
        stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(SYNC_PROTOCOL_ID)])
        client = SyncClient()
        try:
            applied = await self._pull_batches(peer_id, stream, client)
            await stream.close()
        except BaseException:
            await reset_quietly(stream)
            raise
        return applied

    async def _pull_batches(self, peer_id: str, stream: INetStream, client: SyncClient) -> int:
        """Pull and apply until the peer has nothing more. Two tasks: `_fetch` pulls, each pull
        on the cursor the batch before will leave, and hands each batch to the checking process;
        `_apply` has the writer apply the checked batches in order, several in a transaction.
        Network, checker and writer work at once."""
        # Devices whose chain stopped at a refused op: asked for no more in this sync.
        stopped: dict[str, int] = {}
        cursor: dict[str, int] = {**await self._db.read(sync_state.heads)}
        send, receive = trio.open_memory_channel[_Pulled](AHEAD_BATCHES)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fetch, client, stream, cursor, stopped, send)
                applied = await self._apply(peer_id, receive, stopped)
        except BaseExceptionGroup as group:
            error = _first_error(group)
            if isinstance(error, MalformedInput):
                await write_quietly(stream, client.send_error("malformed", str(error)))
            raise error from None
        if stopped:
            await stream.write(
                client.send_error(
                    "invalid_op", f"refused ops of {len(stopped)} device(s); see our log"
                )
            )
        else:
            client.finish()
        return applied

    async def _fetch(
        self,
        client: SyncClient,
        stream: INetStream,
        cursor: dict[str, int],
        stopped: Mapping[str, int],
        send: trio.MemorySendChannel[_Pulled],
    ) -> None:
        """Pull until the peer says done, each pull on the cursor the batches before will leave
        (read from the ops' bytes, `op_position`), skipping the devices `_apply` stopped; hand
        each batch to the checking process and on to `_apply`."""
        async with send:
            while True:
                asking = {
                    d: max(cursor.get(d, 0), stopped.get(d, 0))
                    for d in cursor.keys() | stopped.keys()
                }
                await stream.write(client.pull(asking, PULL_MAX_OPS, PULL_MAX_BYTES))
                event = await _next_event(client, stream)
                if isinstance(event, ErrorReceived):
                    raise SyncFailed(f"the peer refused: {event.message} ({event.code})")
                assert isinstance(event, BatchReceived)
                batch = event.batch
                positions = _positions(batch.ops, asking)
                if not batch.ops and not batch.done:
                    raise SyncFailed("the peer sent an empty batch that is not its last")
                future = self._checker.submit(batch.ops)
                try:
                    await send.send(
                        _Pulled(batch=batch, asked=asking, positions=positions, future=future)
                    )
                except BaseException:
                    future.cancel()
                    raise
                if batch.done:
                    return
                cursor.update(positions)

    async def _apply(
        self,
        peer_id: str,
        receive: trio.MemoryReceiveChannel[_Pulled],
        stopped: dict[str, int],
    ) -> int:
        """Apply the batches `_fetch` pulled, in order, as each is checked: up to
        GROUP_BATCHES in one transaction (`_feed`), each with its cursor advance. Return how
        many ops were applied."""
        applied = batches = idle = 0
        async with receive:
            try:
                while True:
                    try:
                        first = await receive.receive()
                    except trio.EndOfChannel:
                        return applied
                    feed: queue.SimpleQueue[_Checked | None] = queue.SimpleQueue()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._feed, first, receive, feed)
                        results = await self._db.write(_apply_fed, peer_id, self._local, feed)
                    for heads, result in results:
                        applied += result.applied
                        batches += 1
                        newly_stopped = _stop_refused(result.refused, heads, stopped)
                        idle = 0 if result.applied or newly_stopped else idle + 1
                        if idle > MAX_IDLE_BATCHES:
                            raise SyncFailed("the peer keeps sending batches of ops we refuse")
                        if batches % PROGRESS_EVERY == 0:
                            lag = sum(max(0, s - result.heads.get(d, 0)) for d, s in heads.items())
                            log.info("sync.progress", applied=applied, batches=batches, lag=lag)
            finally:
                # The sync ends early: the checks of the batches still waiting are not needed.
                while True:
                    try:
                        receive.receive_nowait().future.cancel()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break

    async def _feed(
        self,
        pulled: _Pulled,
        receive: trio.MemoryReceiveChannel[_Pulled],
        feed: queue.SimpleQueue[_Checked | None],
    ) -> None:
        """Hand the writer (`_apply_fed`) `pulled` and the batches that follow, each once
        checked, up to GROUP_BATCHES or until none comes within GROUP_WAIT_S; then None, which
        ends its transaction (on an error or a cancellation too: what it applied is whole)."""
        try:
            for count in range(GROUP_BATCHES):
                if count:
                    following = None
                    with trio.move_on_after(GROUP_WAIT_S):
                        try:
                            following = await receive.receive()
                        except trio.EndOfChannel:
                            return
                    if following is None:
                        return
                    pulled = following
                try:
                    checked = await self._checker.result(pulled.future)
                    _check_positions(checked, pulled)
                except BaseException:
                    pulled.future.cancel()
                    raise
                feed.put(_Checked(batch=pulled.batch, verdicts=checked.verdicts))
                if pulled.batch.done:
                    return
        finally:
            feed.put(None)

    # --- the server ------------------------------------------------------------------------

    async def serve_sync(self, stream: INetStream) -> None:
        """Answer a peer's pulls (the handler of SYNC_PROTOCOL_ID)."""
        peer_id = str(stream.muxed_conn.peer_id)
        server = SyncServer()
        sent = sent_bytes = 0
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol=SYNC_PROTOCOL_ID):
            try:
                while True:
                    event = await _next_event(server, stream)
                    if isinstance(event, ClientFinished):
                        break
                    if isinstance(event, ErrorReceived):
                        log.warning("sync.peer_stopped", error=event.code, message=event.message)
                        break
                    assert isinstance(event, PullReceived)
                    if not await self._db.read(sync_state.may_sync, peer_id):
                        log.warning("sync.unauthorized")
                        await stream.write(
                            server.send_error(
                                "unauthorized",
                                "this node syncs only with trusted devices of its identity",
                            )
                        )
                        break
                    pull = event.pull
                    page = await self._db.read(
                        sync_state.ops_after, dict(pull.cursor), pull.max_ops, pull.max_bytes
                    )
                    heads = await self._db.read(sync_state.heads)
                    frame = server.batch(page.ops, heads, page.done)
                    await stream.write(frame)
                    sent += len(page.ops)
                    sent_bytes += len(frame)
                if sent:
                    log.info("sync.served", ops=sent, bytes=sent_bytes)
            except RemoteProtocolError as err:
                log.warning("sync.bad_request", error=err.code, message=str(err))
                await write_quietly(stream, server.send_error(err.code, str(err)))
            except trio.TooSlowError:
                log.warning("sync.bad_request", error="timeout", after_s=READ_TIMEOUT_S)
            except StreamError as err:
                log.info("sync.stream_closed", message=str(err) or type(err).__name__)
            finally:
                await close_quietly(stream)

    # --- gossip ----------------------------------------------------------------------------

    async def _announcer(self) -> None:
        while True:
            await self._changed.wait()
            await trio.sleep(ANNOUNCE_COALESCE_S)
            self._changed = trio.Event()
            heads = await self._db.read(sync_state.heads)
            frame = encode_announce(heads)
            assert self._nursery is not None
            for peer_id in self.connected_devices():
                if await self._db.read(sync_state.may_sync, peer_id):
                    self._nursery.start_soon(self._announce_to, peer_id, frame)

    async def _announce_to(self, peer_id: str, frame: bytes) -> None:
        with trio.move_on_after(ANNOUNCE_TIMEOUT_S):
            try:
                stream = await self._host.new_stream(
                    ID.from_base58(peer_id), [TProtocol(GOSSIP_PROTOCOL_ID)]
                )
                try:
                    await stream.write(frame)
                finally:
                    await close_quietly(stream)
            except (StreamError, BaseLibp2pError, OSError) as err:
                # A hint only: anti-entropy catches what a lost announcement misses.
                log.debug("gossip.announce_failed", peer_id=peer_id, error=str(err))

    async def serve_gossip(self, stream: INetStream) -> None:
        """Take one announcement (the handler of GOSSIP_PROTOCOL_ID): pull if we are behind."""
        peer_id = str(stream.muxed_conn.peer_id)
        reader = AnnounceReader()
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                while True:
                    event = reader.next_event()
                    if not isinstance(event, NeedData):
                        break
                    reader.receive_data(await read_some(stream, GOSSIP_MAX_FRAME))
        except (RemoteProtocolError, StreamError, trio.TooSlowError) as err:
            log.info("gossip.bad_announce", peer_id=peer_id, error=str(err) or type(err).__name__)
            return
        finally:
            await close_quietly(stream)
        if not await self._db.read(sync_state.may_sync, peer_id):
            return
        theirs = dict(event.heads)
        await self._db.write(sync_state.record_peer_heads, peer_id, theirs)
        if behind(await self._db.read(sync_state.heads), theirs):
            self.request(peer_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Pulled:
    """A batch `_fetch` pulled: the cursor it was asked with, per device the highest seq among
    its ops, and its check."""

    batch: Batch
    asked: dict[str, int]
    positions: dict[str, int]
    future: Future[op_checks.CheckedBatch]


def _positions(ops: Sequence[bytes], asked: Mapping[str, int]) -> dict[str, int]:
    """Per device, the highest seq among `ops` (where our cursor is once they are applied), read
    from their bytes before they are checked, for the next pull to go out meanwhile.

    A server sends a device's ops together and in seq order, so only the ops where the device
    changes are read (`_stretches`, ~12 reads for a 2,000-op batch of one device instead of
    2,000: 14% of the trio thread in scripts/bench_sync.py). Bytes that do not say what they
    are cannot mislead us: `_feed` compares these with the checking process's count of every op
    (`_check_positions`). `MalformedInput` for an op whose position cannot be read; `SyncFailed`
    for a device none of whose ops is past the cursor we asked with (a peer that ignores it would
    otherwise keep us pulling the same ops)."""
    positions: dict[str, int] = {}
    for device, seq in _stretches(ops):
        if seq > MAX_SEQ:
            raise MalformedInput(f"op of {device:.60} at seq {seq}, past the largest seq")
        if seq <= asked.get(device, 0):
            raise SyncFailed(f"the peer sent op {device} #{seq}, which we said we hold")
        if device not in asked and device not in positions:
            ed25519_public_key_from_peer_id(device)  # a device, or we cannot pull on it
        positions[device] = max(seq, positions.get(device, 0))
    return positions


def _stretches(ops: Sequence[bytes]) -> list[tuple[str, int]]:
    """(device, seq of its last op) for each stretch of consecutive ops of one device, found by
    bisecting between ops of different devices."""
    found: list[tuple[str, int]] = []
    if not ops:
        return found
    # Stretches [lo, hi] whose first and last devices are read: equal means one stretch.
    todo = [(0, op_position(ops[0]), len(ops) - 1, op_position(ops[-1]))]
    while todo:
        lo, first, hi, last = todo.pop()
        if first[0] == last[0]:
            found.append(last)
        elif hi == lo + 1:
            found.extend((first, last))
        else:
            mid = (lo + hi) // 2
            middle = op_position(ops[mid])
            # Pushed right half first: the left is taken next, so stretches come out in order.
            todo.append((mid, middle, hi, last))
            todo.append((lo, first, mid, middle))
    # Overlapping halves report the stretch across `mid` twice (and a device that comes back
    # later once per stretch): the caller keeps the highest seq of each device.
    return found


def _check_positions(checked: op_checks.CheckedBatch, pulled: _Pulled) -> None:
    """`SyncFailed` unless the checking process, which read every op, found the positions
    `_positions` read from a few: the same highest seq of each device, and no op at or below
    the cursor we asked with."""
    if checked.last_seqs != pulled.positions:
        raise SyncFailed("the ops of a batch are not where their bytes say")
    for device, seq in checked.first_seqs.items():
        if seq <= pulled.asked.get(device, 0):
            raise SyncFailed(f"the peer sent op {device} #{seq}, which we said we hold")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Checked:
    """A batch and the verdicts of the checking process on its ops, for the writer."""

    batch: Batch
    verdicts: list[op_checks.Verdict]


def _apply_fed(
    db: SqliteDatabase,
    peer_id: str,
    local_device: str,
    feed: queue.SimpleQueue[_Checked | None],
) -> list[tuple[Mapping[str, int], sync_state.BatchResult]]:
    """On the writer thread: apply the checked batches `_feed` hands over until it hands over
    None, in the one transaction Database.write runs this in (each batch's ops together with the
    cursor advance they make, as a batch applied alone); per batch, the peer's heads and what
    was applied. A batch is let go once applied, so the transaction can hold more batches than
    memory holds at once."""
    results: list[tuple[Mapping[str, int], sync_state.BatchResult]] = []
    while True:
        try:
            checked = feed.get(timeout=READ_TIMEOUT_S)
        except queue.Empty:
            raise SyncFailed("no batch came to apply (the sync task is gone)") from None
        if checked is None:
            return results
        heads = checked.batch.heads
        result = sync_state.apply_checked_batch(
            db,
            wires=checked.batch.ops,
            verdicts=checked.verdicts,
            peer_id=peer_id,
            peer_heads=dict(heads),
            now_ms=now_ms(),
            local_device=local_device,
        )
        results.append((heads, result))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a nursery of ours wrapped: callers handle the error, not the group."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, trio.Cancelled):
            return error
    return group.exceptions[0]


def _stop_refused(refused: tuple[Any, ...], heads: Any, stopped: dict[str, int]) -> bool:
    """Log each device's first refused op and stop asking for that device: later pulls skip
    its ops up to the highest refused and the peer's head of it. True if a device is new."""
    new = False
    for refusal in refused:
        device = refusal.device
        if device not in stopped:
            log.warning(
                "sync.op_refused",
                op_id=refusal.op_id,
                device=device,
                seq=refusal.seq,
                error=refusal.error.code,
                message=str(refusal.error),
            )
            new = True
        stopped[device] = max(stopped.get(device, 0), int(heads.get(device, 0)), refusal.seq)
    return new


async def _next_event(session: SyncClient | SyncServer, stream: INetStream) -> Any:
    """The session's next event, reading the stream as needed."""
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            event = session.next_event()
            if not isinstance(event, NeedData):
                return event
            session.receive_data(await read_some(stream, MAX_FRAME))
