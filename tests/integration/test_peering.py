"""Friends with real processes: invite, request, accept with a trust level, both sides list each
other holding both signatures; a blocked DID's request is dropped; a forged request and a spent
token are refused; a request to an offline person goes through their relay and arrives when
they start."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import nacl.signing
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.host import build_host
from node.identity import DATABASE_FILE, load_local_identity
from node.local_cluster import NodeProcess
from node.streams import read_some
from protocols.peering import ConnectionRequest, Credentials, InviteCode
from protocols.peering_session import (
    MAX_FRAME,
    PEERING_PROTOCOL_ID,
    NeedData,
    PeeringClient,
    PeeringError,
)
from store.database import open_database
from store.devices import credentials_of, trust_state
from store.identity import load_identity
from tests.integration.conftest import StartNode, run_cli
from tests.integration.test_mailbox import free_port, start_relay

WAIT_S = 60


async def cli_json(node: NodeProcess, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return json.loads(result.stdout)


async def cli_fails(node: NodeProcess, *args: str) -> str:
    result = await run_cli(*args, "--data-dir", str(node.data_dir))
    assert result.returncode != 0, result.stdout.decode()
    return result.stderr.decode() + result.stdout.decode()


async def invite(node: NodeProcess) -> str:
    return str((await cli_json(node, "invite"))["code"])


async def friends(node: NodeProcess) -> list[dict[str, Any]]:
    return list((await cli_json(node, "friend", "list"))["friends"])


async def requests(node: NodeProcess) -> list[dict[str, Any]]:
    return list((await cli_json(node, "friend", "requests"))["requests"])


def did(node: NodeProcess) -> str:
    return str(node.ready["did"])


async def test_invite_request_accept_and_both_list_each_other(start: StartNode) -> None:
    alice = await start("alice")
    bob = await start("bob")
    code = await invite(alice)
    assert code.startswith("vivim-invite:")
    sent = await cli_json(bob, "friend", "add", code, "--message", "hi Alice, Bob here")
    assert (sent["did"], sent["via"], sent["state"]) == (did(alice), "direct", "pending")

    (incoming,) = await requests(alice)
    assert incoming["did"] == did(bob)
    assert incoming["direction"] == "incoming"
    assert incoming["via_invite"] is True
    assert incoming["message"] == "hi Alice, Bob here"
    assert incoming["devices"] == [bob.peer_id]
    (outgoing,) = await requests(bob)
    assert (outgoing["did"], outgoing["direction"]) == (did(alice), "outgoing")

    accepted = await cli_json(alice, "friend", "accept", did(bob), "--trust", "close")
    assert (accepted["trust"], accepted["via"]) == ("close", "direct")

    (bob_seen_by_alice,) = await friends(alice)
    (alice_seen_by_bob,) = await friends(bob)
    assert bob_seen_by_alice["did"] == did(bob)
    assert bob_seen_by_alice["trust"] == "close"
    assert bob_seen_by_alice["devices"] == [bob.peer_id]
    assert alice_seen_by_bob["did"] == did(alice)
    assert alice_seen_by_bob["devices"] == [alice.peer_id]
    # Both sides hold the same two records, each with its signature.
    for side in (bob_seen_by_alice, alice_seen_by_bob):
        assert len(bytes.fromhex(side["request_signature"])) == 64
        assert len(bytes.fromhex(side["acceptance_signature"])) == 64
    for key in ("request_id", "request_signature", "acceptance_signature"):
        assert bob_seen_by_alice[key] == alice_seen_by_bob[key]
    assert await requests(alice) == [] and await requests(bob) == []

    # Nothing more to ask: a friend already; the spent token does not work for anyone else.
    assert "friend already" in await cli_fails(bob, "friend", "add", code)
    carol = await start("carol")
    assert "token_refused" in await cli_fails(carol, "friend", "add", code)
    assert [f["did"] for f in await friends(alice)] == [did(bob)]


async def test_a_blocked_did_is_dropped_and_bad_input_is_refused(start: StartNode) -> None:
    alice = await start("alice")
    mallory = await start("mallory")
    blocked = await cli_json(alice, "friend", "block", did(mallory))
    assert blocked == {"did": did(mallory), "blocked": True, "already": False}
    output = await cli_fails(mallory, "friend", "add", await invite(alice))
    assert "did not answer" in output
    assert await requests(alice) == []

    # Bad input from a device that is not blocked: a forged signature, then garbage.
    eve = await start("eve")
    code = InviteCode.from_text(await invite(alice))
    await eve.stop()
    identity = load_local_identity(eve.data_dir)
    db = open_database(eve.data_dir / DATABASE_FILE)
    try:
        stored = credentials_of(trust_state(db), identity.peer_id)
        me = load_identity(db)
        assert me is not None
    finally:
        db.close()
    request = ConnectionRequest.create(
        signing_key=nacl.signing.SigningKey(identity.device_seed),
        from_did=identity.did,
        to_did=code.did,
        credentials=Credentials(
            certificate=stored.certificate, chain=stored.chain, rotations=stored.rotations
        ),
        encryption_binding=me.encryption_key_binding,
        addrs=(),
        relays=(),
        token=code.token,
        message="",
        created_at_ms=0,
    )
    forged = dataclasses.replace(request, signature=bytes(64))
    other = ConnectionRequest.create(
        signing_key=nacl.signing.SigningKey.generate(),
        from_did=request.from_did,
        to_did=request.to_did,
        credentials=Credentials(
            certificate=request.certificate, chain=request.chain, rotations=request.rotations
        ),
        encryption_binding=request.encryption_binding,
        addrs=(),
        relays=(),
        token=code.token,
        message="",
        created_at_ms=0,
    )
    host = build_host(identity.device_seed)
    info = info_from_p2p_addr(Multiaddr(alice.addr))
    async with host.run([]):
        with trio.fail_after(WAIT_S):
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(PEERING_PROTOCOL_ID)])
            client = PeeringClient()
            await stream.write(client.send_request(forged))
            while isinstance(answer := client.next_event(), NeedData):
                client.receive_data(await read_some(stream, MAX_FRAME))
            assert isinstance(answer, PeeringError)
            assert answer.code == "bad_signature"
            # A request signed by someone other than the stream's peer is refused too.
            await stream.write(client.send_request(other))
            while isinstance(answer := client.next_event(), NeedData):
                client.receive_data(await read_some(stream, MAX_FRAME))
            assert isinstance(answer, PeeringError)
            assert answer.code == "untrusted_device"
            await stream.close()
            garbage = await host.new_stream(info.peer_id, [TProtocol(PEERING_PROTOCOL_ID)])
            await garbage.write(b"\x05hello")
            reader = PeeringClient()
            reader.send_request(request)  # outstanding: the server's error answers it
            while isinstance(answer := reader.next_event(), NeedData):
                reader.receive_data(await read_some(garbage, MAX_FRAME))
            assert isinstance(answer, PeeringError)
            assert answer.code == "malformed"
        await host.close()
    assert await requests(alice) == []
    # Neither the forged nor the garbage request spent the token: Eve's real one uses it.
    eve = await start("eve")
    assert (await cli_json(eve, "friend", "add", code.to_text()))["state"] == "pending"
    assert [r["did"] for r in await requests(alice)] == [did(eve)]

    # Unblocked, Mallory's requests are taken again.
    unblocked = await cli_json(alice, "friend", "unblock", did(mallory))
    assert unblocked == {"did": did(mallory), "blocked": False, "was_blocked": True}
    assert (await cli_json(mallory, "friend", "add", await invite(alice)))["state"] == "pending"
    assert {r["did"] for r in await requests(alice)} == {did(eve), did(mallory)}


async def test_a_request_to_an_offline_person_goes_through_their_relay(
    start: StartNode, tmp_path: Path
) -> None:
    relay = await start_relay(start, free_port())
    alice = await start("alice", bootstrap=[relay.addr])
    bob = await start("bob")
    # A relay takes mail only from senders the recipient allows; while an invite code of
    # Alice's is out, her registration lets anyone deposit, so Bob's request can wait there.
    await cli_json(alice, "mailbox", "register", relay.addr)
    code = await invite(alice)
    assert InviteCode.from_text(code).relays == (relay.addr,)
    await alice.stop()

    sent = await cli_json(bob, "friend", "add", code)
    assert sent["via"] == f"relay {relay.peer_id}"
    assert (await requests(bob))[0]["direction"] == "outgoing"

    alice = await start("alice", bootstrap=[relay.addr])
    with trio.fail_after(WAIT_S):
        while not (incoming := await requests(alice)):
            await trio.sleep(0.2)
    assert incoming[0]["did"] == did(bob)
    assert incoming[0]["via_invite"] is True
    # Bob is online: the acceptance goes to him directly.
    accepted = await cli_json(alice, "friend", "accept", did(bob))
    assert accepted["via"] == "direct"
    assert [f["did"] for f in await friends(bob)] == [did(alice)]


async def test_an_acceptance_made_while_the_requester_was_away_reaches_them_when_they_return(
    start: StartNode,
) -> None:
    alice = await start("alice")
    bob = await start("bob")
    sent = await cli_json(bob, "friend", "add", await invite(alice))
    assert sent["state"] == "pending"
    await bob.stop()

    # Bob is away and has no relay: the acceptance cannot be delivered now.
    accepted = await cli_json(alice, "friend", "accept", did(bob))
    assert accepted["via"].startswith("not delivered yet")
    assert [f["did"] for f in await friends(alice)] == [did(bob)]

    # Bob comes back (his node dials Alice, whom he asked): Alice's node hands him the
    # acceptance on the connection, with nobody running `friend accept` again.
    bob = await start("bob")
    with trio.fail_after(WAIT_S):
        while not await friends(bob):
            await trio.sleep(0.2)
    (alice_seen,) = await friends(bob)
    assert alice_seen["did"] == did(alice)
    assert '"peering.acceptance_confirmed"' in alice.stderr_path.read_text()
