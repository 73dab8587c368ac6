"""Sending through relays: this device's ops, while another device of the DID is away.

After local writes (coalesced), if the DID has relays and one of its other trusted devices is
not connected, this device's new ops are sealed to the DID's X25519 key (a fresh ephemeral key
per envelope, from the OS) in letters of type `sync.ops` and queued in the outbox for every
relay; the cursor of what was mailed advances in the same transaction (store.mailbox). The
deliverer deposits what is due, several envelopes per Deposit, and retries the rest with
exponential backoff (RETRY_MIN_S to RETRY_MAX_S) until the relay says stored, or duplicate (it
held it already), or the envelope expires.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import structlog
import trio
from peewee import SqliteDatabase

from node.database import Database
from node.mailbox_link import MailboxRefused, RelayLink, RelayUnreachable, fitting_deposit
from protocols.envelope import DEFAULT_TTL_MS, Envelope, Letter, seal
from protocols.trust import DeviceStatus
from store import mailbox as mailbox_store
from store.devices import trust_state
from store.vault_log import LocalSigner

log = structlog.get_logger()

MAIL_COALESCE_S = 0.2  # local writes within this are mailed together
RETRY_MIN_S = 1.0
RETRY_MAX_S = 300.0
OUTBOX_BATCH = 200  # outbox rows taken per round

# A link to a relay, this device introduced on it: (relay peer id, its addresses).
OpenRelay = Callable[[str, Sequence[str]], AbstractAsyncContextManager[RelayLink]]


def now_ms() -> int:
    return int(time.time() * 1000)


def retry_delay_s(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: about RETRY_MIN_S, doubling, at most RETRY_MAX_S."""
    base = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(attempts, 20))
    return float(base * (0.5 + rand() / 2))


class Outbox:
    """The sending side of this device's mailbox (module docstring)."""

    def __init__(
        self,
        database: Database,
        signer: LocalSigner,
        public_key: bytes,
        *,
        is_connected: Callable[[str], bool],
        open_relay: OpenRelay,
    ) -> None:
        """`public_key` is the DID's X25519 key, which letters to the DID are sealed to."""
        self._db = database
        self._signer = signer
        self._did = signer.author
        self._local = signer.device
        self._public_key = public_key
        self._is_connected = is_connected
        self._open_relay = open_relay
        self._changed = trio.Event()
        self._wake = trio.Event()

    async def run(self) -> None:
        """Mail and deliver until cancelled; mails at once what a crash may have left."""
        self._changed.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._mailer)
            nursery.start_soon(self._deliverer)

    def local_changed(self) -> None:
        """This device wrote something: mail it if a device of ours is away."""
        self._changed.set()

    def wake(self) -> None:
        """Try what waits now (a relay just came back)."""
        self._wake.set()

    async def _mailer(self) -> None:
        while True:
            await self._changed.wait()
            await trio.sleep(MAIL_COALESCE_S)
            self._changed = trio.Event()
            await self._mail_own_ops()

    async def _mail_own_ops(self) -> None:
        relays = await self._db.read(mailbox_store.relay_list)
        if relays is None or not relays.relays:
            await self._db.write(skip_mailing, self._local)
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
            await self._db.write(skip_mailing, self._local)
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
            self._wake.set()

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
                await self._wake.wait()
            self._wake = trio.Event()

    async def _deliver(
        self, relay: str, addrs: Sequence[str], items: list[mailbox_store.OutboxItem]
    ) -> None:
        delivered: list[int] = []
        pending = list(items)
        try:
            async with self._open_relay(relay, addrs) as link:
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


# Blocking functions of the database, run by node.database.Database.


def skip_mailing(db: SqliteDatabase, local: str) -> None:
    mailbox_store.skip_mailing(db, local)


def _enqueue(
    db: SqliteDatabase,
    outgoing: list[mailbox_store.Outgoing],
    now: int,
    mailed: tuple[str, int],
) -> None:
    mailbox_store.enqueue(db, outgoing, now, mailed=mailed)
