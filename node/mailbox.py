"""The mailbox on a person's own node: registering at relays, sending, taking mail in.

- **Registering** (`register`, `mailbox register`): a registration signed by this device, sent
  to the relay on /vivim/mailbox/1.0.0, then the DID's relay list (an op of the vault,
  store.mailbox) gains the relay, so every device of the DID knows where mail for it waits.
  Where this device registered, it registers again with the same terms when a registration is
  past half its life or a device of the DID was revoked (`_keep_registrations`).
- **Sending**: node/mailbox_outbox.py. **Receiving**: node/mailbox_inbox.py.

Mail for the DID is one mailbox shared by its devices: whichever device takes a letter applies
its ops, and sync carries them to the others. A device never takes back what it deposited.
The control API routes are in node/mailbox_api.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import nacl.public
import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from peewee import SqliteDatabase

from node.database import Database
from node.errors import NodeError
from node.identity import LocalIdentity
from node.mailbox_inbox import Inbox
from node.mailbox_link import MailboxRefused, RelayLink, RelayUnreachable, open_link
from node.mailbox_outbox import Outbox, skip_mailing
from protocols.mailbox_records import RelayList, RelayRegistration
from protocols.trust import DeviceStatus
from store import mailbox as mailbox_store
from store import peering as peering_store
from store.devices import Credentials, credentials_of, trust_state

log = structlog.get_logger()

DEFAULT_QUOTA_BYTES = 256 * 1024 * 1024
DEFAULT_REGISTRATION_DAYS = 365
DAY_MS = 24 * 3600 * 1000
# How often registrations are checked for renewal and for revocations to tell relays about.
REGISTRATION_CHECK_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class MailboxFailed(NodeError):
    """A mailbox command could not be done; the message says why and what to do."""


class MailboxService:
    """This device's mailbox: its registrations, and its `outbox` and `inbox`."""

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
        self._trust_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.outbox = Outbox(
            database,
            self._signer,
            bytes(nacl.public.PrivateKey(encryption_key).public_key),
            is_connected=is_connected,
            open_relay=self._link,
        )
        self.inbox = Inbox(
            database, identity.did, identity.peer_id, encryption_key, open_relay=self._link
        )

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.inbox.run)
            nursery.start_soon(self.outbox.run)
            nursery.start_soon(self._keep_registrations)
            task_status.started()

    # --- triggers ------------------------------------------------------------------------------

    def local_changed(self) -> None:
        """This device wrote something: mail it if a device of ours is away (and, if it was a
        revocation, tell our relays)."""
        self.outbox.local_changed()
        self._trust_changed.set()

    def friends_changed(self) -> None:
        """A friendship was accepted: register again where our registrations do not let every
        friend deposit (`refresh_registrations`)."""
        self._trust_changed.set()

    def peer_connected(self, peer_id: str) -> None:
        """A connection opened: if the peer is one of our relays, take our mail and deliver
        what waits for it (the caller does not wait on the database)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._on_connect, peer_id)

    async def _on_connect(self, peer_id: str) -> None:
        relays = await self._db.read(mailbox_store.relay_list)
        if relays is not None and peer_id in relays.relay_peer_ids:
            self.inbox.request_drain(peer_id)
            self.outbox.wake()

    async def serve_notice(self, stream: INetStream) -> None:
        """The handler of MAILBOX_NOTICE_PROTOCOL_ID (node/mailbox_inbox.py)."""
        await self.inbox.serve_notice(stream)

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
        # Our friends may always leave us mail (shares, their acceptances); `allowed_senders`
        # adds others (someone we invited, before they are a friend).
        allowed_senders = sorted(set(allowed_senders) | await self._db.read(_friend_dids))
        state = await self._db.read(trust_state)
        now = now_ms()
        # While an invite code of ours is out, whoever uses it may leave us a friend request
        # (the registration is open until the last one expires, never past the registration).
        invites_until = await self._db.read(peering_store.invites_open_until, now)
        open_until = None if invites_until is None else min(invites_until, now + days * DAY_MS)
        registration = RelayRegistration.create(
            signing_key=self._signer.signing_key,
            recipient_did=self._did,
            relay=relay,
            allowed_senders=tuple(allowed_senders),
            revoked_devices=tuple(
                p for p, d in state.devices.items() if d.status is DeviceStatus.REVOKED
            ),
            quota_bytes=quota_bytes,
            open_until_ms=open_until,
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
            await self._db.write(skip_mailing, self._local)
        await self._publish(current, (*kept, (relay, tuple(addrs))))
        log.info("mailbox.registered", relay=relay, quota_bytes=quota_bytes, days=days)
        self.inbox.request_drain(relay)
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
        """Keep our registrations current (`refresh_registrations`), whenever something they
        depend on changed and every REGISTRATION_CHECK_S."""
        while True:
            with trio.move_on_after(REGISTRATION_CHECK_S):
                await self._trust_changed.wait()
            self._trust_changed = trio.Event()
            await self.refresh_registrations()

    async def refresh_registrations(self) -> None:
        """Register again, with the same terms, where this device registered before, when the
        registration is past half its life (renewal), when a device of ours was revoked since
        (the relay checks devices by their certificates and must be told), when a friend may
        not deposit there yet (friends are always allowed senders), or when an invite code of
        ours is out longer than the registration is open to anyone."""
        state = await self._db.read(trust_state)
        revoked = {p for p, d in state.devices.items() if d.status is DeviceStatus.REVOKED}
        relays = await self._db.read(mailbox_store.relay_list)
        listed = dict(relays.relays) if relays else {}
        friends = await self._db.read(_friend_dids)
        now = now_ms()
        invites_until = await self._db.read(peering_store.invites_open_until, now)
        for relay, old in (await self._db.read(mailbox_store.saved_registrations)).items():
            lifetime = old.expires_at_ms - old.issued_at_ms
            stale = now > old.issued_at_ms + lifetime // 2
            closed = invites_until is not None and (old.open_until_ms or 0) < min(
                invites_until, old.expires_at_ms
            )
            unchanged = (
                revoked <= set(old.revoked_devices)
                and friends <= set(old.allowed_senders)
                and not closed
            )
            if relay not in listed or (unchanged and not stale):
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

    # --- links ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _link(self, relay: str, addrs: Sequence[str]) -> AsyncIterator[RelayLink]:
        """A link to `relay`, this device introduced on it."""
        credentials = await self._db.read(_credentials, self._local)
        async with open_link(self._host, relay, addrs) as link:
            if await link.introduce(credentials) != self._did:
                raise RelayUnreachable(f"relay {relay} took us for another identity")
            yield link


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


def _friend_dids(db: SqliteDatabase) -> set[str]:
    return {friend.did for friend in peering_store.friends(db)}


def _credentials(db: SqliteDatabase, local: str) -> Credentials:
    return credentials_of(trust_state(db), local)


def _publish_relay_list(db: SqliteDatabase, signer: Any, relays: RelayList, now: int) -> None:
    mailbox_store.publish_relay_list(db, signer, relays, now)
