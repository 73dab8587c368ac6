"""Shares between friends' nodes: the /vivim/share/1.0.0 pull, hints, and mail while away.

What moves are share items (a grant's bundle: the grant, the ACU's ciphertext, the key wrapped
for the recipient; or a revocation), made and checked by the store (store/share_delivery.py),
from the grantor's share feed, whose positions are the cursors here (store/share_cursors.py).

- **Pull** (`_pull`): when a device of a friend connects, when it hints, and every
  PULL_INTERVAL_S (anti-entropy: a lost hint costs one period), we pull its feed
  past our cursor for it: `Pull` (our credentials, the cursor) -> `Page`; each item is checked
  and kept (idempotent), then the cursor moves; again until the page says done.
- **Serving** (`serve`): a Pull's credentials must make the stream's peer a device of a DID
  that is our friend (not blocked); the page holds only what that DID may see (the store asks
  store.access), so a friend learns nothing of the rest. Anyone else gets `unauthorized`.
- **After a local share** (`local_changed`): connected friends' devices get a `Hint` and pull;
  friends with no device connected get what is new in their feed as letters (`share.item`,
  sealed to their X25519 key) deposited at their relays, their "mailed" cursor moving once a
  relay stored them; retried every MAIL_RETRY_S while a relay cannot take them. The recipient's
  mailbox inbox hands such letters to `on_letter`. A friend who connects later pulls anyway, and
  items are idempotent, so mail and pull may overlap without harm.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from peewee import SqliteDatabase

from node.database import Database
from node.identity import LocalIdentity
from node.mailbox_link import MailboxRefused, RelayUnreachable, fitting_deposit, open_link
from node.relay import Refusal, check_introduction
from node.streams import close_quietly, read_some, write_quietly
from protocols.envelope import DEFAULT_TTL_MS, Envelope, Letter, seal
from protocols.errors import MalformedInput, ProtocolError
from protocols.framing import FrameDecoder, NeedData
from protocols.mailbox_messages import Introduce
from protocols.share_sync import (
    MALFORMED,
    MAX_FRAME,
    SHARE_PROTOCOL_ID,
    UNAUTHORIZED,
    Hint,
    Page,
    Pull,
    Refused,
    decode_reply,
    decode_request,
    encode,
    fit_page,
)
from store import peering as peering_store
from store import share_cursors
from store.database import write_transaction
from store.devices import Credentials, credentials_of, trust_state
from store.mailbox import OpenedLetter
from store.share_delivery import share_page, take_item

log = structlog.get_logger()

SHARE_LETTER = "share.item"
# Items a pull page is made from (a page then holds what fits in a frame).
PAGE_ITEMS = 200
# Items mailed to one friend per round (each a letter; a Deposit holds many).
MAIL_ITEMS = 200
MAIL_RETRY_S = 30.0
DELIVER_COALESCE_S = 0.1
PULL_INTERVAL_S = 60.0
READ_TIMEOUT_S = 30.0
DIAL_TIMEOUT_S = 10.0
# A peer that keeps paging past this many pages in one pull is given up on until next time.
MAX_PAGES = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


class ShareDelivery:
    """Serves and pulls /vivim/share/1.0.0 and mails shares to away friends (module docstring)."""

    def __init__(
        self,
        host: IHost,
        database: Database,
        identity: LocalIdentity,
        encryption_key: bytes,
        *,
        is_connected: Callable[[str], bool],
    ) -> None:
        self._host = host
        self._db = database
        self._identity = identity
        self._encryption_key = encryption_key
        self._signing_key = identity.signer().signing_key
        self._is_connected = is_connected
        self._nursery: trio.Nursery | None = None
        self._pulling: set[str] = set()
        self._pull_again: set[str] = set()
        self._changed = trio.Event()
        # Per friend device, the share feed's head when we last hinted it.
        self._hinted: dict[str, int] = {}

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._deliver_loop)
            nursery.start_soon(self._anti_entropy)
            task_status.started()

    async def _anti_entropy(self) -> None:
        """Pull from every connected friend device every PULL_INTERVAL_S: a lost hint, or a
        pull that failed, costs at most one period."""
        while True:
            await trio.sleep(PULL_INTERVAL_S)
            for friend in await self._db.read(peering_store.friends):
                for device in friend.devices:
                    if self._is_connected(device):
                        self._request_pull(device)

    # --- triggers ------------------------------------------------------------------------------

    def local_changed(self) -> None:
        """Something was written here (maybe a share): hint and mail what is new."""
        self._changed.set()

    def peer_connected(self, peer_id: str) -> None:
        """A connection opened: pull from it if it is a friend's device."""
        if self._nursery is not None and peer_id != self._identity.peer_id:
            self._nursery.start_soon(self._pull_if_friend, peer_id)

    async def _pull_if_friend(self, peer_id: str) -> None:
        did = await self._db.read(peering_store.did_of_device, peer_id)
        if did is not None and await self._db.read(peering_store.friend, did) is not None:
            self._request_pull(peer_id)

    def _request_pull(self, peer_id: str) -> None:
        if self._nursery is None:
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

    # --- the puller ----------------------------------------------------------------------------

    async def _pull(self, peer_id: str) -> None:
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol=SHARE_PROTOCOL_ID):
            try:
                taken = await self._pull_pages(peer_id)
            except (
                ProtocolError,
                StreamError,
                BaseLibp2pError,
                OSError,
                trio.TooSlowError,
            ) as err:
                log.warning("share.pull_failed", error=str(err) or type(err).__name__)
                return
            except Exception:  # a bug of ours must not stop the node serving everyone else
                log.exception("share.pull_crashed")
                return
            log.info("share.pulled", received=taken)

    async def _pull_pages(self, peer_id: str) -> int:
        credentials = await self._db.read(_credentials, self._identity.peer_id)
        after = await self._db.read(share_cursors.pull_cursor, peer_id)
        taken = 0
        for _ in range(MAX_PAGES):
            page = await self._ask(peer_id, credentials, after)
            if page.next < after:
                raise MalformedInput("the peer's page moved the cursor back")
            # The page's items and the cursor past them in one transaction (one commit).
            outcomes = await self._db.write(
                _accept_page, peer_id, page.items, page.next, self._encryption_key, now_ms()
            )
            for grant, refusal in outcomes:
                if refusal is not None:
                    log.warning("share.item_refused", code=refusal[0], message=refusal[1])
                elif grant is not None:
                    taken += 1
                    log.info("share.received", grant_id=grant)
            if page.done:
                return taken
            if not page.items and page.next == after:
                raise MalformedInput("the peer sent an empty page that is not its last")
            after = page.next
        return taken

    async def _ask(self, peer_id: str, credentials: Credentials, after: int) -> Page:
        with trio.fail_after(DIAL_TIMEOUT_S):
            stream = await self._host.new_stream(
                ID.from_base58(peer_id), [TProtocol(SHARE_PROTOCOL_ID)]
            )
        try:
            await stream.write(
                encode(
                    Pull(
                        certificate=credentials.certificate,
                        chain=tuple(credentials.chain),
                        rotations=tuple(credentials.rotations),
                        after=after,
                    )
                )
            )
            reply = decode_reply(await _read_frame(stream))
        finally:
            await close_quietly(stream)
        if isinstance(reply, Refused):
            raise MalformedInput(f"the peer refused our pull: {reply.message} ({reply.code})")
        return reply

    # --- the grantor ---------------------------------------------------------------------------

    async def serve(self, stream: INetStream) -> None:
        """The handler of SHARE_PROTOCOL_ID: a Pull answered with a page, or a Hint taken."""
        peer_id = str(stream.muxed_conn.peer_id)
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol=SHARE_PROTOCOL_ID):
            try:
                request = decode_request(await _read_frame(stream))
                if isinstance(request, Hint):
                    if await self._db.read(peering_store.did_of_device, peer_id) is not None:
                        self._request_pull(peer_id)
                    reply: Page | Refused | None = None
                else:
                    reply = await self._page_for(peer_id, request)
            except ProtocolError as err:
                log.info("share.bad_request", error=str(err))
                reply = Refused(code=MALFORMED, message=str(err)[:200])
            except (StreamError, BaseLibp2pError, trio.TooSlowError) as err:
                log.info("share.stream_closed", message=str(err) or type(err).__name__)
                reply = None
            if reply is not None:
                await write_quietly(stream, encode(reply))
            await close_quietly(stream)

    async def _page_for(self, peer_id: str, pull: Pull) -> Page | Refused:
        introduce = Introduce(
            certificate=pull.certificate, chain=pull.chain, rotations=pull.rotations
        )
        try:
            did = check_introduction(introduce, peer_id).did
        except Refusal as err:
            log.info("share.refused", reason=str(err))
            return Refused(code=UNAUTHORIZED, message=str(err)[:200])
        friend = await self._db.read(peering_store.friend, did)
        if friend is None or await self._db.read(peering_store.is_blocked, did):
            log.info("share.refused", did=did, reason="not a friend")
            return Refused(code=UNAUTHORIZED, message="you are not a friend of this node")
        if peer_id not in friend.devices:
            await self._db.write(_add_device, did, peer_id)
        if pull.after > 0:
            # They hold our feed up to their cursor: mail to them, once they are away, starts
            # after it rather than from the beginning.
            await self._db.write(share_cursors.advance_mailed_cursor, did, pull.after, now_ms())
        items, scanned, more = await self._db.read(
            _share_page, did, pull.after, PAGE_ITEMS, now_ms()
        )
        page = fit_page([(i.position, i.to_wire()) for i in items], pull.after, more=more)
        if page.done and scanned > page.next:
            # Every row looked at was taken or skipped: the cursor goes past the skipped ones.
            page = Page(items=page.items, next=scanned, done=not more)
        if page.items:
            log.info("share.served", did=did, items=len(page.items))
        return page

    # --- after local changes -------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            with trio.move_on_after(MAIL_RETRY_S):
                await self._changed.wait()
                # Writes come in bursts (a share after a share): one hint for them all, so
                # friends pull them in one page.
                await trio.sleep(DELIVER_COALESCE_S)
            self._changed = trio.Event()
            try:
                await self._deliver()
            except (ProtocolError, OSError) as err:
                log.warning("share.deliver_failed", error=str(err))

    async def _deliver(self) -> None:
        # Most local writes share nothing (an import, an edit): then nobody is told anything.
        head = await self._db.read(share_cursors.feed_head)
        for friend in await self._db.read(peering_store.friends):
            connected = [d for d in friend.devices if self._is_connected(d)]
            if connected:
                for device in connected:
                    if self._hinted.get(device, -1) < head and await self._hint(device):
                        self._hinted[device] = head
            elif friend.relays:
                await self._mail(friend, head)

    async def _hint(self, device: str) -> bool:
        """Tell `device` to pull; False if it could not be told (tried again next round)."""
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                stream = await self._host.new_stream(
                    ID.from_base58(device), [TProtocol(SHARE_PROTOCOL_ID)]
                )
                await stream.write(encode(Hint()))
                await close_quietly(stream)
        except (StreamError, BaseLibp2pError, OSError, trio.TooSlowError) as err:
            log.info("share.hint_failed", peer_id=device, error=str(err) or type(err).__name__)
            return False
        return True

    async def _mail(self, friend: peering_store.Friend, head: int) -> None:
        after = await self._db.read(share_cursors.mailed_cursor, friend.did)
        if after >= head:
            return
        items, scanned, _more = await self._db.read(
            _share_page, friend.did, after, MAIL_ITEMS, now_ms()
        )
        if not items:
            if scanned > after:
                await self._db.write(
                    share_cursors.advance_mailed_cursor, friend.did, scanned, now_ms()
                )
            return
        envelopes = [self._seal(friend, item.to_wire()) for item in items]
        credentials = await self._db.read(_credentials, self._identity.peer_id)
        for relay in friend.relays:
            try:
                info = info_from_p2p_addr(Multiaddr(relay))
                async with open_link(
                    self._host, str(info.peer_id), [str(a) for a in info.addrs]
                ) as link:
                    await link.introduce(credentials)
                    pending = envelopes
                    while pending:
                        batch = fitting_deposit(pending)
                        answers = await link.deposit(batch)
                        refused = {i: a for i, a in answers.items() if a and a[0] != "duplicate"}
                        if refused:
                            raise MailboxRefused(*next(iter(refused.values())))
                        pending = pending[len(batch) :]
            except (MailboxRefused, RelayUnreachable, ValueError) as err:
                log.info("share.mail_failed", did=friend.did, relay=relay, error=str(err))
                continue
            await self._db.write(share_cursors.advance_mailed_cursor, friend.did, scanned, now_ms())
            log.info("share.mailed", did=friend.did, relay=relay, items=len(envelopes))
            if _more:
                self._changed.set()
            return

    def _seal(self, friend: peering_store.Friend, payload: bytes) -> Envelope:
        now = now_ms()
        letter = Letter.create(
            signing_key=self._signing_key,
            recipient_did=friend.did,
            sender_did=self._identity.did,
            payload_type=SHARE_LETTER,
            payload=payload,
            created_at_ms=now,
        )
        return seal(
            letter,
            recipient_did=friend.did,
            recipient_x25519_public_key=friend.encryption_key,
            expires_at_ms=now + DEFAULT_TTL_MS,
            ephemeral_private_key=os.urandom(32),
        )

    # --- mail for us ---------------------------------------------------------------------------

    async def on_letter(self, letter: OpenedLetter) -> str:
        """The mailbox inbox's handler of share letters: the outcome to record."""
        try:
            grant = await self._db.write(_accept, letter.payload, self._encryption_key, now_ms())
        except ProtocolError as err:  # BundleRefused, Irrevocable, MalformedInput...
            code = getattr(err, "code", "malformed")
            log.info("share.letter_refused", sender=letter.sender_did, code=code)
            return f"refused: {code}: {err}"
        if grant is not None:
            log.info("share.received", grant_id=grant, via="mailbox")
        return "applied"


async def _read_frame(stream: INetStream) -> bytes:
    decoder = FrameDecoder(MAX_FRAME)
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            frame = decoder.next_frame()
            if not isinstance(frame, NeedData):
                return frame
            if decoder.closed:
                raise MalformedInput("the stream ended before a whole frame")
            decoder.receive_data(await read_some(stream, MAX_FRAME))


# Blocking functions of the database, run by node.database.Database.


def _credentials(db: SqliteDatabase, local: str) -> Credentials:
    return credentials_of(trust_state(db), local)


def _share_page(
    db: SqliteDatabase, did: str, after: int, limit: int, now: int
) -> tuple[list[Any], int, bool]:
    return share_page(db, did, after, now_ms=now, limit=limit)


def _accept(db: SqliteDatabase, item: bytes, encryption_key: bytes, now: int) -> str | None:
    """The grant a share item was about, if it was new here (None: nothing new)."""
    grant, new = take_item(db, item, encryption_key=encryption_key, now_ms=now)
    return grant if new else None


def _accept_page(
    db: SqliteDatabase,
    peer_id: str,
    items: tuple[bytes, ...],
    cursor: int,
    encryption_key: bytes,
    now: int,
) -> list[tuple[str | None, tuple[str, str] | None]]:
    """Accept a pulled page's items (each in a savepoint: a refused one stores nothing) and
    move the cursor past them, in one transaction. Per item: the grant it was about, or the
    refusal's (code, message)."""
    outcomes: list[tuple[str | None, tuple[str, str] | None]] = []
    with write_transaction(db):
        for item in items:
            try:
                with db.atomic():
                    outcomes.append((_accept(db, item, encryption_key, now), None))
            except ProtocolError as err:  # BundleRefused, Irrevocable, MalformedInput...
                outcomes.append((None, (getattr(err, "code", "malformed"), str(err))))
        share_cursors.advance_pull_cursor(db, peer_id, cursor, now)
    return outcomes


def _add_device(db: SqliteDatabase, did: str, peer_id: str) -> None:
    peering_store.add_devices(db, did, (peer_id,), now_ms())
