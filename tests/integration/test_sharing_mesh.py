"""The sharing mesh end to end, with real processes: Alice, her friends Bob and Carol, Dave (a
stranger connected only to Bob) and a relay R.

Alice befriends Bob and Carol and makes the circle {Bob, Carol}; shares ACU1 with it: both read
it. She removes Carol and shares ACU2 with the circle: Bob reads it, Carol does not. She shares
ACU3 with Bob while he is offline: he gets it through R when he returns (Alice is offline by
then, so R is the only way it can come). R's database holds no plaintext of any of them. She
publishes ACU1: Dave receives and verifies it through Bob. Revoking the global grant is refused
by the API and by SQLite.

And the share pull's bad input: a stranger, someone using a friend's credentials, garbage and an
oversized frame are refused with a code, and the grantor goes on serving its friend."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.host import build_host
from node.identity import DATABASE_FILE, load_local_identity
from node.local_cluster import NodeProcess
from node.streams import read_some
from protocols.framing import FrameDecoder, NeedData
from protocols.share_sync import (
    MAX_FRAME,
    SHARE_PROTOCOL_ID,
    Page,
    Pull,
    Refused,
    decode_reply,
    encode,
)
from store.database import open_database
from store.devices import credentials_of, trust_state
from tests.integration.conftest import StartNode, run_cli
from tests.integration.test_mailbox import free_port, start_relay

WAIT_S = 60
MARKERS = ("MARKER-acu1-7f3a", "MARKER-acu2-91bc", "MARKER-acu3-c04d")


def conversation(path: Path) -> Path:
    messages = []
    for number, marker in enumerate(MARKERS, start=1):
        messages += [
            {
                "role": "user",
                "content": f"Question {number} {marker}",
                "timestamp": f"2024-06-03T08:1{number}:00Z",
            },
            {
                "role": "assistant",
                "content": f"Answer {number}, plain text",
                "timestamp": f"2024-06-03T08:1{number}:30Z",
            },
        ]
    path.write_text(
        json.dumps({"title": "mesh", "provider": "claude", "model": "m", "messages": messages})
    )
    return path


async def cli_json(node: NodeProcess, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return json.loads(result.stdout)


def did(node: NodeProcess) -> str:
    return str(node.ready["did"])


async def befriend(alice: NodeProcess, friend: NodeProcess) -> None:
    code = (await cli_json(alice, "invite"))["code"]
    await cli_json(friend, "friend", "add", code)
    await cli_json(alice, "friend", "accept", did(friend), "--trust", "close")
    with trio.fail_after(WAIT_S):
        while did(alice) not in [
            f["did"] for f in (await cli_json(friend, "friend", "list"))["friends"]
        ]:
            await trio.sleep(0.2)


async def received(node: NodeProcess) -> dict[str, str]:
    """ACU id -> content of what friends shared with `node`."""
    acus = (await cli_json(node, "acus", "list", "--received"))["acus"]
    return {a["acu_id"]: a["content"] for a in acus}


async def wait_received(node: NodeProcess, acu_id: str) -> str:
    with trio.fail_after(WAIT_S):
        while acu_id not in (found := await received(node)):
            await trio.sleep(0.2)
    return found[acu_id]


def file_bytes(data_dir: Path) -> bytes:
    """The relay's database as it is on disk, WAL included."""
    return b"".join(
        path.read_bytes()
        for path in (data_dir / "vivim.db", data_dir / "vivim.db-wal")
        if path.exists()
    )


async def test_circles_direct_shares_offline_delivery_and_a_global_publication(
    start: StartNode, tmp_path: Path
) -> None:
    relay = await start_relay(start, free_port())
    alice = await start("alice", bootstrap=[relay.addr])
    bob = await start("bob", bootstrap=[relay.addr])
    carol = await start("carol", bootstrap=[relay.addr])
    await cli_json(bob, "mailbox", "register", relay.addr)

    await cli_json(alice, "import", str(conversation(tmp_path / "mesh.json")))
    acus = (await cli_json(alice, "acus", "list", "--limit", "50"))["acus"]
    acu1, acu2, acu3 = (next(a["id"] for a in acus if marker in a["content"]) for marker in MARKERS)

    await befriend(alice, bob)
    await befriend(alice, carol)
    await cli_json(alice, "circle", "create", "friends")
    await cli_json(alice, "circle", "add", "friends", did(bob))
    await cli_json(alice, "circle", "add", "friends", did(carol))

    # ACU1 to the circle: both members read it.
    await cli_json(alice, "share", acu1, "--circle", "friends")
    assert MARKERS[0] in await wait_received(bob, acu1)
    assert MARKERS[0] in await wait_received(carol, acu1)

    # Carol leaves; ACU2 to the circle: Bob reads it, Carol gets nothing of it.
    removed = await cli_json(alice, "circle", "remove", "friends", did(carol))
    assert removed["members"] == [did(bob)]
    await cli_json(alice, "share", acu2, "--circle", "friends")
    assert MARKERS[1] in await wait_received(bob, acu2)
    # Carol comes back and pulls from Alice again: still nothing of ACU2.
    await carol.stop()
    pulls = carol.stderr_path.read_text().count('"share.pulled"')
    carol = await start("carol", bootstrap=[relay.addr, alice.addr])
    with trio.fail_after(WAIT_S):
        while carol.stderr_path.read_text().count('"share.pulled"') <= pulls:
            await trio.sleep(0.2)
    assert acu2 not in await received(carol)
    access = await cli_json(alice, "access", acu2, did(carol))
    assert access["rule"] == "denied"

    # ACU3 to Bob while he is away: Alice mails it to his relay, then leaves too.
    await bob.stop()
    await cli_json(alice, "share", acu3, "--with", did(bob))
    with trio.fail_after(WAIT_S):
        while '"share.mailed"' not in alice.stderr_path.read_text():
            await trio.sleep(0.2)
    await alice.stop()
    bob = await start("bob", bootstrap=[relay.addr])
    assert MARKERS[2] in await wait_received(bob, acu3)

    # The relay held ACU3 and saw the others pass: no plaintext of any of them.
    held = file_bytes(relay.data_dir)
    for marker in MARKERS:
        assert marker.encode() not in held

    # ACU1 goes public: Dave, connected only to Bob, gets and verifies it.
    alice = await start("alice", bootstrap=[relay.addr, bob.addr])
    dave = await start("dave", bootstrap=[bob.addr])
    # `share --global` is `publish`: the level, the irrevocable grant, the publication, gossip.
    published = await cli_json(alice, "share", acu1, "--global")
    publication_id = published["publication_id"]
    with trio.fail_after(WAIT_S):
        while publication_id not in json.dumps(await cli_json(dave, "global", "list")):
            await trio.sleep(0.2)
    (arrival,) = [
        json.loads(line)
        for line in dave.stderr_path.read_text().splitlines()
        if '"commons.received"' in line and publication_id in line
    ]
    # By gossip once Dave is in Bob's GossipSub mesh (about a heartbeat after connecting), else
    # by the pull a (re)connection makes; test_commons.py checks the gossip path on its own.
    assert arrival["via"] in ("gossip", "pull")
    shown = await cli_json(dave, "global", "show", publication_id)
    assert MARKERS[0] in json.dumps(shown)
    assert did(alice) in json.dumps(shown)

    # The global grant cannot be revoked: the API says so, and SQLite refuses it whatever
    # writes it.
    (grant,) = [
        s for s in (await cli_json(alice, "shares", acu1))["shares"] if s["target_kind"] == "global"
    ]
    refused = await run_cli("share", "revoke", grant["id"], "--data-dir", str(alice.data_dir))
    assert refused.returncode != 0
    assert b"permanent" in refused.stderr
    conn = sqlite3.connect(alice.data_dir / "vivim.db")
    try:
        raised = None
        try:
            with conn:
                conn.execute(
                    "INSERT INTO grant_revocation (id, grant_id, acu_id, wire, revoked_at_ms)"
                    " VALUES ('forged', ?, ?, x'00', 1)",
                    (grant["id"], acu1),
                )
        except sqlite3.DatabaseError as err:
            raised = str(err)
        assert raised is not None and "IRREVOCABLE" in raised
    finally:
        conn.close()

    # Only ciphertext of the private shares ever reached the relay.
    held = file_bytes(relay.data_dir)
    assert MARKERS[1].encode() not in held
    assert MARKERS[2].encode() not in held


def stored_credentials(data_dir: Path) -> tuple[bytes, Any]:
    """A device's seed and its credentials (certificate, chain, rotations), from its files."""
    identity = load_local_identity(data_dir)
    db = open_database(data_dir / DATABASE_FILE)
    try:
        return identity.device_seed, credentials_of(trust_state(db), identity.peer_id)
    finally:
        db.close()


async def ask(host: Any, peer: Any, frame: bytes) -> Refused | Page:
    stream = await host.new_stream(peer, [TProtocol(SHARE_PROTOCOL_ID)])
    await stream.write(frame)
    decoder = FrameDecoder(MAX_FRAME)
    while isinstance(reply := decoder.next_frame(), NeedData):
        decoder.receive_data(await read_some(stream, MAX_FRAME))
    await stream.close()
    return decode_reply(reply)


async def test_pulls_by_strangers_impostors_and_garbage_are_refused_and_friends_still_served(
    start: StartNode, tmp_path: Path
) -> None:
    alice = await start("alice")
    bob = await start("bob")
    await cli_json(alice, "import", str(conversation(tmp_path / "mesh.json")))
    acus = (await cli_json(alice, "acus", "list", "--limit", "50"))["acus"]
    acu1, acu2 = (next(a["id"] for a in acus if marker in a["content"]) for marker in MARKERS[:2])
    await befriend(alice, bob)
    await cli_json(alice, "share", acu1, "--with", did(bob))
    assert MARKERS[0] in await wait_received(bob, acu1)

    eve_dir = tmp_path / "eve"
    init = await run_cli("init", "--data-dir", str(eve_dir))
    assert init.returncode == 0, init.stderr.decode()
    eve_seed, eve = stored_credentials(eve_dir)
    _, bobs = stored_credentials(bob.data_dir)

    def pull(credentials: Any) -> bytes:
        return encode(
            Pull(
                certificate=credentials.certificate,
                chain=tuple(credentials.chain),
                rotations=tuple(credentials.rotations),
                after=0,
            )
        )

    host = build_host(eve_seed)
    info = info_from_p2p_addr(Multiaddr(alice.addr))
    async with host.run([]):
        with trio.fail_after(WAIT_S):
            await host.connect(info)
            # A stranger with her own, valid credentials: not a friend.
            stranger = await ask(host, info.peer_id, pull(eve))
            assert isinstance(stranger, Refused) and stranger.code == "unauthorized"
            # Bob's credentials on Eve's connection: they are not this peer's.
            impostor = await ask(host, info.peer_id, pull(bobs))
            assert isinstance(impostor, Refused) and impostor.code == "unauthorized"
            # Garbage, and a frame that says it is larger than any frame may be.
            garbage = await ask(host, info.peer_id, b"\x05hello")
            assert isinstance(garbage, Refused) and garbage.code == "malformed"
            too_large = await ask(host, info.peer_id, b"\xff\xff\xff\xff\x0f")
            assert isinstance(too_large, Refused) and too_large.code == "malformed"
        await host.close()

    # Alice serves her friend as before.
    await cli_json(alice, "share", acu2, "--with", did(bob))
    assert MARKERS[1] in await wait_received(bob, acu2)
    assert acu2 not in await received(alice)
