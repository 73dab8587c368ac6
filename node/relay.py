"""The relay role (`run --relay`): hold sealed mail for people who registered, until they take it.

A stream of /vivim/mailbox/1.0.0 starts with the client introducing itself (`Introduce`: its
device certificate, the chain above it, the identity key rotations). The relay checks that
these make the stream's peer a trusted device of the certificate's DID (protocols.trust, with
the records given: a relay never sees a vault) and that the DID's registration here does not
name the device as revoked. From then on the stream acts for that DID:

- **Register / Unregister** its own mailbox. A registration must be signed by the introduced
  device, name this relay, and be for a DID the relay accepts (`relay_allow`; empty: anyone),
  asking at most `relay_max_quota_bytes`.
- **Deposit** into anyone's mailbox, as that DID: store.relay checks, in order, registration,
  allowed sender, size, expiry, duplicate id and quota. Before that, a per-sender rate (a token
  bucket per depositing device, in memory: rates are about time, not state) answers
  `rate_limited`. Deposits arriving together share one transaction (`_store`).
- **List / Fetch / Ack** its own mailbox only; listing leaves out what the device deposited
  itself (store.relay.list_envelopes says why).

A `Stored` answer is sent after the deposit's transaction committed, so nothing acknowledged is
lost to a crash. When mail arrives for a DID that has a device connected (one that introduced
itself on some stream of the connection), the relay pushes a notice to it
(protocols.mailbox_notice), at most one per recipient per NOTICE_COALESCE_S. Expired mail and
registrations are removed every `sweep_interval_s`.

Every refusal is answered with its code and a message, logged, and changes nothing; a client
that breaks the protocol gets a last error and its stream is closed, nothing else is affected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from node.streams import close_quietly, read_some, write_quietly
from protocols.envelope import MAX_ENVELOPE_BYTES, Envelope
from protocols.errors import MalformedInput, ProtocolError, RemoteProtocolError
from protocols.identity_records import DeviceCertificate
from protocols.mailbox import (
    MAX_FRAME,
    Ack,
    Deposit,
    Fetch,
    Introduce,
    List,
    MailboxServer,
    NeedData,
    RefusalCode,
    Register,
    Request,
    ServerEvent,
    StreamEnded,
    Unregister,
    take_fitting,
)
from protocols.mailbox_notice import MAILBOX_NOTICE_PROTOCOL_ID, encode_notice
from protocols.mailbox_records import RelayRegistration
from protocols.trust import UntrustedCredentials, check_credentials
from store import relay as relay_store

log = structlog.get_logger()

# A client that sends nothing for this long between requests is dropped (it can reconnect).
IDLE_TIMEOUT_S = 120.0
NOTICE_COALESCE_S = 0.2
MAX_KNOWN_PEERS = 10_000
MAX_DEPOSITS_PER_COMMIT = 1000
RATE_LIMITED_MESSAGE = "too many deposits lately: retry later"
NOTICE_TIMEOUT_S = 5.0
DEFAULT_SENDER_RATE = 500.0  # envelopes per second, per depositing device
DEFAULT_SENDER_BURST = 2000
DEFAULT_MAX_QUOTA_BYTES = 1024 * 1024 * 1024
DEFAULT_SWEEP_INTERVAL_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """What `run --relay` and the relay_* settings of config.toml say (node/config.py)."""

    allow: tuple[str, ...] = ()  # DIDs whose mail this relay holds; empty: anyone's
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES
    max_quota_bytes: int = DEFAULT_MAX_QUOTA_BYTES
    sender_rate: float = DEFAULT_SENDER_RATE
    sender_burst: int = DEFAULT_SENDER_BURST
    sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` per second, at most `burst` at once."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class Refusal(Exception):
    """A request refused: answered with `code` and `message`, the stream goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Introduction:
    """Who an introduction proved the peer to be: a device of `did`, approved through
    `approvers` (from its own approver up to the DID)."""

    did: str
    approvers: tuple[str, ...]
    rotations: tuple[bytes, ...] = ()  # the identity key rotations that counted


def claimed_did(introduce: Introduce) -> str:
    """The DID the introduction's certificate names (not checked yet); `Refusal` if it does
    not decode."""
    try:
        return DeviceCertificate.from_wire(introduce.certificate).did
    except MalformedInput as err:
        raise Refusal(RefusalCode.MALFORMED, f"the certificate does not decode: {err}") from err


def check_introduction(
    introduce: Introduce, peer_id: str, known_rotations: Sequence[bytes] = ()
) -> Introduction:
    """What the introduction proves `peer_id` to be; `Refusal` unless it makes it a trusted
    device of the certificate's DID, by the records given and the rotations of that DID the
    relay saw before (`known_rotations`): the relay has no vault, and a client must not be
    able to leave a rotation out to make a retired identity key count again."""
    try:
        vouched = check_credentials(
            introduce.certificate,
            introduce.chain,
            (*introduce.rotations, *known_rotations),
            device=peer_id,
        )
    except MalformedInput as err:
        raise Refusal(RefusalCode.MALFORMED, f"the credentials do not decode: {err}") from err
    except UntrustedCredentials as err:
        raise Refusal(RefusalCode.UNAUTHORIZED, str(err)) from err
    return Introduction(
        did=vouched.did,
        approvers=vouched.state.devices[peer_id].chain,
        rotations=tuple(rotation.to_wire() for rotation in vouched.keys.rotations),
    )


class RelayService:
    """Serves /vivim/mailbox/1.0.0 as a relay (module docstring)."""

    def __init__(
        self, host: IHost, database: Database, local_peer: str, settings: RelaySettings
    ) -> None:
        self._host = host
        self._db = database
        self._local = local_peer
        self._settings = settings
        self._limits = relay_store.RelayLimits(max_envelope_bytes=settings.max_envelope_bytes)
        self._rates = RateLimiter(settings.sender_rate, settings.sender_burst)
        # The DID each peer introduced itself as: a connected one is pushed notices.
        self._known: dict[str, str] = {}
        self._noticing: set[str] = set()
        self._deposits: list[_PendingDeposit] = []
        self._deposits_waiting = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._commit_deposits)
            task_status.started()
            log.info(
                "relay.started",
                accepts="anyone" if not self._settings.allow else len(self._settings.allow),
                max_envelope_bytes=self._settings.max_envelope_bytes,
            )
            while True:
                removed = await self._db.write(relay_store.remove_expired, now_ms())
                if removed:
                    log.info("relay.expired_removed", envelopes=removed)
                await trio.sleep(self._settings.sweep_interval_s)

    async def serve(self, stream: INetStream) -> None:
        """The handler of MAILBOX_PROTOCOL_ID."""
        peer_id = str(stream.muxed_conn.peer_id)
        server = MailboxServer()
        session = _Session(peer_id)
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol="mailbox"):
            try:
                while True:
                    event = await self._next_event(server, stream)
                    if isinstance(event, StreamEnded):
                        break
                    try:
                        frame = await self._answer(server, session, event)
                    except Refusal as refusal:
                        log.info(
                            "relay.refused",
                            request=event.TYPE,
                            code=refusal.code,
                            message=str(refusal),
                        )
                        frame = server.refuse(refusal.code, str(refusal))
                    await stream.write(frame)
            except RemoteProtocolError as err:
                log.warning("relay.bad_request", error=err.code, message=str(err))
                await write_quietly(stream, server.fail(err.code, str(err)))
            except trio.TooSlowError:
                log.info("relay.idle_stream_closed", after_s=IDLE_TIMEOUT_S)
            except (StreamError, BaseLibp2pError) as err:
                log.info("relay.stream_closed", message=str(err) or type(err).__name__)
            finally:
                await close_quietly(stream)

    async def _next_event(self, server: MailboxServer, stream: INetStream) -> ServerEvent:
        with trio.fail_after(IDLE_TIMEOUT_S):
            while True:
                event = server.next_event()
                if not isinstance(event, NeedData):
                    return event
                server.receive_data(await read_some(stream, MAX_FRAME))

    async def _answer(self, server: MailboxServer, session: _Session, event: Request) -> bytes:
        match event:
            case Introduce():
                known = await self._db.read(relay_store.known_rotations, claimed_did(event))
                introduction = check_introduction(event, session.peer_id, known)
                did = introduction.did
                session.rotations = introduction.rotations
                if set(introduction.rotations) - set(known):
                    await self._db.write(
                        relay_store.remember_rotations, did, introduction.rotations
                    )
                await self._check_not_revoked(introduction, session.peer_id)
                self._enter(session, did)
                log.debug("relay.introduced", did=did)
                return server.introduced(did)
            case Register(registration=registration):
                await self._register(session, registration)
                return server.registered()
            case Unregister(recipient_did=recipient_did):
                self._require_own(session, recipient_did)
                dropped = await self._db.write(relay_store.unregister, recipient_did)
                log.info("relay.unregistered", did=recipient_did, dropped=dropped)
                return server.unregistered()
            case Deposit(envelopes=envelopes):
                sender = self._require_introduced(session)
                refused: dict[str, tuple[str, str]] = {}
                admitted = []
                for envelope in envelopes:
                    if self._rates.allow(session.peer_id):
                        admitted.append(envelope)
                    else:
                        refused[envelope.id] = (RefusalCode.RATE_LIMITED, RATE_LIMITED_MESSAGE)
                if admitted:
                    refused.update(await self._store(admitted, sender, session.peer_id))
                for envelope_id, (code, message) in refused.items():
                    log.info(
                        "relay.refused",
                        request=event.TYPE,
                        envelope_id=envelope_id,
                        code=code,
                        message=message,
                    )
                for recipient_did in {e.recipient_did for e in admitted if e.id not in refused}:
                    self._notice_soon(recipient_did, session.peer_id)
                return server.stored(refused)
            case List(recipient_did=recipient_did, after=after, limit=limit):
                self._require_own(session, recipient_did)
                page = await self._db.read(
                    _list, recipient_did, after, limit, now_ms(), session.peer_id
                )
                return server.listed(page.ids, page.next_cursor)
            case Fetch(ids=ids):
                did = await self._require_all_own(session, ids)
                found = await self._db.read(_fetch, did, ids)
                return server.fetched(take_fitting(found))
            case Ack(ids=ids):
                did = await self._require_all_own(session, ids)
                count = await self._db.write(relay_store.ack, did, ids)
                return server.acked(count)
        raise AssertionError(f"not a request: {event!r}")

    async def _check_not_revoked(self, introduction: Introduction, peer_id: str) -> None:
        """Refuse a device the DID's registration names as revoked, or one approved through a
        revoked device (the revocation's cascade: it is no longer trusted unless approved again,
        which gives it a new certificate and chain)."""
        did = introduction.did
        registration = await self._db.read(relay_store.registration_of, did, now_ms())
        if registration is None:
            return
        revoked = set(registration.revoked_devices)
        if peer_id in revoked:
            raise Refusal(RefusalCode.UNAUTHORIZED, f"this device was revoked by {did}")
        if revoked.intersection(introduction.approvers):
            raise Refusal(
                RefusalCode.UNAUTHORIZED,
                f"this device was approved by a device {did} revoked: have it approved again",
            )

    async def _register(self, session: _Session, registration: RelayRegistration) -> None:
        did = self._require_own(session, registration.recipient_did)
        if registration.device != session.peer_id:
            raise Refusal(RefusalCode.MALFORMED, "register with a registration this device signed")
        if registration.relay != self._local:
            raise Refusal(
                RefusalCode.MALFORMED, f"the registration names relay {registration.relay}"
            )
        try:
            registration.verify()
        except ProtocolError as err:
            raise Refusal(
                RefusalCode.MALFORMED, f"the registration does not verify: {err}"
            ) from err
        if self._settings.allow and did not in self._settings.allow:
            raise Refusal(
                RefusalCode.UNAUTHORIZED, "this relay holds mail only for the DIDs it lists"
            )
        if registration.quota_bytes > self._settings.max_quota_bytes:
            raise Refusal(
                RefusalCode.OVER_QUOTA,
                f"this relay grants at most {self._settings.max_quota_bytes} bytes per recipient",
            )
        try:
            await self._db.write(relay_store.register, registration, now_ms())
        except relay_store.RelayRefused as err:
            raise Refusal(err.code, str(err)) from err
        await self._db.write(relay_store.remember_rotations, did, session.rotations)
        log.info(
            "relay.registered",
            did=did,
            quota_bytes=registration.quota_bytes,
            expires_at_ms=registration.expires_at_ms,
        )

    async def _store(
        self, envelopes: list[Envelope], sender: str, depositor: str
    ) -> dict[str, tuple[str, str]]:
        """Deposit `envelopes`; the refused ones, once the others are committed. Deposits that
        arrive together (on any streams) share one transaction, so one commit (and its fsync)
        serves them all: with `synchronous = FULL`, a commit per envelope held a busy relay to
        a few hundred a second."""
        pending = _PendingDeposit(envelopes=envelopes, sender=sender, depositor=depositor)
        self._deposits.append(pending)
        self._deposits_waiting.set()
        await pending.done.wait()
        return pending.refused

    async def _commit_deposits(self) -> None:
        while True:
            await self._deposits_waiting.wait()
            self._deposits_waiting = trio.Event()
            batch: list[_PendingDeposit] = []
            while self._deposits and (
                not batch or sum(len(p.envelopes) for p in batch) < MAX_DEPOSITS_PER_COMMIT
            ):
                batch.append(self._deposits.pop(0))
            if self._deposits:
                self._deposits_waiting.set()
            try:
                await self._db.write(_deposit_all, batch, now_ms(), self._limits)
            except BaseException:
                # Nothing of the batch is stored: its depositors are told so, and retry.
                for pending in batch:
                    pending.refused = {
                        e.id: ("internal_error", "the relay could not store it: retry")
                        for e in pending.envelopes
                    }
                    pending.done.set()
                raise
            for pending in batch:
                pending.done.set()

    def _require_introduced(self, session: _Session) -> str:
        if session.did is None:
            raise Refusal(RefusalCode.UNAUTHORIZED, "introduce this device first (Introduce)")
        return session.did

    async def _require_all_own(self, session: _Session, ids: tuple[str, ...]) -> str:
        did = self._require_introduced(session)
        foreign = await self._db.read(relay_store.foreign_ids, did, ids)
        if foreign:
            raise Refusal(
                RefusalCode.UNAUTHORIZED,
                f"{len(foreign)} of these envelopes are not for {did}; nothing was done",
            )
        return did

    def _require_own(self, session: _Session, did: str) -> str:
        if self._require_introduced(session) != did:
            raise Refusal(RefusalCode.UNAUTHORIZED, f"this device is not a device of {did}")
        return did

    # --- presence and notices ------------------------------------------------------------------

    def _enter(self, session: _Session, did: str) -> None:
        session.did = did
        if len(self._known) >= MAX_KNOWN_PEERS:  # forget peers no longer connected
            connected = {str(p) for p in self._host.get_connected_peers()}
            self._known = {p: d for p, d in self._known.items() if p in connected}
        self._known[session.peer_id] = did

    def _connected_devices(self, did: str, but: str) -> set[str]:
        """Connected peers introduced (on any stream, now or before) as devices of `did`."""
        return {
            peer
            for peer in map(str, self._host.get_connected_peers())
            if peer != but and self._known.get(peer) == did
        }

    def _notice_soon(self, recipient_did: str, depositor: str) -> None:
        if recipient_did in self._noticing or self._nursery is None:
            return
        if not self._connected_devices(recipient_did, depositor):
            return
        self._noticing.add(recipient_did)
        self._nursery.start_soon(self._notice, recipient_did, depositor)

    async def _notice(self, recipient_did: str, depositor: str) -> None:
        """One round of notices for `recipient_did`, to its connected devices at once. Deposits
        during the round and the window before it are covered by it: at most one round per
        recipient is pending or running, and rounds start at most every NOTICE_COALESCE_S."""
        try:
            await trio.sleep(NOTICE_COALESCE_S)
            count = await self._db.read(relay_store.held_for, recipient_did)
            frame = encode_notice(recipient_did, count)
            async with trio.open_nursery() as nursery:
                for peer_id in self._connected_devices(recipient_did, depositor):
                    nursery.start_soon(self._notice_one, peer_id, frame)
        finally:
            self._noticing.discard(recipient_did)

    async def _notice_one(self, peer_id: str, frame: bytes) -> None:
        with trio.move_on_after(NOTICE_TIMEOUT_S):
            try:
                stream = await self._host.new_stream(
                    ID.from_base58(peer_id), [TProtocol(MAILBOX_NOTICE_PROTOCOL_ID)]
                )
                try:
                    await stream.write(frame)
                finally:
                    await close_quietly(stream)
            except (StreamError, BaseLibp2pError, OSError) as err:
                # A hint only: the recipient fetches on every (re)connection anyway.
                log.debug("relay.notice_failed", peer=peer_id, error=str(err))


@dataclass
class _Session:
    peer_id: str
    did: str | None = None
    rotations: tuple[bytes, ...] = ()  # the introduction's, kept once the DID registers


def _list(
    db: SqliteDatabase,
    recipient_did: str,
    after: str | None,
    limit: int,
    now: int,
    reader: str,
) -> relay_store.EnvelopePage:
    return relay_store.list_envelopes(db, recipient_did, after, limit, now, reader=reader)


@dataclass
class _PendingDeposit:
    """The envelopes of one Deposit waiting for a commit, and (once `done`) those refused."""

    envelopes: list[Envelope]
    sender: str
    depositor: str
    done: trio.Event = field(default_factory=trio.Event)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (code, message)


def _fetch(db: SqliteDatabase, did: str, ids: tuple[str, ...]) -> list[Envelope]:
    return relay_store.fetch(db, did, ids)


def _deposit_all(
    db: SqliteDatabase, batch: list[_PendingDeposit], now: int, limits: relay_store.RelayLimits
) -> None:
    """Each envelope of `batch` in the one transaction of the caller (each in a savepoint, so
    a refused one changes nothing); refusals are noted in their `_PendingDeposit`."""
    for pending in batch:
        for envelope in pending.envelopes:
            try:
                relay_store.deposit(
                    db,
                    envelope,
                    sender_did=pending.sender,
                    depositor=pending.depositor,
                    now_ms=now,
                    limits=limits,
                )
            except relay_store.RelayRefused as err:
                pending.refused[envelope.id] = (err.code, str(err))
