"""Taking mail in from relays: on start, whenever a connection to one of our relays opens, and on
a relay's push notice.

A drain lists, fetches, opens, applies, then acks. An envelope is applied and recorded as
received in one transaction before it is acked, and one received before is only acked:
at-least-once delivery, exactly-once effect, across relays and crashes. Opening (the seal, the
letter's and the ops' signatures) runs in a checking process of the inbox's own, started on the
first mail, while the writer applies what was opened before (`_drain_pages`).

**Letters of other types** (friend requests, shares): a service registers a handler for a
payload type (`register_handler("peering.request", handler)`). A letter of that type, opened
(the seal, and the letter's signature by its sender *device*), is handed to the handler as the
`OpenedLetter` (payload, sender DID and device, envelope id, relay) before the letter is recorded
as received; the handler returns the outcome to record ("applied", or why it was dropped). The
letter's signature proves the device key only: the handler checks that the device speaks for the
sender DID (the credentials its payload carries). A crash between the handler and the record
hands the letter again on the next drain: handlers must be idempotent. A letter whose type has no
handler is recorded as "unknown payload type" and acked, as before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import structlog
import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from peewee import SqliteDatabase

from node.database import Database
from node.mailbox_link import MailboxRefused, RelayLink, RelayUnreachable
from node.mailbox_outbox import OpenRelay
from node.op_checker import CheckerDied, OpChecker
from node.streams import close_quietly, read_some
from protocols.errors import RemoteProtocolError
from protocols.mailbox_notice import MAX_NOTICE_FRAME, NeedData, NoticeReader
from store import mailbox as mailbox_store

log = structlog.get_logger()

LIST_LIMIT = 1000  # ids per List (the protocol's most)
# Fetched chunks (~1 MiB each at most) between fetched and applied, per drain.
PIPELINE_CHUNKS = 3
NOTICE_TIMEOUT_S = 5.0

# A handler of letters of one payload type (module docstring): the outcome to record.
LetterHandler = Callable[[mailbox_store.OpenedLetter], Awaitable[str]]


def now_ms() -> int:
    return int(time.time() * 1000)


class Inbox:
    """The receiving side of this device's mailbox (module docstring)."""

    def __init__(
        self,
        database: Database,
        did: str,
        local_device: str,
        private_key: bytes,
        *,
        open_relay: OpenRelay,
    ) -> None:
        """`private_key` is the DID's X25519 key, which mail to the DID is sealed to."""
        self._db = database
        self._did = did
        self._local = local_device
        self._private_key = private_key
        self._open_relay = open_relay
        self._draining: set[str] = set()
        self._drain_again: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._checker = OpChecker()
        self._handlers: dict[str, LetterHandler] = {}

    def register_handler(self, payload_type: str, handler: LetterHandler) -> None:
        """Hand letters of `payload_type` (not "sync.ops") to `handler` (module docstring)."""
        if payload_type == mailbox_store.SYNC_OPS or payload_type in self._handlers:
            raise ValueError(f"letters of type {payload_type} have a handler already")
        self._handlers[payload_type] = handler

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run drains until cancelled; drains of all our relays start at once."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                relays = await self._db.read(mailbox_store.relay_list)
                for relay in relays.relay_peer_ids if relays else ():
                    self.request_drain(relay)
                await trio.sleep_forever()
        finally:
            self._checker.close()

    def request_drain(self, relay: str) -> None:
        if self._nursery is None:
            return
        if relay in self._draining:
            self._drain_again.add(relay)
            return
        self._draining.add(relay)
        self._nursery.start_soon(self._drain_loop, relay)

    async def serve_notice(self, stream: INetStream) -> None:
        """The handler of MAILBOX_NOTICE_PROTOCOL_ID: a relay says mail arrived."""
        peer_id = str(stream.muxed_conn.peer_id)
        reader = NoticeReader()
        try:
            with trio.fail_after(NOTICE_TIMEOUT_S):
                while True:
                    event = reader.next_event()
                    if not isinstance(event, NeedData):
                        break
                    reader.receive_data(await read_some(stream, MAX_NOTICE_FRAME))
        except (RemoteProtocolError, StreamError, BaseLibp2pError, trio.TooSlowError) as err:
            # A hint only: a bad one is dropped, the next (re)connection fetches anyway.
            log.info("mailbox.bad_notice", peer_id=peer_id, error=str(err) or type(err).__name__)
            return
        finally:
            await close_quietly(stream)
        relays = await self._db.read(mailbox_store.relay_list)
        if event.recipient_did == self._did and relays and peer_id in relays.relay_peer_ids:
            log.info("mailbox.notice", relay=peer_id, held=event.count)
            self.request_drain(peer_id)

    async def _drain_loop(self, relay: str) -> None:
        try:
            while True:
                self._drain_again.discard(relay)
                await self._drain_once(relay)
                if relay not in self._drain_again:
                    return
        finally:
            self._draining.discard(relay)

    async def _drain_once(self, relay: str) -> None:
        relays = await self._db.read(mailbox_store.relay_list)
        addrs = dict(relays.relays).get(relay, ()) if relays else ()
        started = time.monotonic()
        taken = 0
        try:
            async with self._open_relay(relay, addrs) as link:
                taken = await self._drain_pages(link, relay)
        except (RelayUnreachable, MailboxRefused) as err:
            log.warning("mailbox.fetch_failed", relay=relay, error=str(err))
            return
        if taken:
            log.info(
                "mailbox.received",
                relay=relay,
                envelopes=taken,
                ms=round((time.monotonic() - started) * 1000),
            )

    async def _drain_pages(self, link: RelayLink, relay: str) -> int:
        """Take everything the relay holds for us, three stages at once so that the network,
        the checking process and the writer all work: this task lists and fetches, handing
        each fetched chunk (at most one Fetched, ~1 MiB) to the checking process to open and
        check; `_apply_chunks` applies the checked chunks in order, each in one transaction,
        and acks it once committed. At most PIPELINE_CHUNKS chunks wait between the two, which
        bounds the memory a drain holds whatever the relay holds."""
        send, receive = trio.open_memory_channel[_Chunk](PIPELINE_CHUNKS)
        link_lock = trio.Lock()  # one request at a time on the link: the protocol's turns
        taken = _Count()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_chunks, link, link_lock, relay, receive, taken)
            async with send:
                after: str | None = None
                while True:
                    async with link_lock:
                        listed = await link.list_ids(self._did, after, LIST_LIMIT)
                    if not listed.ids:
                        break
                    await self._fetch_chunks(link, link_lock, relay, listed.ids, send)
                    after = listed.next_cursor
                    if after is None:
                        break
        return taken.value

    async def _fetch_chunks(
        self,
        link: RelayLink,
        link_lock: trio.Lock,
        relay: str,
        ids: Sequence[str],
        send: trio.MemorySendChannel[_Chunk],
    ) -> None:
        """Fetch the envelopes among `ids` not received before, chunk by chunk, each handed
        to the checking process at once (its work overlaps the next fetch)."""
        seen = await self._db.read(mailbox_store.received_ids, list(ids))
        if seen:
            await send.send(_Chunk(ack=tuple(seen), opening=None))  # only to ack
        remaining = [i for i in ids if i not in seen]
        while remaining:
            async with link_lock:
                fetched = await link.fetch(remaining)
            if not fetched:
                await send.send(_Chunk(ack=tuple(remaining), opening=None))  # gone: ack anyway
                return
            position = {envelope_id: n for n, envelope_id in enumerate(remaining)}
            asked, remaining = (
                remaining[: position[fetched[-1].id] + 1],
                remaining[position[fetched[-1].id] + 1 :],
            )
            try:
                opening = self._checker.submit_call(
                    mailbox_store.open_letters,
                    fetched,
                    relay,
                    self._did,
                    self._private_key,
                    now_ms(),
                )
            except CheckerDied as err:
                raise RelayUnreachable(f"could not open the mail: {err}") from err
            await send.send(_Chunk(ack=tuple(asked), opening=opening))

    async def _apply_chunks(
        self,
        link: RelayLink,
        link_lock: trio.Lock,
        relay: str,
        receive: trio.MemoryReceiveChannel[_Chunk],
        taken: _Count,
    ) -> None:
        async with receive:
            async for chunk in receive:
                if chunk.opening is not None:
                    try:
                        letters = await self._checker.result(chunk.opening)
                    except CheckerDied as err:
                        raise RelayUnreachable(f"could not open the mail: {err}") from err
                    await self._apply_letters(relay, letters)
                    taken.value += len(letters)
                async with link_lock:
                    await link.ack(chunk.ack)

    async def _apply_letters(self, relay: str, letters: list[mailbox_store.OpenedLetter]) -> None:
        letters = [await self._hand_over(letter) for letter in letters]
        result = await self._db.write(_apply_letters, letters, now_ms(), self._local)
        for refusal in result.refused[:10]:  # the first few: the log says enough
            log.warning(
                "mailbox.op_refused",
                relay=relay,
                op_id=refusal.op_id,
                device=refusal.device,
                seq=refusal.seq,
                error=refusal.error.code,
                message=str(refusal.error),
            )
        dropped = [letter for letter in letters if letter.outcome != "applied"]
        for letter in dropped[:10]:
            log.warning(
                "mailbox.letter_dropped",
                relay=relay,
                envelope_id=letter.envelope_id,
                sender=letter.sender_did,
                outcome=letter.outcome,
            )

    async def _hand_over(self, letter: mailbox_store.OpenedLetter) -> mailbox_store.OpenedLetter:
        """`letter` with the outcome its type's handler gave, if it has one."""
        handler = self._handlers.get(letter.payload_type)
        if handler is None or letter.outcome != "unknown payload type":
            return letter
        return replace(letter, outcome=await handler(letter), payload=b"")


@dataclass
class _Chunk:
    """Envelopes fetched and being opened by the checking process (`opening`), and the ids to
    ack once they are applied (those, and any the relay no longer held)."""

    ack: tuple[str, ...]
    opening: Future[list[mailbox_store.OpenedLetter]] | None


@dataclass
class _Count:
    value: int = 0


def _apply_letters(
    db: SqliteDatabase, letters: list[mailbox_store.OpenedLetter], now: int, local: str
) -> mailbox_store.LettersApplied:
    return mailbox_store.apply_letters(db, letters, now, local_device=local)
