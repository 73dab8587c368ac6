"""The mailbox on a person's own node: registering at relays, the outbox, taking mail in.

- **Registering** (`register`, `mailbox register`): a registration signed by this device, sent
  to the relay on /vivim/mailbox/1.0.0, then the DID's relay list (an op of the vault,
  store.mailbox) gains the relay, so every device of the DID knows where mail for it waits.
- **Sending** (`_mailer`, `_deliverer`): after local writes (coalesced), if the DID has relays
  and one of its other trusted devices is not connected, this device's new ops are sealed to
  the DID's X25519 key (a fresh ephemeral key per envelope, from the OS) in letters of type
  `sync.ops` and queued in the outbox for every relay; the cursor of what was mailed advances
  in the same transaction. The deliverer deposits what is due and retries the rest with
  exponential backoff (RETRY_MIN_S to RETRY_MAX_S) until the relay says stored, or duplicate
  (it held it already), or the envelope expires.
- **Receiving** (`_drain`): on start, whenever a connection to one of our relays opens, and on a
  relay's push notice: list, fetch, open, apply, then ack. An envelope is applied and recorded
  as received in one transaction before it is acked, and one received before is only acked:
  at-least-once delivery, exactly-once effect, across relays and crashes.

Mail for the DID is one mailbox shared by its devices: whichever device takes a letter applies
its ops, and sync carries them to the others. A device never takes back what it deposited.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nacl.public
import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from peewee import SqliteDatabase
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.database import Database
from node.errors import NodeError
from node.identity import LocalIdentity
from node.mailbox_link import (
    MailboxRefused,
    RelayLink,
    RelayUnreachable,
    fitting_deposit,
    open_link,
)
from node.op_checker import CheckerDied, OpChecker
from node.streams import close_quietly, read_some
from protocols.envelope import (
    DEFAULT_TTL_MS,
    Envelope,
    Letter,
    seal,
)
from protocols.errors import (
    LocalProtocolError,
    RemoteProtocolError,
)
from protocols.mailbox_notice import MAX_NOTICE_FRAME, NeedData, NoticeReader
from protocols.mailbox_records import RelayList, RelayRegistration
from protocols.trust import DeviceStatus
from store import mailbox as mailbox_store
from store.devices import Credentials, credentials_of, trust_state

log = structlog.get_logger()

MAIL_COALESCE_S = 0.2  # local writes within this are mailed together
RETRY_MIN_S = 1.0
RETRY_MAX_S = 300.0
OUTBOX_BATCH = 200  # outbox rows taken per round
LIST_LIMIT = 1000  # ids per List (the protocol's most)
# Fetched chunks (~1 MiB each at most) between fetched and applied, per drain.
PIPELINE_CHUNKS = 3
NOTICE_TIMEOUT_S = 5.0
DEFAULT_QUOTA_BYTES = 256 * 1024 * 1024
DEFAULT_REGISTRATION_DAYS = 365
DAY_MS = 24 * 3600 * 1000
# How often registrations are checked for renewal and for revocations to tell relays about.
REGISTRATION_CHECK_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class MailboxFailed(NodeError):
    """A mailbox command could not be done; the message says why and what to do."""


def retry_delay_s(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: about RETRY_MIN_S, doubling, at most RETRY_MAX_S."""
    base = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(attempts, 20))
    return float(base * (0.5 + rand() / 2))


class MailboxService:
    """The sender and recipient sides of the mailbox for this device (module docstring)."""

    def __init__(
        self,
        host: IHost,
        database: Database,
        identity: LocalIdentity,
        encryption_key: bytes,
        *,
        is_connected: Callable[[str], bool],
        on_written: Callable[[], None],
    ) -> None:
        """`on_written` is told of what this service writes to the vault (the relay list), so
        that sync announces it and this service mails it, like any local write."""
        self._host = host
        self._on_written = on_written
        self._db = database
        self._signer = identity.signer()
        self._did = identity.did
        self._local = identity.peer_id
        self._private_key = encryption_key
        self._public_key = bytes(nacl.public.PrivateKey(encryption_key).public_key)
        self._is_connected = is_connected
        self._changed = trio.Event()
        self._outbox_wake = trio.Event()
        self._trust_changed = trio.Event()
        self._draining: set[str] = set()
        self._drain_again: set[str] = set()
        self._nursery: trio.Nursery | None = None
        # Its own checking process, started on the first mail (node/op_checker.py).
        self._checker = OpChecker()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            self._checker.close()

    async def _run(self, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._mailer)
            nursery.start_soon(self._deliverer)
            nursery.start_soon(self._keep_registrations)
            task_status.started()
            self._changed.set()  # mail what a crash may have left unmailed
            relays = await self._db.read(mailbox_store.relay_list)
            for relay in relays.relay_peer_ids if relays else ():
                self.request_drain(relay)

    # --- triggers ------------------------------------------------------------------------------

    def local_changed(self) -> None:
        """This device wrote something: mail it if a device of ours is away (and, if it was a
        revocation, tell our relays)."""
        self._changed.set()
        self._trust_changed.set()

    def peer_connected(self, peer_id: str) -> None:
        """A connection opened: if the peer is one of our relays, take our mail and deliver
        what waits for it (the caller does not wait on the database)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._on_connect, peer_id)

    async def _on_connect(self, peer_id: str) -> None:
        relays = await self._db.read(mailbox_store.relay_list)
        if relays is not None and peer_id in relays.relay_peer_ids:
            self.request_drain(peer_id)
            self._outbox_wake.set()

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

    # --- registering ---------------------------------------------------------------------------

    async def register(
        self,
        relay_addr: str,
        *,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        days: int = DEFAULT_REGISTRATION_DAYS,
        allowed_senders: Sequence[str] = (),
    ) -> dict[str, Any]:
        relay, addrs = _parse_relay_addr(relay_addr)
        if relay == self._local:
            raise MailboxFailed("that address is this node's own: name another node as relay")
        state = await self._db.read(trust_state)
        now = now_ms()
        registration = RelayRegistration.create(
            signing_key=self._signer.signing_key,
            recipient_did=self._did,
            relay=relay,
            allowed_senders=tuple(allowed_senders),
            revoked_devices=tuple(
                p for p, d in state.devices.items() if d.status is DeviceStatus.REVOKED
            ),
            quota_bytes=quota_bytes,
            expires_at_ms=now + days * DAY_MS,
            issued_at_ms=now,
        )
        async with self._link(relay, addrs) as link:
            await link.register(registration)
        await self._db.write(mailbox_store.save_registration, registration, now_ms())
        current = await self._db.read(mailbox_store.relay_list)
        kept = tuple(entry for entry in (current.relays if current else ()) if entry[0] != relay)
        if not kept:
            # The first relay: mail what is written from now on, not the whole history.
            await self._db.write(_skip_mailing, self._local)
        await self._publish(current, (*kept, (relay, tuple(addrs))))
        log.info("mailbox.registered", relay=relay, quota_bytes=quota_bytes, days=days)
        self.request_drain(relay)
        return {
            "relay": relay,
            "addrs": addrs,
            "quota_bytes": quota_bytes,
            "expires_at_ms": registration.expires_at_ms,
            "relays": len(kept) + 1,
        }

    async def unregister(self, relay_ref: str) -> dict[str, Any]:
        """Withdraw from a relay (a peer id, or its multiaddr): the relay drops our mail, and
        the relay leaves the relay list even if it cannot be reached now."""
        current = await self._db.read(mailbox_store.relay_list)
        relay = relay_ref.rstrip("/").rsplit("/p2p/", 1)[-1]
        listed = dict(current.relays) if current else {}
        if relay not in listed:
            raise MailboxFailed(
                f"{relay} is not one of this identity's relays: see `vivim-node mailbox status`"
            )
        confirmed: str | None = None
        try:
            async with self._link(relay, listed[relay]) as link:
                await link.unregister(self._did)
            confirmed = "the relay dropped our registration and mail"
        except (RelayUnreachable, MailboxRefused) as err:
            confirmed = f"the relay did not confirm ({err}); it keeps our mail until it expires"
        assert current is not None
        await self._db.write(mailbox_store.forget_registration, relay)
        await self._publish(current, tuple(e for e in current.relays if e[0] != relay))
        log.info("mailbox.unregistered", relay=relay, result=confirmed)
        return {"relay": relay, "result": confirmed, "relays": len(current.relays) - 1}

    async def _publish(
        self, current: RelayList | None, relays: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> None:
        updated = RelayList.create(
            signing_key=self._signer.signing_key,
            recipient_did=self._did,
            relays=relays,
            version=(current.version + 1) if current else 1,
            issued_at_ms=now_ms(),
        )
        await self._db.write(_publish_relay_list, self._signer, updated, now_ms())
        self._on_written()

    async def _keep_registrations(self) -> None:
        """Register again, with the same terms, where this device registered before, when the
        registration is past half its life (renewal) or when a device of ours was revoked
        since (the relay checks devices by their certificates and must be told)."""
        while True:
            with trio.move_on_after(REGISTRATION_CHECK_S):
                await self._trust_changed.wait()
            self._trust_changed = trio.Event()
            state = await self._db.read(trust_state)
            revoked = {p for p, d in state.devices.items() if d.status is DeviceStatus.REVOKED}
            relays = await self._db.read(mailbox_store.relay_list)
            listed = dict(relays.relays) if relays else {}
            for relay, old in (await self._db.read(mailbox_store.saved_registrations)).items():
                lifetime = old.expires_at_ms - old.issued_at_ms
                stale = now_ms() > old.issued_at_ms + lifetime // 2
                if relay not in listed or (revoked <= set(old.revoked_devices) and not stale):
                    continue
                try:
                    await self.register(
                        f"{listed[relay][0]}/p2p/{relay}",
                        quota_bytes=old.quota_bytes,
                        days=max(1, lifetime // DAY_MS),
                        allowed_senders=old.allowed_senders,
                    )
                except (RelayUnreachable, MailboxRefused, MailboxFailed) as err:
                    log.warning("mailbox.reregister_failed", relay=relay, error=str(err))

    # --- sending -------------------------------------------------------------------------------

    async def _mailer(self) -> None:
        while True:
            await self._changed.wait()
            await trio.sleep(MAIL_COALESCE_S)
            self._changed = trio.Event()
            await self._mail_own_ops()

    async def _mail_own_ops(self) -> None:
        relays = await self._db.read(mailbox_store.relay_list)
        if relays is None or not relays.relays:
            await self._db.write(_skip_mailing, self._local)
            return
        state = await self._db.read(trust_state)
        away = [
            peer
            for peer, device in state.devices.items()
            if device.status is DeviceStatus.TRUSTED
            and peer != self._local
            and not self._is_connected(peer)
        ]
        if not away:
            await self._db.write(_skip_mailing, self._local)
            return
        mailed = letters = 0
        while True:
            batch = await self._db.read(
                mailbox_store.take_ops_to_mail, self._local, mailbox_store.LETTER_OPS_BYTES
            )
            if batch is None:
                break
            envelope = self._seal(
                mailbox_store.SYNC_OPS, mailbox_store.encode_sync_ops(batch.wires)
            )
            outgoing = [
                mailbox_store.Outgoing(
                    envelope_id=envelope.id,
                    relay=relay,
                    recipient_did=self._did,
                    payload_type=mailbox_store.SYNC_OPS,
                    envelope=envelope.to_wire(),
                    expires_at_ms=envelope.expires_at_ms,
                )
                for relay in relays.relay_peer_ids
            ]
            await self._db.write(_enqueue, outgoing, now_ms(), (self._local, batch.last_seq))
            mailed += len(batch.wires)
            letters += 1
        if mailed:
            log.info("mailbox.mailed", ops=mailed, letters=letters, away=len(away))
            self._outbox_wake.set()

    def _seal(self, payload_type: str, payload: bytes) -> Envelope:
        now = now_ms()
        letter = Letter.create(
            signing_key=self._signer.signing_key,
            recipient_did=self._did,
            sender_did=self._did,
            payload_type=payload_type,
            payload=payload,
            created_at_ms=now,
        )
        return seal(
            letter,
            recipient_did=self._did,
            recipient_x25519_public_key=self._public_key,
            expires_at_ms=now + DEFAULT_TTL_MS,
            ephemeral_private_key=os.urandom(32),  # fresh for every envelope (protocols.envelope)
        )

    async def _deliverer(self) -> None:
        while True:
            due = await self._db.write(mailbox_store.due_outbox, now_ms(), OUTBOX_BATCH)
            by_relay: dict[str, list[mailbox_store.OutboxItem]] = defaultdict(list)
            for item in due:
                by_relay[item.relay].append(item)
            if by_relay:
                relays = await self._db.read(mailbox_store.relay_list)
                addrs = dict(relays.relays) if relays else {}
                async with trio.open_nursery() as nursery:
                    for relay, items in by_relay.items():
                        nursery.start_soon(self._deliver, relay, addrs.get(relay, ()), items)
                if len(due) == OUTBOX_BATCH:
                    continue
            next_due = await self._db.read(mailbox_store.next_outbox_due)
            wait_s = 60.0 if next_due is None else max(0.0, (next_due - now_ms()) / 1000)
            with trio.move_on_after(min(wait_s, 60.0)):
                await self._outbox_wake.wait()
            self._outbox_wake = trio.Event()

    async def _deliver(
        self, relay: str, addrs: Sequence[str], items: list[mailbox_store.OutboxItem]
    ) -> None:
        delivered: list[int] = []
        pending = list(items)
        try:
            async with self._link(relay, addrs) as link:
                while pending:
                    rows = {item.envelope_id: item for item in pending}
                    envelopes = fitting_deposit([Envelope.from_wire(i.envelope) for i in pending])
                    outcomes = await link.deposit(envelopes)
                    for envelope in envelopes:
                        item = rows[envelope.id]
                        refused = outcomes.get(envelope.id)
                        # Stored, or held already (duplicate): either way the relay has it.
                        if refused is None or refused[0] == "duplicate":
                            delivered.append(item.row_id)
                        else:
                            await self._retry_later(item, f"{refused[1]} ({refused[0]})")
                    pending = pending[len(envelopes) :]
        except (RelayUnreachable, MailboxRefused) as err:
            log.warning("mailbox.deposit_failed", relay=relay, error=str(err), waiting=len(pending))
            for item in pending:
                await self._retry_later(item, str(err))
        finally:
            with trio.CancelScope(shield=True):
                await self._db.write(mailbox_store.outbox_delivered, delivered)
        if delivered:
            log.info("mailbox.deposited", relay=relay, envelopes=len(delivered))

    async def _retry_later(self, item: mailbox_store.OutboxItem, error: str) -> None:
        next_attempt = now_ms() + int(retry_delay_s(item.attempts) * 1000)
        await self._db.write(mailbox_store.outbox_retry, item.row_id, error, next_attempt)

    # --- receiving -----------------------------------------------------------------------------

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
            async with self._link(relay, addrs) as link:
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
            opening = self._checker.submit_call(
                mailbox_store.open_letters, fetched, relay, self._did, self._private_key, now_ms()
            )
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

    # --- links ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _link(self, relay: str, addrs: Sequence[str]) -> AsyncIterator[RelayLink]:
        """A link to `relay`, this device introduced on it."""
        credentials = await self._db.read(_credentials, self._local)
        async with open_link(self._host, relay, addrs) as link:
            if await link.introduce(credentials) != self._did:
                raise RelayUnreachable(f"relay {relay} took us for another identity")
            yield link


@dataclass
class _Chunk:
    """Envelopes fetched and being opened by the checking process (`opening`), and the ids to
    ack once they are applied (those, and any the relay no longer held)."""

    ack: tuple[str, ...]
    opening: Future[list[mailbox_store.OpenedLetter]] | None


@dataclass
class _Count:
    value: int = 0


def _parse_relay_addr(relay_addr: str) -> tuple[str, list[str]]:
    try:
        info = info_from_p2p_addr(Multiaddr(relay_addr))
    except Exception as err:  # multiaddr raises several unrelated types
        raise MailboxFailed(
            f"{relay_addr!r} is not a relay address: give its full multiaddr, like "
            "/ip4/127.0.0.1/tcp/7717/p2p/12D3KooW... (the relay's `vivim-node id` prints it)"
        ) from err
    return str(info.peer_id), [str(a) for a in info.addrs]


# Blocking functions of the database, run by node.database.Database.


def _credentials(db: SqliteDatabase, local: str) -> Credentials:
    return credentials_of(trust_state(db), local)


def _skip_mailing(db: SqliteDatabase, local: str) -> None:
    mailbox_store.skip_mailing(db, local)


def _publish_relay_list(db: SqliteDatabase, signer: Any, relays: RelayList, now: int) -> None:
    mailbox_store.publish_relay_list(db, signer, relays, now)


def _enqueue(
    db: SqliteDatabase,
    outgoing: list[mailbox_store.Outgoing],
    now: int,
    mailed: tuple[str, int],
) -> None:
    mailbox_store.enqueue(db, outgoing, now, mailed=mailed)


def _apply_letters(
    db: SqliteDatabase, letters: list[mailbox_store.OpenedLetter], now: int, local: str
) -> mailbox_store.LettersApplied:
    return mailbox_store.apply_letters(db, letters, now, local_device=local)


# --- the control API -----------------------------------------------------------------------------

MAX_REGISTRATION_DAYS = 3650


def mailbox_routes(service: MailboxService) -> list[Route]:
    """POST /v1/mailbox/register and /v1/mailbox/unregister (they need the running node: they
    talk to the relay). A relay's refusal is a 400 with its code; an unreachable relay a 502."""

    async def register(request: Request) -> Response:
        body = await _body(request)
        relay = body.get("relay")
        quota = body.get("quota_bytes", DEFAULT_QUOTA_BYTES)
        days = body.get("days", DEFAULT_REGISTRATION_DAYS)
        allow = body.get("allow", [])
        if not isinstance(relay, str):
            return _error(400, "bad_request", "relay must be the relay's multiaddr")
        if type(quota) is not int or quota < 1:
            return _error(400, "bad_request", "quota_bytes must be a positive integer")
        if type(days) is not int or not 1 <= days <= MAX_REGISTRATION_DAYS:
            return _error(400, "bad_request", f"days must be 1 to {MAX_REGISTRATION_DAYS}")
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            return _error(400, "bad_request", "allow must be a list of DIDs")
        return await _call(
            service.register(relay, quota_bytes=quota, days=days, allowed_senders=allow)
        )

    async def unregister(request: Request) -> Response:
        relay = (await _body(request)).get("relay")
        if not isinstance(relay, str):
            return _error(400, "bad_request", "relay must be the relay's peer id or multiaddr")
        return await _call(service.unregister(relay))

    return [
        Route("/v1/mailbox/register", register, methods=["POST"]),
        Route("/v1/mailbox/unregister", unregister, methods=["POST"]),
    ]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _call(work: Awaitable[dict[str, Any]]) -> Response:
    try:
        return JSONResponse(await work)
    except MailboxRefused as err:
        return _error(400, err.code, f"the relay refused: {err}")
    except RelayUnreachable as err:
        return _error(502, "relay_unreachable", f"{err}; check the address and that it runs")
    except (MailboxFailed, LocalProtocolError) as err:
        return _error(400, "bad_request", str(err))


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
