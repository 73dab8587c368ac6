"""The global commons with real processes: a publication gossips to a node connected only
through another, a node started later pulls it, a forged one is dropped, and the CLI lists and
shows what is held; a delete is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from node.api_client import ApiError, request_json
from node.commons import TOPIC
from node.host import build_host
from node.local_cluster import NodeProcess
from protocols.canonical import canonical_encode
from protocols.cid import content_id
from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate
from protocols.publication import GlobalPublication, SubjectKind
from protocols.vault_records import acu_id
from tests.integration.conftest import StartNode, run_cli
from tests.integration.test_sync import conversation_file, import_file, logged

WAIT_S = 30


async def cli_json(node: NodeProcess, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return json.loads(result.stdout)


async def held(node: NodeProcess) -> set[str]:
    return {p["id"] for p in await cli_json(node, "global", "list")}


async def wait_held(node: NodeProcess, publication_id: str) -> None:
    with trio.fail_after(WAIT_S):
        while publication_id not in await held(node):
            await trio.sleep(0.1)


async def wait_connected(a: NodeProcess, b: NodeProcess) -> None:
    with trio.fail_after(WAIT_S):
        while b.peer_id not in await a.connected_peers() or a.peer_id not in (
            await b.connected_peers()
        ):
            await trio.sleep(0.1)


def received(node: NodeProcess, publication_id: str) -> list[dict[str, Any]]:
    return [r for r in logged(node, "commons.received") if r["publication_id"] == publication_id]


async def test_gossip_to_a_node_two_hops_away_and_pull_by_a_later_node(
    start: StartNode, tmp_path: Path
) -> None:
    a = await start("a")
    b = await start("b", bootstrap=[a.addr])
    c = await start("c", bootstrap=[b.addr])  # connected to A only through B
    await wait_connected(a, b)
    await wait_connected(b, c)
    await import_file(a, conversation_file(tmp_path / "conv.json", "Ownership"))
    acus = await cli_json(a, "acus", "list")
    acu = acus["acus"][0]["id"]

    first = await cli_json(
        a, "publish", acu, "--title", "Ownership", "--tags", "rust,memory", "--license", "MIT"
    )
    assert (first["version"], first["previous_id"], first["subject_kind"]) == (1, None, "acu")
    await wait_held(c, first["id"])
    # C got it by gossip (it was connected before A published), relayed by B.
    [record] = received(c, first["id"])
    assert (record["via"], record["peer_id"]) == ("gossip", b.peer_id)
    shown = await cli_json(c, "global", "show", first["id"])
    assert shown["content"]["acu"]["id"] == acu
    assert (shown["title"], shown["tags"], shown["license"]) == (
        "Ownership",
        ["memory", "rust"],
        "MIT",
    )
    assert shown["publisher_did"] == a.ready["did"]
    acu_at_a = await cli_json(a, "acu", "show", acu)
    assert acu_at_a["sharing_level"] in ("GLOBAL", "global", 3)

    second = await cli_json(a, "publish", acu, "--title", "Ownership, revised")
    assert (second["version"], second["previous_id"]) == (2, first["id"])
    await wait_held(c, second["id"])

    # D starts later and knows only C: it pulls both from C.
    d = await start("d", bootstrap=[c.addr])
    await wait_held(d, first["id"])
    await wait_held(d, second["id"])
    # Whatever GossipSub's own gossip (IHAVE of recent messages) brought first, D's pull on
    # connect asked C for everything after its cursor (0) and C served both.
    with trio.fail_after(WAIT_S):
        while not [
            r
            for r in logged(c, "commons.served")
            if r["peer_id"] == d.peer_id and r["publications"] >= 2
        ]:
            await trio.sleep(0.1)

    text = await run_cli("global", "list", "--data-dir", str(d.data_dir))
    assert text.returncode == 0
    assert first["id"] in text.stdout.decode()
    text = await run_cli("global", "show", second["id"], "--data-dir", str(d.data_dir))
    assert "Ownership, revised" in text.stdout.decode()

    # A publication is never deleted: the API refuses, and it is still there.
    with pytest.raises(ApiError, match="cannot be deleted"):
        await trio.to_thread.run_sync(
            request_json, a.data_dir, "DELETE", f"/v1/global/{first['id']}"
        )
    assert first["id"] in await held(a)


def stranger_publication(title: str) -> GlobalPublication:
    """A valid publication of a stranger's (an identity of the test's own)."""
    identity_key, device_key = (
        nacl.signing.SigningKey.generate(),
        nacl.signing.SigningKey.generate(),
    )
    did = did_from_ed25519_public_key(bytes(identity_key.verify_key))
    certificate = DeviceCertificate.create(
        signing_key=identity_key,
        did=did,
        device_public_key=bytes(device_key.verify_key),
        approver=did,
        issued_at_ms=1,
    )
    text = f"an insight titled {title}"
    acu = {
        "id": acu_id(did, text, "insight", 5),
        "author": did,
        "content": text,
        "type": "insight",
        "category": "general",
        "language": None,
        "source_time_ms": 5,
        "conversation_id": content_id({"c": title}),
        "message_id": content_id({"m": title}),
        "position": 0,
        "provider": "test",
        "model": None,
    }
    return GlobalPublication.create(
        signing_key=device_key,
        publisher_did=did,
        subject_kind=SubjectKind.ACU,
        subject_id=str(acu["id"]),
        version=1,
        previous_id=None,
        content=canonical_encode({"kind": "acu", "acu": acu}),
        title=title,
        published_at_ms=10,
        certificate=certificate.to_wire(),
        chain=(),
        rotations=(),
    )


async def test_forged_publication_is_dropped_and_not_stored(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", bootstrap=[a.addr])
    await wait_connected(a, b)
    forged = stranger_publication("forged")
    forged_wire = canonical_encode(
        {
            **json_free_fields(forged),
            "title": "altered after signing",
            "signature": forged.signature,
        }
    )
    genuine = stranger_publication("genuine")

    host = build_host(nacl.signing.SigningKey.generate().encode())
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12], degree=6, degree_low=4, degree_high=12, heartbeat_interval=1
    )
    pubsub = Pubsub(host, router)
    async with (
        host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]),
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        await pubsub.wait_until_ready()
        await pubsub.subscribe(TOPIC)
        await host.connect(info_from_p2p_addr(Multiaddr(a.addr)))
        with trio.fail_after(WAIT_S):
            while ID.from_base58(a.peer_id) not in pubsub.peer_topics.get(TOPIC, set()):
                await trio.sleep(0.05)
        await pubsub.publish(TOPIC, forged_wire)
        await pubsub.publish(TOPIC, b"not a publication at all")
        await pubsub.publish(TOPIC, genuine.to_wire())
        try:
            await wait_held(b, genuine.id)
        finally:
            await host.close()  # run() leaves outbound sockets open (node/runner.py)
    forged_id = GlobalPublication.from_wire(forged_wire).id
    assert forged_id not in await held(a)
    assert forged_id not in await held(b)
    refusals = [r["error"] for r in logged(a, "commons.refused")]
    assert "bad_signature" in refusals
    assert "malformed" in refusals
    # Both nodes keep serving.
    assert genuine.id in await held(a)


def json_free_fields(publication: GlobalPublication) -> dict[str, object]:
    from protocols.canonical import canonical_decode

    fields = canonical_decode(publication.to_wire())
    assert isinstance(fields, dict)
    return fields
