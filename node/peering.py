"""Friends: invites, friend requests and acceptances, on /vivim/peering/1.0.0 or through relays.

- `invite`: a one-time token (16 random bytes from the OS, kept with its expiry) in an invite
  code with our DID, encryption binding, this device's addresses and our relays.
- `add`: a `ConnectionRequest` signed by this device, sent to the inviter's addresses; if none
  answers, sealed in a letter (`peering.request`) to their X25519 key and deposited at the
  relays the invite names. Kept as an outgoing request once one of them took it (a refusal or
  no way through changes nothing). Adding again resends the same request (a retry).
- `accept`: a `ConnectionAcceptance` of the pending request, kept with it (the connection then
  holds both signed records), sent back the same way (`peering.accept`). If neither way works
  now, it is kept anyway and `friend accept` again resends it; a retry of their request is also
  answered with it.
- Receiving (stream or letter): a request or acceptance from a blocked DID is dropped without
  an answer; otherwise its signature, the device's certificate chain and the encryption binding
  are checked (protocols.peering) and the store keeps it (store.peering: tokens spent once, one
  pending request per DID).
- **Unsolicited requests** (no token) are limited to UNSOLICITED_PER_MINUTE per node, a token
  bucket (burst of as many); more are refused `rate_limited`. A request with our token is not
  counted (a person we invited). One pending request per DID is the store's rule.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nacl.signing
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
from node.errors import NodeError
from node.identity import LocalIdentity
from node.mailbox_link import MailboxRefused, RelayUnreachable, open_link
from node.relay import RateLimiter
from node.streams import close_quietly, read_some, write_quietly
from protocols.envelope import DEFAULT_TTL_MS, Letter, seal
from protocols.errors import ClosedEarly, RemoteProtocolError
from protocols.peering import (
    ConnectionAcceptance,
    ConnectionRequest,
    Credentials,
    InviteCode,
)
from protocols.peering_session import (
    MAX_FRAME,
    PEERING_PROTOCOL_ID,
    AcceptanceTaken,
    NeedData,
    PeeringClient,
    PeeringError,
    PeeringServer,
    Received,
    SendAcceptance,
    SendRequest,
    StreamEnded,
)
from store import peering as peering_store
from store.devices import credentials_of, trust_state
from store.identity import load_identity
from store.mailbox import OpenedLetter, relay_list
from store.peering import PeeringRefused, RequestRow

log = structlog.get_logger()

REQUEST_LETTER = "peering.request"
ACCEPT_LETTER = "peering.accept"
DEFAULT_INVITE_HOURS = 7 * 24  # store/SHARING_DESIGN.md: a token lasts 7 days by default
HOUR_MS = 3600 * 1000
# The design's figure: a person gets few friend requests they did not ask for; 10 a minute
# leaves room for a burst and stops a flood before it fills the table.
UNSOLICITED_PER_MINUTE = 10
DIAL_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 15.0
INVITE_RELAYS_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class PeeringFailed(NodeError):
    """A friend command could not be done; `code` says why, the message what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Dropped(Exception):
    """A blocked sender: answer nothing."""


class _Unreachable(Exception):
    pass


class PeeringService:
    """This node's friends (module docstring)."""

    def __init__(self, host: IHost, database: Database, identity: LocalIdentity) -> None:
        self._host = host
        self._db = database
        self._did = identity.did
        self._local = identity.peer_id
        self._key = nacl.signing.SigningKey(identity.device_seed)
        self._unsolicited = RateLimiter(UNSOLICITED_PER_MINUTE / 60, UNSOLICITED_PER_MINUTE)
        # Told the DID of each connection that became accepted (the node delivers shares to
        # the new friend and lets it mail us through our relays).
        self.on_connected: Callable[[str], None] = lambda did: None
        # Awaited after an invite is made, before its code is given out: the node opens its
        # relay registrations to whoever uses the code (node/mailbox.py).
        self.on_invited: Callable[[], Awaitable[None]] | None = None
        self._nursery: trio.Nursery | None = None
        # Friends whose device took our acceptance again this run (`peer_connected`).
        self._confirmed: set[str] = set()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def peer_connected(self, peer_id: str) -> None:
        """A connection opened: if it is a device of someone whose request we accepted, hand
        it our acceptance again (once a run): an acceptance made while they were away, with no
        relay to take it, reaches them this way without anyone running `friend accept` again.
        Taking an acceptance twice changes nothing."""
        if self._nursery is not None:
            self._nursery.start_soon(self._confirm, peer_id)

    async def _confirm(self, peer_id: str) -> None:
        did = await self._db.read(peering_store.did_of_device, peer_id)
        if did is None or did in self._confirmed:
            return
        found = await self._db.read(peering_store.connection_with, did)
        if found is None or found.direction != "incoming" or found.acceptance is None:
            return
        addrs = [a for a in found.addrs if a.rstrip("/").endswith(f"/p2p/{peer_id}")]
        addrs += [
            f"{a}/p2p/{peer_id}" for a in self._host.get_peerstore().addrs(ID.from_base58(peer_id))
        ]
        for addr in addrs:
            try:
                await self._send_direct(addr, ConnectionAcceptance.from_wire(found.acceptance))
            except (_Unreachable, PeeringFailed) as err:
                log.debug("peering.confirm_failed", did=did, error=str(err))
                continue
            self._confirmed.add(did)
            log.info("peering.acceptance_confirmed", did=did)
            return

    # --- commands ---------------------------------------------------------------------------

    async def invite(self, hours: int = DEFAULT_INVITE_HOURS) -> dict[str, Any]:
        token = os.urandom(16)
        now = now_ms()
        me = await self._db.read(_me, self._local)
        code = InviteCode(
            did=self._did,
            encryption_binding=me.binding,
            addrs=tuple(self._addrs()[:8]),
            relays=me.relays,
            token=token,
            expires_at_ms=now + hours * HOUR_MS,
        )
        await self._db.write(peering_store.create_invite, token, now, code.expires_at_ms)
        if self.on_invited is not None:
            # Bounded: an unreachable relay must not hold the code back (the registrations
            # are kept current in the background anyway).
            with trio.move_on_after(INVITE_RELAYS_TIMEOUT_S):
                await self.on_invited()
        log.info("peering.invited", expires_at_ms=code.expires_at_ms, relays=len(me.relays))
        return {"code": code.to_text(), "did": self._did, "expires_at_ms": code.expires_at_ms}

    async def add(self, text: str, message: str = "") -> dict[str, Any]:
        code = InviteCode.from_text(text)
        code.binding()
        if code.did == self._did:
            raise PeeringFailed("own_invite", "that invite is your own: send it to your friend")
        if code.is_expired(now_ms()):
            raise PeeringFailed("expired", "the invite has expired: ask your friend for a new one")
        existing = await self._db.read(peering_store.connection_with, code.did)
        if existing is not None and existing.state == "accepted":
            raise PeeringFailed("already_connected", f"{code.did} is a friend already")
        if existing is not None and existing.direction == "outgoing":
            request = ConnectionRequest.from_wire(existing.request)  # a retry: the same request
        else:
            me = await self._db.read(_me, self._local)
            request = ConnectionRequest.create(
                signing_key=self._key,
                from_did=self._did,
                to_did=code.did,
                credentials=me.credentials,
                encryption_binding=me.binding,
                addrs=tuple(self._addrs()[:8]),
                relays=me.relays,
                token=code.token,
                message=message,
                created_at_ms=now_ms(),
            )
        key = code.binding().encryption_public_key
        via, answer = await self._deliver(
            code.addrs, code.relays, code.did, key, REQUEST_LETTER, request
        )
        row = RequestRow(
            did=code.did,
            request_id=request.id,
            request=request.to_wire(),
            encryption_key=key,
            encryption_binding=code.encryption_binding,
            addrs=code.addrs,
            relays=code.relays,
            message=message,
        )
        if existing is None or existing.direction != "outgoing":
            await self._db.write(peering_store.save_outgoing_request, row, now_ms())
        state = "pending"
        if isinstance(answer, Received) and answer.acceptance is not None:
            await self._take_acceptance(answer.acceptance)
            state = "accepted"
        log.info("peering.request_sent", to=code.did, via=via, request_id=request.id)
        return {"did": code.did, "request_id": request.id, "via": via, "state": state}

    async def accept(self, did: str, trust: str = peering_store.DEFAULT_TRUST) -> dict[str, Any]:
        if trust not in peering_store.TRUST_LEVELS:
            raise PeeringFailed(
                "bad_request", f"trust must be one of {', '.join(peering_store.TRUST_LEVELS)}"
            )
        found = await self._db.read(peering_store.connection_with, did)
        if found is None or found.direction != "incoming":
            raise PeeringFailed(
                "unknown_request",
                f"no request from {did}: see `vivim-node friend requests`",
            )
        request = ConnectionRequest.from_wire(found.request)
        if found.acceptance is not None:  # accepted before: send it again
            acceptance = ConnectionAcceptance.from_wire(found.acceptance)
        else:
            me = await self._db.read(_me, self._local)
            acceptance = ConnectionAcceptance.create(
                signing_key=self._key,
                request=request,
                credentials=me.credentials,
                encryption_binding=me.binding,
                addrs=tuple(self._addrs()[:8]),
                relays=me.relays,
                created_at_ms=now_ms(),
            )
            await self._db.write(
                peering_store.accept, did, request.id, acceptance.to_wire(), trust, now_ms()
            )
            self.on_connected(did)
        try:
            via, _ = await self._deliver(
                request.addrs, request.relays, did, found.encryption_key, ACCEPT_LETTER, acceptance
            )
        except PeeringFailed as err:
            via = f"not delivered yet ({err}): run this again later"
        log.info("peering.accepted", did=did, trust=trust, via=via)
        return {"did": did, "trust": trust, "request_id": request.id, "via": via}

    async def block(self, did: str) -> dict[str, Any]:
        newly = await self._db.write(peering_store.block, did, now_ms())
        log.info("peering.blocked", did=did, newly=newly)
        return {"did": did, "blocked": True, "already": not newly}

    async def unblock(self, did: str) -> dict[str, Any]:
        was = await self._db.write(peering_store.unblock, did)
        log.info("peering.unblocked", did=did, was_blocked=was)
        return {"did": did, "blocked": False, "was_blocked": was}

    async def requests(self) -> list[dict[str, Any]]:
        rows = await self._db.read(_connections, "pending")
        return [
            {
                "did": row.did,
                "direction": row.direction,
                "request_id": row.request_id,
                "message": row.message,
                "via_invite": row.via_invite,
                "devices": list(row.devices),
                "received_at_ms": row.created_at_ms,
            }
            for row in rows
        ]

    async def friends(self) -> list[dict[str, Any]]:
        rows = await self._db.read(_connections, "accepted")
        return [
            {
                "did": row.did,
                "trust": row.trust,
                "direction": row.direction,
                "request_id": row.request_id,
                "request_signature": ConnectionRequest.from_wire(row.request).signature.hex(),
                "acceptance_signature": ConnectionAcceptance.from_wire(
                    row.acceptance or b""
                ).signature.hex(),
                "encryption_key": row.encryption_key.hex(),
                "devices": list(row.devices),
                "addrs": list(row.addrs),
                "relays": list(row.relays),
                "since_ms": row.updated_at_ms,
            }
            for row in rows
        ]

    # --- receiving ----------------------------------------------------------------------------

    async def serve(self, stream: INetStream) -> None:
        """The handler of PEERING_PROTOCOL_ID."""
        peer_id = str(stream.muxed_conn.peer_id)
        server = PeeringServer()
        with structlog.contextvars.bound_contextvars(peer_id=peer_id, protocol="peering"):
            try:
                while True:
                    event = await _next(server, stream, IDLE_TIMEOUT_S)
                    if isinstance(event, StreamEnded):
                        break
                    try:
                        frame = await self._answer(server, event, peer_id)
                    except _Dropped:
                        server.drop()
                        break
                    except (PeeringRefused, RemoteProtocolError) as err:
                        log.info(
                            "peering.refused", request=event.TYPE, code=err.code, message=str(err)
                        )
                        frame = server.refuse(err.code, str(err))
                    await stream.write(frame)
            except RemoteProtocolError as err:
                log.warning("peering.bad_stream", error=err.code, message=str(err))
                await write_quietly(stream, server.fail(err.code, str(err)))
            except trio.TooSlowError:
                log.info("peering.idle_stream_closed", after_s=IDLE_TIMEOUT_S)
            except (StreamError, BaseLibp2pError) as err:
                log.info("peering.stream_closed", message=str(err) or type(err).__name__)
            finally:
                await close_quietly(stream)

    async def _answer(
        self, server: PeeringServer, event: SendRequest | SendAcceptance, peer_id: str
    ) -> bytes:
        if isinstance(event, SendRequest):
            if event.request.from_device != peer_id:
                raise PeeringRefused("untrusted_device", "the request is not signed by this peer")
            return server.received(await self._take_request(event.request))
        if event.acceptance.from_device != peer_id:
            raise PeeringRefused("untrusted_device", "the acceptance is not signed by this peer")
        await self._take_acceptance(event.acceptance)
        return server.acceptance_taken()

    async def on_letter(self, letter: OpenedLetter) -> str:
        """The mailbox inbox's handler of peering letters: the outcome to record."""
        try:
            if letter.payload_type == REQUEST_LETTER:
                record: ConnectionRequest | ConnectionAcceptance = ConnectionRequest.from_wire(
                    letter.payload
                )
            else:
                record = ConnectionAcceptance.from_wire(letter.payload)
            if (record.from_did, record.from_device) != (letter.sender_did, letter.sender_device):
                raise PeeringRefused("untrusted_device", "the letter's sender did not sign it")
            if isinstance(record, ConnectionRequest):
                await self._take_request(record)
            else:
                await self._take_acceptance(record)
        except _Dropped:
            return "dropped: blocked sender"
        except (PeeringRefused, RemoteProtocolError) as err:
            log.info("peering.letter_refused", sender=letter.sender_did, code=err.code)
            return f"refused: {err.code}: {err}"
        log.info("peering.letter_taken", type=letter.payload_type, sender=letter.sender_did)
        return "applied"

    async def _take_request(self, request: ConnectionRequest) -> ConnectionAcceptance | None:
        """Check and keep `request`; the acceptance if it was accepted already."""
        if await self._db.read(peering_store.is_blocked, request.from_did):
            log.info("peering.dropped", sender=request.from_did)
            raise _Dropped
        binding = request.check(self._did)
        found = await self._db.read(peering_store.connection_with, request.from_did)
        if found is not None and found.request_id == request.id:
            acceptance = found.acceptance
            return None if acceptance is None else ConnectionAcceptance.from_wire(acceptance)
        if request.token is None and not self._unsolicited.allow("unsolicited"):
            raise PeeringRefused(
                "rate_limited", "too many friend requests without an invite: try again later"
            )
        row = RequestRow(
            did=request.from_did,
            request_id=request.id,
            request=request.to_wire(),
            encryption_key=binding.encryption_public_key,
            encryption_binding=request.encryption_binding,
            devices=(request.from_device,),
            addrs=request.addrs,
            relays=request.relays,
            message=request.message,
            token=request.token,
        )
        if await self._db.write(peering_store.save_incoming_request, row, now_ms()):
            log.info(
                "peering.request_received", sender=request.from_did, solicited=bool(request.token)
            )
        return None

    async def _take_acceptance(self, acceptance: ConnectionAcceptance) -> None:
        if await self._db.read(peering_store.is_blocked, acceptance.from_did):
            raise _Dropped
        found = await self._db.read(peering_store.connection_with, acceptance.from_did)
        if found is None or found.direction != "outgoing":
            raise PeeringRefused("unknown_request", "we sent no request to this DID")
        acceptance.check_answers(ConnectionRequest.from_wire(found.request), self._did)
        taken = await self._db.write(_save_acceptance, acceptance, now_ms())
        if taken:
            log.info("peering.connected", did=acceptance.from_did)
            self.on_connected(acceptance.from_did)

    # --- sending ------------------------------------------------------------------------------

    async def _deliver(
        self,
        addrs: tuple[str, ...],
        relays: tuple[str, ...],
        did: str,
        key: bytes,
        letter_type: str,
        record: ConnectionRequest | ConnectionAcceptance,
    ) -> tuple[str, Received | AcceptanceTaken | None]:
        """Hand `record` to a device at `addrs`, else deposit it at `relays`: (how, answer)."""
        problems: list[str] = []
        for addr in addrs:
            try:
                return "direct", await self._send_direct(addr, record)
            except _Unreachable as err:
                problems.append(str(err))
        if not relays:
            raise PeeringFailed(
                "unreachable",
                f"{did} could not be reached ({'; '.join(problems) or 'no address'}) and names "
                "no relay: try again when they are online",
            )
        envelope = self._seal(did, key, letter_type, record.to_wire())
        me = await self._db.read(_me, self._local)
        stored = []
        for relay in relays:
            info = info_from_p2p_addr(Multiaddr(relay))
            try:
                async with open_link(
                    self._host, str(info.peer_id), [str(a) for a in info.addrs]
                ) as link:
                    await link.introduce(me.store_credentials)
                    await link.deposit_one(envelope)
                stored.append(str(info.peer_id))
            except MailboxRefused as err:
                if err.code == "duplicate":
                    stored.append(str(info.peer_id))
                else:
                    problems.append(f"relay {info.peer_id} refused: {err}")
            except RelayUnreachable as err:
                problems.append(str(err))
        if not stored:
            raise PeeringFailed(
                "unreachable",
                f"neither {did} nor its relays took the {letter_type}: {'; '.join(problems)}",
            )
        return f"relay {', '.join(stored)}", None

    async def _send_direct(
        self, addr: str, record: ConnectionRequest | ConnectionAcceptance
    ) -> Received | AcceptanceTaken:
        try:
            info = info_from_p2p_addr(Multiaddr(addr))
        except Exception as err:  # multiaddr raises several unrelated types
            raise _Unreachable(f"{addr} is not a multiaddr with /p2p/") from err
        client = PeeringClient()
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                self._host.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
                await self._host.connect(info)
                stream = await self._host.new_stream(info.peer_id, [TProtocol(PEERING_PROTOCOL_ID)])
        except (trio.TooSlowError, StreamError, BaseLibp2pError, OSError) as err:
            raise _Unreachable(f"{info.peer_id}: {err or type(err).__name__}") from err
        try:
            if isinstance(record, ConnectionRequest):
                await stream.write(client.send_request(record))
            else:
                await stream.write(client.send_acceptance(record))
            answer = await _next(client, stream, ANSWER_TIMEOUT_S)
            if isinstance(answer, StreamEnded):
                raise ClosedEarly("the stream ended")
            client.finish()
        except ClosedEarly as err:
            raise PeeringFailed(
                "no_answer", "they did not answer the request (they may have blocked you)"
            ) from err
        except RemoteProtocolError as err:
            raise PeeringFailed(err.code, f"their node misbehaved: {err}") from err
        except (trio.TooSlowError, StreamError, BaseLibp2pError) as err:
            raise _Unreachable(f"{info.peer_id}: {err or type(err).__name__}") from err
        finally:
            await close_quietly(stream)
        if isinstance(answer, PeeringError):
            raise PeeringFailed(answer.code, f"they refused: {answer.message} ({answer.code})")
        assert isinstance(answer, Received | AcceptanceTaken)
        return answer

    def _seal(self, did: str, key: bytes, letter_type: str, payload: bytes) -> Any:
        now = now_ms()
        letter = Letter.create(
            signing_key=self._key,
            recipient_did=did,
            sender_did=self._did,
            payload_type=letter_type,
            payload=payload,
            created_at_ms=now,
        )
        return seal(
            letter,
            recipient_did=did,
            recipient_x25519_public_key=key,
            expires_at_ms=now + DEFAULT_TTL_MS,
            ephemeral_private_key=os.urandom(32),
        )

    def _addrs(self) -> list[str]:
        return [str(a) for a in self._host.get_addrs()]


async def _next(
    session: PeeringServer | PeeringClient, stream: INetStream, timeout_s: float
) -> Any:
    with trio.fail_after(timeout_s):
        while True:
            event = session.next_event()
            if not isinstance(event, NeedData):
                return event
            session.receive_data(await read_some(stream, MAX_FRAME))


# Blocking functions of the database, run by node.database.Database.


class _Me:
    def __init__(self, binding: bytes, credentials: Any, relays: tuple[str, ...]) -> None:
        self.binding = binding
        self.store_credentials = credentials
        self.credentials = Credentials(
            certificate=credentials.certificate,
            chain=tuple(credentials.chain),
            rotations=tuple(credentials.rotations),
        )
        self.relays = relays


def _me(db: SqliteDatabase, local: str) -> _Me:
    identity = load_identity(db)
    assert identity is not None
    relays = relay_list(db)
    return _Me(
        identity.encryption_key_binding,
        credentials_of(trust_state(db), local),
        tuple(
            f"{addrs[0]}/p2p/{peer}" for peer, addrs in (relays.relays if relays else ()) if addrs
        )[:8],
    )


def _connections(db: SqliteDatabase, state: str) -> list[peering_store.Connection]:
    return peering_store.connections(db, state=state)


def _save_acceptance(db: SqliteDatabase, acceptance: ConnectionAcceptance, now: int) -> bool:
    return peering_store.save_acceptance(
        db,
        did=acceptance.from_did,
        request_id=acceptance.request_id,
        acceptance=acceptance.to_wire(),
        devices=(acceptance.from_device,),
        addrs=acceptance.addrs,
        relays=acceptance.relays,
        now_ms=now,
    )
