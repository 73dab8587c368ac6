"""Mailboxes with real processes: a relay holds a device's ops while the other device is away,
across a relay restart and a SIGKILL; the recipient takes them all and the relay ends empty."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.host import build_host
from node.identity import load_local_identity
from node.keys import encryption_key_file
from node.local_cluster import NodeProcess
from node.mailbox_link import MailboxRefused, RelayLink, open_link
from protocols.envelope import Envelope, Letter, seal
from protocols.framing import encode_varint
from protocols.mailbox import MAILBOX_PROTOCOL_ID, MAX_FRAME, MailboxClient, MailboxError
from protocols.mailbox_records import RelayRegistration
from protocols.peer_id import peer_id_from_ed25519_public_key
from store.database import open_database
from store.devices import Credentials, certify, credentials_of, trust_state
from store.vault_log import LocalSigner
from tests.integration.conftest import FAST_REDIAL_ENV, StartNode, run_cli
from tests.integration.test_sync import conversation_file, family, import_file, verify

WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_relay(start: StartNode, port: int, **env: str) -> NodeProcess:
    return await start(
        "relay",
        listen=[f"/ip4/127.0.0.1/tcp/{port}"],
        env={**FAST_REDIAL_ENV, "VIVIM_RELAY": "1", **env},
    )


async def cli_json(node: NodeProcess, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return json.loads(result.stdout)


async def mailbox_status(node: NodeProcess) -> Any:
    return await cli_json(node, "mailbox", "status")


async def relay_status(node: NodeProcess) -> Any:
    return await cli_json(node, "relay", "status")


async def own_head(node: NodeProcess) -> int:
    status = await cli_json(node, "sync", "status")
    return int(status["heads"].get(node.peer_id, 0))


async def heads(node: NodeProcess) -> dict[str, int]:
    return dict((await cli_json(node, "sync", "status"))["heads"])


async def test_a_relay_holds_a_devices_ops_until_the_other_device_takes_them(
    start: StartNode, tmp_path: Path
) -> None:
    port = free_port()
    relay = await start_relay(start, port)
    first, second = await family(start, tmp_path, 2)
    await cli_json(first, "mailbox", "register", relay.addr)
    # The relay list reaches the second device by sync; it registers too.
    with trio.fail_after(WAIT_S):
        while not (await mailbox_status(second))["relays"]:
            await trio.sleep(0.1)
    await cli_json(second, "mailbox", "register", relay.addr)
    assert [r["relay"] for r in (await mailbox_status(second))["relays"]] == [relay.peer_id]

    await second.stop()
    before = await own_head(first)
    n = 0
    while await own_head(first) - before < 1000:
        await import_file(first, conversation_file(tmp_path / f"away{n}.json", f"away {n}", 40))
        n += 1
    written = await own_head(first)
    with trio.fail_after(WAIT_S):
        while (await mailbox_status(first))["outbox_envelopes"] or not (await relay_status(relay))[
            "envelopes"
        ]:
            await trio.sleep(0.1)
    held = (await relay_status(relay))["envelopes"]
    await first.stop()

    # The relay keeps the mail across a clean restart and a SIGKILL.
    await relay.stop()
    relay = await start_relay(start, port)
    assert (await relay_status(relay))["envelopes"] == held
    await relay.stop(signal.SIGKILL)
    relay = await start_relay(start, port)
    assert (await relay_status(relay))["envelopes"] == held

    second = await start("device-1")
    with trio.fail_after(WAIT_S):
        while (await heads(second)).get(first.peer_id, 0) < written:
            await trio.sleep(0.2)
        while (await relay_status(relay))["envelopes"]:
            await trio.sleep(0.1)
    await second.stop()
    await verify(second)
    status = await mailbox_status(second)
    assert status["received"] == held
    assert status["received_by_outcome"] == {"applied": held}


# --- refusals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A device of an identity, driven from this process: its key, its credentials and (in
    `linked`) a libp2p host of its own, to talk to a relay as a node would."""

    did: str
    peer_id: str
    seed: bytes
    x25519_public: bytes
    credentials: Credentials

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    def envelope(self, to: Device, size: int, *, ttl_ms: int = 3_600_000) -> Envelope:
        """An envelope for `to` whose ciphertext is about `size` bytes."""
        now = int(time.time() * 1000)
        letter = Letter.create(
            signing_key=self.signing_key,
            recipient_did=to.did,
            sender_did=self.did,
            payload_type="test.padding",
            payload=os.urandom(max(0, size - 400)),
            created_at_ms=now,
        )
        return seal(
            letter,
            recipient_did=to.did,
            recipient_x25519_public_key=to.x25519_public,
            expires_at_ms=now + ttl_ms,
            ephemeral_private_key=os.urandom(32),
        )


async def made_device(tmp_path: Path, name: str) -> Device:
    """The first device of a new identity (`vivim-node init`)."""
    data_dir = tmp_path / name
    result = await run_cli("init", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr.decode()
    identity = load_local_identity(data_dir)
    db = open_database(data_dir / "vivim.db")
    try:
        credentials = credentials_of(trust_state(db), identity.peer_id)
    finally:
        db.close()
    return Device(
        did=identity.did,
        peer_id=identity.peer_id,
        seed=identity.device_seed,
        x25519_public=bytes(
            nacl.public.PrivateKey(encryption_key_file(data_dir).read()).public_key
        ),
        credentials=credentials,
    )


def sibling(first: Device, data_dir: Path) -> Device:
    """A second device of `first`'s identity, certified by it in its vault (as pairing does)."""
    seed = os.urandom(32)
    public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
    db = open_database(data_dir / "vivim.db")
    try:
        signer = LocalSigner(author=first.did, device=first.peer_id, signing_key=first.signing_key)
        credentials = certify(db, signer, public_key, int(time.time() * 1000))
    finally:
        db.close()
    return Device(
        did=first.did,
        peer_id=peer_id_from_ed25519_public_key(public_key),
        seed=seed,
        x25519_public=first.x25519_public,
        credentials=credentials,
    )


@asynccontextmanager
async def linked(
    device: Device, relay: NodeProcess, *, introduce: bool = True
) -> AsyncIterator[RelayLink]:
    host = build_host(device.seed)
    info = info_from_p2p_addr(Multiaddr(relay.addr))
    async with host.run([]):
        async with open_link(host, str(info.peer_id), [str(a) for a in info.addrs]) as link:
            if introduce:
                assert await link.introduce(device.credentials) == device.did
            yield link
        await host.close()


async def refused(code: str, work: Awaitable[object]) -> None:
    with pytest.raises(MailboxRefused) as caught:
        await work
    assert caught.value.code == code, str(caught.value)


async def test_each_refusal_says_why_and_leaves_the_relay_unchanged(
    start: StartNode, tmp_path: Path
) -> None:
    relay = await start_relay(
        start,
        free_port(),
        VIVIM_RELAY_MAX_ENVELOPE_BYTES="4096",
        VIVIM_RELAY_SWEEP_INTERVAL_S="0.3",
    )
    owner, stranger = await made_device(tmp_path, "owner"), await made_device(tmp_path, "other")
    phone = sibling(owner, tmp_path / "owner")
    now = int(time.time() * 1000)
    registration = RelayRegistration.create(
        signing_key=owner.signing_key,
        recipient_did=owner.did,
        relay=relay.peer_id,
        quota_bytes=20_000,
        expires_at_ms=now + 3_600_000,
        issued_at_ms=now,
    )
    kept = owner.envelope(owner, 3000)

    async def unchanged() -> Any:
        return await relay.api("/v1/relay/status")

    async with linked(owner, relay) as link:
        await link.register(registration)
        await link.deposit_one(kept)
        before = await unchanged()
        assert before["envelopes"] == 1
        # The same envelope again, and one over the relay's size limit.
        await refused("duplicate", link.deposit_one(kept))
        await refused("too_large", link.deposit_one(owner.envelope(owner, 5000)))
        # The quota: 20,000 bytes hold six envelopes of 3,000, not seven.
        for _ in range(5):
            await link.deposit_one(owner.envelope(owner, 3000))
        full = await unchanged()
        await refused("over_quota", link.deposit_one(owner.envelope(owner, 3000)))
        assert await unchanged() == full
        # A registration for another relay, or signed for another DID, is refused.
        elsewhere = RelayRegistration.create(
            signing_key=owner.signing_key,
            recipient_did=owner.did,
            relay=stranger.peer_id,
            quota_bytes=20_000,
            expires_at_ms=now + 3_600_000,
            issued_at_ms=now + 1,
        )
        await refused("malformed", link.register(elsewhere))

    async with linked(stranger, relay) as link:
        # Deposit for a DID that never registered here, and for one that does not allow us.
        await refused("unregistered_recipient", link.deposit_one(stranger.envelope(stranger, 500)))
        await refused("sender_not_allowed", link.deposit_one(stranger.envelope(owner, 500)))
        # Another DID's device may not list, fetch or ack the owner's mail, nor register for it.
        await refused("unauthorized", link.list_ids(owner.did, None, 10))
        await refused("unauthorized", link.fetch([kept.id]))
        await refused("unauthorized", link.ack([kept.id]))
        await refused("unauthorized", link.unregister(owner.did))
        await refused("unauthorized", link.register(registration))
        assert await unchanged() == full

    async with linked(stranger, relay, introduce=False) as link:
        # Without an introduction the relay does not know who deposits.
        await refused("unauthorized", link.deposit_one(stranger.envelope(owner, 500)))
        # Credentials of another device are refused.
        await refused("unauthorized", link.introduce(owner.credentials))
    assert await unchanged() == full

    async with linked(owner, relay) as link:
        # A device does not get back what it deposited itself (it is for the other devices).
        assert (await link.list_ids(owner.did, None, 100)).ids == ()
    async with linked(phone, relay) as link:
        # Acked mail is gone, and a replay of it is refused even so.
        listed = await link.list_ids(owner.did, None, 100)
        assert kept.id in listed.ids and len(listed.ids) == 6
        assert [e.id for e in await link.fetch([kept.id])] == [kept.id]
        assert await link.ack([kept.id]) == 1
        await refused("duplicate", link.deposit_one(kept))
        assert (await unchanged())["envelopes"] == 5
        # Expired mail is removed by the relay's sweep.
        await link.deposit_one(owner.envelope(owner, 1000, ttl_ms=1000))
        assert (await unchanged())["envelopes"] == 6
    with trio.fail_after(10):
        while (await unchanged())["envelopes"] != 5:
            await trio.sleep(0.1)
    relay_log = relay.stderr_path.read_text()
    assert '"relay.expired_removed"' in relay_log
    assert relay_log.count('"relay.refused"') >= 12


async def test_garbage_on_a_mailbox_stream_gets_an_error_and_the_relay_serves_on(
    start: StartNode, tmp_path: Path
) -> None:
    relay = await start_relay(start, free_port())
    owner = await made_device(tmp_path, "owner")
    host = build_host(owner.seed)
    info = info_from_p2p_addr(Multiaddr(relay.addr))
    async with host.run([]):
        with trio.fail_after(10):
            await host.connect(info)
            for garbage in (b"\x05hello", b"\xff" * 11, encode_varint(MAX_FRAME + 1) + b"x"):
                stream = await host.new_stream(info.peer_id, [TProtocol(MAILBOX_PROTOCOL_ID)])
                await stream.write(garbage)
                client = MailboxClient()
                client.introduce(
                    b"x", [], []
                )  # a request outstanding: the relay's error answers it
                answer = b""
                with contextlib.suppress(StreamEOF):
                    while True:
                        chunk = await stream.read(MAX_FRAME)
                        if not chunk:
                            break
                        answer += chunk
                client.receive_data(answer)
                event = client.next_event()
                assert isinstance(event, MailboxError), answer[:80]
        await host.close()
    async with linked(owner, relay) as link:
        assert (await link.list_ids(owner.did, None, 10)).ids == ()


async def test_a_revoked_device_is_refused_by_the_relay(start: StartNode, tmp_path: Path) -> None:
    relay = await start_relay(start, free_port())
    first, second = await family(start, tmp_path, 2)
    await cli_json(first, "mailbox", "register", relay.addr)
    revoked = await run_cli(
        "device", "revoke", second.peer_id, "--yes", "--data-dir", str(first.data_dir)
    )
    assert revoked.returncode == 0, revoked.stderr.decode()
    # The first device registers again at once, naming the revoked device.
    with trio.fail_after(WAIT_S):
        while relay.stderr_path.read_text().count('"relay.registered"') < 2:
            await trio.sleep(0.1)
    await second.stop()
    identity = load_local_identity(second.data_dir)
    db = open_database(second.data_dir / "vivim.db")
    try:
        credentials = credentials_of(trust_state(db), identity.peer_id)
    finally:
        db.close()
    device = Device(
        did=identity.did,
        peer_id=identity.peer_id,
        seed=identity.device_seed,
        x25519_public=b"",
        credentials=credentials,
    )
    async with linked(device, relay, introduce=False) as link:
        with pytest.raises(MailboxRefused, match="revoked") as caught:
            await link.introduce(credentials)
        assert caught.value.code == "unauthorized"


async def test_a_connected_recipient_is_noticed_and_takes_its_mail_at_once(
    start: StartNode, tmp_path: Path
) -> None:
    relay = await start_relay(start, free_port())
    owner = await made_device(tmp_path, "owner")
    laptop = sibling(owner, tmp_path / "owner")  # certified before the owner's node runs
    node = await start("owner")
    await cli_json(node, "mailbox", "register", relay.addr)
    letter = laptop.envelope(owner, 800)
    async with linked(laptop, relay) as link:
        await link.deposit_one(letter)
    # No reconnection, no restart: the relay's notice is what makes the node fetch.
    with trio.fail_after(10):
        while (await mailbox_status(node))["received"] < 1:
            await trio.sleep(0.05)
    assert '"mailbox.notice"' in node.stderr_path.read_text()
    async with linked(laptop, relay) as link:
        assert await link.fetch([letter.id]) == ()  # acked: the relay no longer holds it
    # A letter of a kind this node does not apply yet is received, recorded and acked.
    assert (await mailbox_status(node))["received_by_outcome"] == {"unknown payload type": 1}


async def test_mail_deposited_at_two_relays_is_applied_once_and_both_end_empty(
    start: StartNode, tmp_path: Path
) -> None:
    relays = [
        await start(f"relay-{n}", env={**FAST_REDIAL_ENV, "VIVIM_RELAY": "1"}) for n in range(2)
    ]
    first, second = await family(start, tmp_path, 2)
    for relay in relays:
        await cli_json(first, "mailbox", "register", relay.addr)
    with trio.fail_after(WAIT_S):
        while len((await mailbox_status(second))["relays"]) < 2:
            await trio.sleep(0.1)
    await second.stop()
    for n in range(3):
        await import_file(first, conversation_file(tmp_path / f"c{n}.json", f"twice {n}"))
    written = await own_head(first)
    with trio.fail_after(WAIT_S):
        while True:
            status = await mailbox_status(first)
            if status["mailed_seq"] >= written and not status["outbox_envelopes"]:
                break
            await trio.sleep(0.1)
    held = [(await relay_status(relay))["envelopes"] for relay in relays]
    assert held[0] == held[1] > 0
    await first.stop()

    second = await start("device-1")
    with trio.fail_after(WAIT_S):
        while (await heads(second)).get(first.peer_id, 0) < written:
            await trio.sleep(0.1)
        for relay in relays:
            while (await relay_status(relay))["envelopes"]:
                await trio.sleep(0.1)
    status = await mailbox_status(second)
    # Each letter was applied once; its copy at the other relay was recognised and only acked.
    assert status["received_by_outcome"] == {"applied": held[0]}
    await second.stop()
    await verify(second)


async def test_a_relay_with_an_allow_list_holds_mail_only_for_those_it_lists(
    start: StartNode, tmp_path: Path
) -> None:
    listed, other = await made_device(tmp_path, "listed"), await made_device(tmp_path, "other")
    relay = await start_relay(start, free_port(), VIVIM_RELAY_ALLOW=listed.did)
    now = int(time.time() * 1000)

    def registration(device: Device) -> RelayRegistration:
        return RelayRegistration.create(
            signing_key=device.signing_key,
            recipient_did=device.did,
            relay=relay.peer_id,
            quota_bytes=10_000,
            expires_at_ms=now + 3_600_000,
            issued_at_ms=now,
        )

    async with linked(other, relay) as link:
        await refused("unauthorized", link.register(registration(other)))
    async with linked(listed, relay) as link:
        await link.register(registration(listed))
    assert (await relay_status(relay))["recipients"] == 1
