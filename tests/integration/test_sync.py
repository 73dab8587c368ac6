"""Sync between real device processes: convergence, refusals, strangers, garbage, revocation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.host import build_host
from node.local_cluster import NodeProcess
from protocols.framing import encode_varint
from protocols.sync import (
    MAX_FRAME,
    SYNC_PROTOCOL_ID,
    ErrorReceived,
    NeedData,
    SyncClient,
)
from tests.integration.conftest import StartNode, run_cli
from tests.integration.test_pairing import join, pair_code

CONVERGE_TIMEOUT_S = 30


async def family(start: StartNode, tmp_path: Path, count: int) -> list[NodeProcess]:
    """`count` running devices of one identity: the first approves the others, which then dial
    it (they know its address from the code)."""
    first = await start("device-0")
    devices = [first]
    for n in range(1, count):
        joined = await join(tmp_path / f"device-{n}", await pair_code(first))
        assert joined.returncode == 0, joined.stderr.decode()
        devices.append(await start(f"device-{n}"))
    return devices


async def state_hash(node: NodeProcess) -> str:
    return str((await node.api("/v1/state-hash"))["state_hash"])


async def wait_converged(nodes: list[NodeProcess]) -> str:
    with trio.fail_after(CONVERGE_TIMEOUT_S):
        while True:
            hashes = {await state_hash(node) for node in nodes}
            if len(hashes) == 1:
                return hashes.pop()
            await trio.sleep(0.1)


def conversation_file(path: Path, title: str, count: int = 3) -> Path:
    messages = []
    for n in range(count):
        messages.append({"role": "user", "content": f"{title}: question {n}?", "timestamp": n})
        messages.append({"role": "assistant", "content": f"{title}: answer {n}.", "timestamp": n})
    path.write_text(
        json.dumps({"title": title, "provider": "test", "model": "m", "messages": messages})
    )
    return path


async def import_file(node: NodeProcess, path: Path) -> None:
    result = await run_cli("import", str(path), "--data-dir", str(node.data_dir), "--json")
    assert result.returncode == 0, result.stderr.decode()


async def verify(node: NodeProcess) -> None:
    result = await run_cli("verify", "--data-dir", str(node.data_dir), "--json")
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def logged(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    records = []
    for line in node.stderr_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


async def test_three_devices_writing_at_once_converge(start: StartNode, tmp_path: Path) -> None:
    devices = await family(start, tmp_path, 3)
    files = [conversation_file(tmp_path / f"c{n}.json", f"device {n}") for n in range(3)]
    async with trio.open_nursery() as nursery:
        for device, path in zip(devices, files, strict=True):
            nursery.start_soon(import_file, device, path)
    await wait_converged(devices)
    for device in devices:
        page = await device.api("/v1/acus?limit=100")
        assert len(page["acus"]) == 9  # 3 exchanges from each device
        await verify(device)
    status = await run_cli("sync", "status", "--json", "--data-dir", str(devices[1].data_dir))
    peers = json.loads(status.stdout)["peers"]
    assert peers and all(p["lag_ops"] == 0 for p in peers)


async def exchange(
    node: NodeProcess, seed: bytes, payload: bytes, *, hang_up: bool = False
) -> bytes:
    """Connect as the device with `seed`, open a sync stream, send `payload`, read the answer
    (or, with `hang_up`, close the stream at once: the frame stays unfinished)."""
    host = build_host(seed)
    info = info_from_p2p_addr(Multiaddr(node.addr))
    answer = b""
    async with host.run([]):
        with trio.fail_after(10):
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(SYNC_PROTOCOL_ID)])
            await stream.write(payload)
            if hang_up:
                await stream.close()
                await host.close()
                return b""
            try:
                while True:
                    chunk = await stream.read(MAX_FRAME)
                    if not chunk:
                        break
                    answer += chunk
            except StreamEOF:
                pass
        await host.close()
    return answer


def first_event(answer: bytes) -> Any:
    client = SyncClient()
    client.pull({}, 10, 1024)  # put the session where a server's answer is expected
    client.receive_data(answer)
    event = client.next_event()
    assert not isinstance(event, NeedData)
    return event


async def test_a_device_of_another_identity_is_unauthorized_and_gets_no_data(
    start: StartNode,
) -> None:
    node = await start("owner")
    await import_file(node, conversation_file(node.data_dir.parent / "c.json", "private"))
    answer = await exchange(node, os.urandom(32), SyncClient().pull({}, 100, 1 << 20))
    event = first_event(answer)
    assert isinstance(event, ErrorReceived) and event.code == "unauthorized"
    assert b"private" not in answer


async def test_garbage_truncated_and_oversized_frames_get_an_error_and_the_node_serves_on(
    start: StartNode, tmp_path: Path
) -> None:
    first, second = await family(start, tmp_path, 2)
    for payload in (
        b"\x05hello",  # a frame that is not CBOR
        encode_varint(MAX_FRAME + 1) + b"x",  # a length over the limit
        b"\xff" * 11,  # a length prefix that never ends
    ):
        answer = await exchange(first, os.urandom(32), payload)
        event = first_event(answer)
        assert isinstance(event, ErrorReceived), answer[:80]
    # A truncated frame: the stream closes in the middle; the node just drops it.
    await exchange(first, os.urandom(32), encode_varint(100) + b"short", hang_up=True)
    with trio.fail_after(10):
        while not any(r.get("error") == "truncated" for r in logged(first, "sync.bad_request")):
            await trio.sleep(0.05)
    assert logged(first, "sync.bad_request")
    # The node still serves its own devices.
    await import_file(first, conversation_file(tmp_path / "after.json", "after the garbage"))
    await wait_converged([first, second])


async def test_revoking_a_device_stops_its_writes_and_what_it_receives_everywhere(
    start: StartNode, tmp_path: Path
) -> None:
    first, second, third = await family(start, tmp_path, 3)
    await import_file(third, conversation_file(tmp_path / "before.json", "before"))
    await wait_converged([first, second, third])
    third_id = third.peer_id
    revoked = await run_cli(
        "device", "revoke", third_id, "--yes", "--data-dir", str(first.data_dir)
    )
    assert revoked.returncode == 0, revoked.stderr.decode()

    async def revoked_on(node: NodeProcess) -> bool:
        listing = await run_cli("device", "list", "--json", "--data-dir", str(node.data_dir))
        statuses = {d["peer_id"]: d["status"] for d in json.loads(listing.stdout)["devices"]}
        return statuses.get(third_id) == "revoked"

    with trio.fail_after(CONVERGE_TIMEOUT_S):
        while not await revoked_on(second):
            await trio.sleep(0.1)
    trusted = [first, second]
    agreed = await wait_converged(trusted)

    # The revoked device writes: nobody takes it.
    await import_file(third, conversation_file(tmp_path / "after.json", "after"))
    # A trusted device writes: the revoked one does not get it.
    await import_file(first, conversation_file(tmp_path / "news.json", "news"))
    await trio.sleep(2)  # several announce/pull rounds (nothing to wait on: nothing must happen)
    final = await wait_converged(trusted)
    assert final != agreed  # the news arrived on both trusted devices
    for node in trusted:
        titles = {c["title"] for c in (await node.api("/v1/conversations"))["conversations"]}
        assert "after" not in titles and "news" in titles
        await verify(node)
    titles = {c["title"] for c in (await third.api("/v1/conversations"))["conversations"]}
    assert "news" not in titles


async def device_statuses(node: NodeProcess) -> tuple[int, dict[str, str]]:
    listing = await run_cli("device", "list", "--json", "--data-dir", str(node.data_dir))
    data = json.loads(listing.stdout)
    return data["identity_key_version"], {d["peer_id"]: d["status"] for d in data["devices"]}


async def wait_statuses(nodes: list[NodeProcess], want: dict[str, str], version: int) -> None:
    with trio.fail_after(CONVERGE_TIMEOUT_S):
        for node in nodes:
            while True:
                key_version, statuses = await device_statuses(node)
                if key_version == version and all(statuses.get(p) == s for p, s in want.items()):
                    break
                await trio.sleep(0.1)


async def test_cascade_reapproval_and_key_rotation_take_effect_on_every_device(
    start: StartNode, tmp_path: Path
) -> None:
    first = await start("device-0")
    joined = await join(tmp_path / "device-1", await pair_code(first))
    assert joined.returncode == 0, joined.stderr.decode()
    second = await start("device-1")
    joined = await join(tmp_path / "device-2", await pair_code(second))
    assert joined.returncode == 0, joined.stderr.decode()
    # Approved by the second, which it dials; told the first's address too, as a person would.
    third = await start("device-2", bootstrap=[first.addr])
    nodes = [first, second, third]
    trusted = {n.peer_id: "trusted" for n in nodes}
    await wait_statuses(nodes, trusted, 1)

    revoked = await run_cli(
        "device", "revoke", second.peer_id, "--yes", "--json", "--data-dir", str(first.data_dir)
    )
    assert revoked.returncode == 0, revoked.stderr.decode()
    assert json.loads(revoked.stdout)["cascade"] == [third.peer_id]
    cascaded = {first.peer_id: "trusted", second.peer_id: "revoked", third.peer_id: "untrusted"}
    await wait_statuses([first], cascaded, 1)

    approved = await run_cli("device", "approve", third.peer_id, "--data-dir", str(first.data_dir))
    assert approved.returncode == 0, approved.stderr.decode()
    rotated = await run_cli("identity", "rotate", "--data-dir", str(first.data_dir))
    assert rotated.returncode == 0, rotated.stderr.decode()
    # The first serves the third again once it trusts it again: both end with the same trust
    # state and key version, and the same vault.
    after = {first.peer_id: "trusted", second.peer_id: "revoked", third.peer_id: "trusted"}
    await wait_statuses([first, third], after, 2)
    assert await wait_converged([first, third])
