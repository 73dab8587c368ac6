"""Circles and shares on a running node, through the CLI and the control API.

Alice runs a node; Bob is an initialised data directory whose friendship with Alice is written
into both vaults through store.peering (the peering protocol is tested on its own). The bundles
Alice's store offers Bob are accepted into Bob's vault with his key file, and `acus list
--received` shows them there.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.keys import encryption_key_file
from node.local_cluster import init_data_dir
from node.runtime import read_runtime_file, read_token
from protocols.cid import content_id
from store import peering
from store.database import open_database
from store.identity import load_identity
from store.share_delivery import accept_bundle, bundles_for
from tests.integration.conftest import StartNode, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHATGPT = FIXTURES / "chatgpt_export.json"
NOW = 1_800_000_000_000


async def cli_json(data_dir: Path, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


async def cli_error(data_dir: Path, *args: str) -> str:
    result = await run_cli(*args, "--data-dir", str(data_dir))
    assert result.returncode != 0, result.stdout.decode()
    return result.stderr.decode()


def identity_of(data_dir: Path) -> tuple[str, bytes]:
    db = open_database(data_dir / "vivim.db")
    try:
        found = load_identity(db)
    finally:
        db.close()
    assert found is not None
    return found.did, found.encryption_public_key


def befriend(data_dir: Path, did: str, encryption_key: bytes) -> None:
    """Write an accepted connection with `did` into the vault at `data_dir`."""
    db = open_database(data_dir / "vivim.db")
    try:
        request_id = content_id({"request": did})
        request = peering.RequestRow(
            did=did,
            request_id=request_id,
            request=b"request",
            encryption_key=encryption_key,
            encryption_binding=b"binding",
        )
        peering.save_incoming_request(db, request, NOW)
        peering.accept(db, did, request_id, b"acceptance", "trusted", NOW)
    finally:
        db.close()


def api(data_dir: Path, method: str, path: str) -> tuple[int, dict[str, Any]]:
    url = str(read_runtime_file(data_dir)["api"]).rstrip("/") + path
    request = urllib.request.Request(
        url,
        method=method,
        headers={"Authorization": f"Bearer {read_token(data_dir, create=False)}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


async def test_circles_shares_and_an_irrevocable_global_grant(
    tmp_path: Path, start: StartNode
) -> None:
    alice, bob, dave = tmp_path / "alice", tmp_path / "bob", tmp_path / "dave"
    for data_dir in (alice, bob, dave):
        init_data_dir(data_dir)
    alice_did, alice_key = identity_of(alice)
    bob_did, bob_key = identity_of(bob)
    dave_did, _ = identity_of(dave)
    befriend(alice, bob_did, bob_key)
    befriend(bob, alice_did, alice_key)
    await cli_json(alice, "import", str(CHATGPT))
    page = await cli_json(alice, "acus", "list", "--limit", "10")
    first, second, third = (acu["id"] for acu in page["acus"][:3])

    await start("alice")
    created = await cli_json(alice, "circle", "create", "team")
    assert (created["version"], created["members"]) == (1, [])
    added = await cli_json(alice, "circle", "add", "team", bob_did)
    assert (added["version"], added["members"]) == (2, [bob_did])
    refused = await cli_error(alice, "circle", "add", "team", dave_did)
    assert "is not a friend: run `vivim-node friend add" in refused
    refused = await cli_error(alice, "share", first, "--with", dave_did)
    assert "is not a friend" in refused
    (listed,) = (await cli_json(alice, "circle", "list"))["circles"]
    assert listed["name"] == "team" and listed["members"] == [bob_did]

    by_circle = await cli_json(alice, "share", first, "--circle", "team", "--remix")
    assert by_circle["permissions"] == ["remix", "view"]
    assert by_circle["circle_name"] == "team"
    direct = await cli_json(alice, "share", second, "--with", bob_did)
    shown = await cli_json(alice, "acu", "show", first)
    assert shown["sharing_level"] == "CIRCLES"
    access = await cli_json(alice, "access", first, bob_did)
    assert (access["rule"], access["permissions"]) == ("circle", ["remix", "view"])
    status, denied = api(alice, "GET", f"/v1/acus/{first}/access?did={dave_did}")
    assert (status, denied["rule"], denied["allowed"]) == (200, "denied", False)

    published = await cli_json(alice, "share", third, "--global")
    assert published["target_kind"] == "global"
    assert (await cli_json(alice, "acu", "show", third))["sharing_level"] == "GLOBAL"
    status, answer = api(alice, "POST", f"/v1/shares/{published['id']}/revoke")
    assert status == 409
    assert answer["error"] == "irrevocable"
    assert "a global publication is permanent" in answer["message"]
    refused = await cli_error(alice, "share", "revoke", published["id"])
    assert "permanent" in refused

    revoked = await cli_json(alice, "share", "revoke", direct["id"])
    assert revoked["revoked_at_ms"] is not None
    shares = (await cli_json(alice, "shares"))["shares"]
    assert [s["id"] for s in shares] == [by_circle["id"], direct["id"], published["id"]]
    assert [s["revoked_at_ms"] is not None for s in shares] == [False, True, False]
    assert [s["id"] for s in (await cli_json(alice, "shares", first))["shares"]] == [
        by_circle["id"]
    ]
    text = await run_cli("shares", "--data-dir", str(alice))
    assert b"revoked" in text.stdout and b"circle team" in text.stdout

    # What Alice's store offers Bob opens in Bob's vault with his key file.
    alice_db = open_database(alice / "vivim.db")
    try:
        bundles = bundles_for(alice_db, bob_did, now_ms=NOW)
    finally:
        alice_db.close()
    assert len(bundles) == 1  # the circle share; the direct one is revoked
    bob_db = open_database(bob / "vivim.db")
    try:
        key = encryption_key_file(bob).read()
        accepted = accept_bundle(bob_db, bundles[0], encryption_key=key, now_ms=NOW)
    finally:
        bob_db.close()
    assert accepted.acu_id == first
    received = (await cli_json(bob, "acus", "list", "--received"))["acus"]
    assert [(r["acu_id"], r["author"]) for r in received] == [(first, alice_did)]
    assert (await cli_json(alice, "acus", "list", "--received"))["acus"] == []

    removed = await cli_json(alice, "circle", "remove", "team", bob_did)
    assert (removed["version"], removed["members"]) == (3, [])
    access = await cli_json(alice, "access", first, bob_did)
    assert access["rule"] == "denied"
