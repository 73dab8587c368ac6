"""Pairing a new device, both ends: the running node approves on /vivim/pair/1.0.0, `init --join`
joins. The protocol itself (messages, MACs, turn-taking) is protocols/pairing.py; this is the
edge: codes, streams, keys and the database.

The approving node keeps its pending codes in memory (`PairingCodes`): a code works once (the
first Hello that names it uses it up, whatever follows, so a wrong proof cannot be retried),
until it expires, and not at all after the node restarts. A refusal is sent to the other side
with a code and a message, and logged here, so both people see why.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.public
import nacl.utils
import structlog
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr
from peewee import SqliteDatabase
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.database import Database
from node.errors import NodeError
from node.streams import close_quietly, read_some, write_quietly
from protocols.errors import PairingApproverNotProven, RemoteProtocolError
from protocols.framing import NeedData, encode_frame
from protocols.pairing import (
    CODE_ID_LENGTH,
    MAX_FRAME,
    PROTOCOL_ID,
    SECRET_LENGTH,
    ApproverProven,
    ApproverSession,
    HelloReceived,
    JoinerProven,
    JoinerSession,
    PairingCode,
    Refusal,
    Refused,
    Welcome,
)
from protocols.peer_id import ed25519_public_key_from_peer_id
from store import devices
from store.identity import load_identity
from store.vault_log import LocalSigner

log = structlog.get_logger()

# A code works at most this long (the CLI offers 1 to 600 s; node/cli_devices.py says why).
MAX_CODE_TTL_S = 600
# A pairing is four small messages; a peer that takes longer than this is gone or stalling.
PAIRING_TIMEOUT_S = 30.0
READ_SIZE = MAX_FRAME


class PairingFailed(NodeError):
    """Joining did not work; the message says why and what to do."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class _Pending:
    secret: bytes
    expires_at_ms: int
    used: bool = False


@dataclass
class PairingCodes:
    """The codes this node handed out and has not forgotten yet."""

    _pending: dict[bytes, _Pending] = field(default_factory=dict)

    def issue(
        self, *, did: str, approver: str, addrs: list[str], ttl_s: int, now_ms: int
    ) -> PairingCode:
        self._forget_expired(now_ms)
        code = PairingCode(
            did=did,
            approver=approver,
            addrs=tuple(addrs),
            code_id=secrets.token_bytes(CODE_ID_LENGTH),
            secret=secrets.token_bytes(SECRET_LENGTH),
            expires_at_ms=now_ms + ttl_s * 1000,
        )
        self._pending[code.code_id] = _Pending(code.secret, code.expires_at_ms)
        return code

    def claim(self, code_id: bytes, now_ms: int) -> bytes | Refusal:
        """The secret of a usable code, now used up; else the refusal to send."""
        pending = self._pending.get(code_id)
        if pending is None:
            return Refusal(
                code="pairing_code_unknown",
                message="this device did not issue that code (or restarted since): "
                "run `vivim-node device pair` again for a new one",
            )
        if pending.used:
            return Refusal(
                code="pairing_code_used",
                message="that code was used already; a code works once: run "
                "`vivim-node device pair` again for a new one",
            )
        pending.used = True
        if now_ms >= pending.expires_at_ms:
            return Refusal(
                code="pairing_code_expired",
                message="that code expired; run `vivim-node device pair` again for a new one",
            )
        return pending.secret

    def _forget_expired(self, now_ms: int) -> None:
        # Used and expired codes are kept a day, so a late retry hears "used"/"expired" rather
        # than "unknown"; then forgotten, so the table stays small.
        for code_id in [
            c for c, p in self._pending.items() if now_ms > p.expires_at_ms + 86_400_000
        ]:
            del self._pending[code_id]


def now_ms() -> int:
    return int(time.time() * 1000)


async def serve_pairing(
    stream: INetStream,
    *,
    codes: PairingCodes,
    database: Database,
    signer: LocalSigner,
    encryption_key: bytes,
    on_certified: Callable[[], None] = lambda: None,
) -> None:
    """Answer one joining device on `stream` (the handler of PROTOCOL_ID); `on_certified` is
    called once the device's certificate is in our log (sync announces it)."""
    joiner = str(stream.muxed_conn.peer_id)
    with structlog.contextvars.bound_contextvars(peer_id=joiner, protocol=PROTOCOL_ID):
        try:
            with trio.fail_after(PAIRING_TIMEOUT_S):
                outcome = await _approve(stream, joiner, codes, database, signer, encryption_key)
            log.info("pairing.approved" if outcome is None else "pairing.refused", reason=outcome)
            if outcome is None:
                on_certified()
        except RemoteProtocolError as err:
            log.warning("pairing.failed", error=err.code, message=str(err))
            await _send_quietly(stream, Refusal(code=err.code, message=str(err)[:900]))
        except trio.TooSlowError:
            log.warning("pairing.failed", error="timeout", after_s=PAIRING_TIMEOUT_S)
        except StreamError as err:
            log.warning("pairing.failed", error="stream", message=str(err) or type(err).__name__)
        finally:
            await close_quietly(stream)


async def _approve(
    stream: INetStream,
    joiner: str,
    codes: PairingCodes,
    database: Database,
    signer: LocalSigner,
    encryption_key: bytes,
) -> str | None:
    """Run the approver's side; None when the device joined, else the refusal code."""
    session = ApproverSession(signer.device, joiner)
    box_public_key = b""
    while True:
        event = session.next_event()
        if isinstance(event, NeedData):
            session.receive_data(await read_some(stream, READ_SIZE))
            continue
        if isinstance(event, HelloReceived):
            claimed = codes.claim(event.hello.code_id, now_ms())
            if isinstance(claimed, Refusal):
                await stream.write(session.send(claimed))
                return claimed.code
            box_public_key = event.hello.box_public_key
            await stream.write(
                session.challenge(secret=claimed, approver_nonce=nacl.utils.random(32))
            )
        elif isinstance(event, JoinerProven):
            welcome = await database.write(
                _welcome, signer, joiner, box_public_key, encryption_key, now_ms()
            )
            await stream.write(session.send(welcome))
            log.info("pairing.device_certified", device=joiner)
            return None
        elif isinstance(event, Refused):
            return event.code


def _welcome(
    db: SqliteDatabase,
    signer: LocalSigner,
    joiner: str,
    box_public_key: bytes,
    encryption_key: bytes,
    now: int,
) -> Welcome:
    """Certify the joining device (an op in our log) and build what it needs to act for the
    DID: its certificate, our chain, the key rotations, the encryption key sealed to it."""
    identity = load_identity(db)
    assert identity is not None
    credentials = devices.certify(db, signer, ed25519_public_key_from_peer_id(joiner), now)
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(box_public_key)).encrypt(encryption_key)
    return Welcome(
        did=signer.author,
        identity_rotations=credentials.rotations,
        encryption_key_binding=identity.encryption_key_binding,
        certificate=credentials.certificate,
        chain=credentials.chain,
        sealed_encryption_key=sealed,
    )


async def _send_quietly(stream: INetStream, refusal: Refusal) -> None:
    """Framed outside the session, which stopped at the error it raised."""
    await write_quietly(stream, encode_frame(refusal.to_wire(), MAX_FRAME))


def _joiner_message(err: RemoteProtocolError) -> str:
    if isinstance(err, PairingApproverNotProven):
        return (
            "the pairing code does not match the one the device at that address issued (a code "
            "from another device, or someone else answering there); nothing was written. Run "
            "`vivim-node device pair` on the approving device and use its new code"
        )
    return f"pairing failed: {err} ({err.code}); nothing was written"


async def run_joiner(
    host: IHost, code: PairingCode, device_peer_id: str
) -> tuple[Welcome, nacl.public.PrivateKey]:
    """Dial the approver named in `code`, pair, and return its Welcome and the box key that
    opens the sealed encryption key. Raises `PairingFailed` or a `ProtocolError`."""
    box_key = nacl.public.PrivateKey.generate()
    session = JoinerSession(code, device_peer_id, nacl.utils.random(32), bytes(box_key.public_key))
    info = PeerInfo(ID.from_base58(code.approver), [Multiaddr(a) for a in code.addrs])
    try:
        with trio.fail_after(PAIRING_TIMEOUT_S):
            try:
                await host.connect(info)
            except (BaseLibp2pError, OSError) as err:
                raise PairingFailed(
                    f"cannot reach the approving device at {', '.join(code.addrs)}: {err}. Is "
                    "its node running, and listening on an address this device can reach?",
                    unreachable=True,
                ) from err
            stream = await host.new_stream(info.peer_id, [TProtocol(PROTOCOL_ID)])
            try:
                await stream.write(session.start())
                while True:
                    event = session.next_event()
                    if isinstance(event, NeedData):
                        session.receive_data(await read_some(stream, READ_SIZE))
                    elif isinstance(event, ApproverProven):
                        await stream.write(session.proof())
                    elif isinstance(event, Welcome):
                        return event, box_key
                    elif isinstance(event, Refused):
                        raise PairingFailed(f"the approving device refused: {event.message}")
            except RemoteProtocolError as err:
                # Tell the approver too, so its person sees why in its log.
                await _send_quietly(stream, Refusal(code=err.code, message=str(err)[:900]))
                raise PairingFailed(_joiner_message(err)) from err
            finally:
                await close_quietly(stream)
    except trio.TooSlowError as err:
        raise PairingFailed(
            f"the approving device did not answer within {PAIRING_TIMEOUT_S:.0f} s"
        ) from err
    except StreamError as err:
        raise PairingFailed(f"the connection to the approving device broke: {err}") from err


def pairing_route(
    codes: PairingCodes, did: str, peer_id: str, addrs: Callable[[], list[str]]
) -> Route:
    """POST /v1/pairing/codes {"ttl_s"}: a new one-time code (the caller guards it with the
    API token). The code carries this node's current addresses, without their /p2p part."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        ttl_s = body.get("ttl_s") if isinstance(body, dict) else None
        if type(ttl_s) is not int or not 1 <= ttl_s <= MAX_CODE_TTL_S:
            return JSONResponse(
                {
                    "error": "bad_request",
                    "message": f"ttl_s must be an integer from 1 to {MAX_CODE_TTL_S}",
                },
                status_code=400,
            )
        dialable = [a.split("/p2p/")[0] for a in addrs()]
        code = codes.issue(did=did, approver=peer_id, addrs=dialable, ttl_s=ttl_s, now_ms=now_ms())
        log.info("pairing.code_issued", expires_at_ms=code.expires_at_ms, addrs=dialable)
        return JSONResponse({"code": code.to_text(), "expires_at_ms": code.expires_at_ms})

    return Route("/v1/pairing/codes", endpoint, methods=["POST"])
