"""Three real nodes in a line find each other, and a killed node is redialed when it returns."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import trio

from node.local_cluster import NodeProcess, init_data_dir, node_command
from tests.integration.conftest import StartNode, run_cli

CONNECT_TIMEOUT_S = 30


async def peers_json(node: NodeProcess) -> set[str]:
    """Connected peer ids as `vivim-node peers --json` prints them (the CLI, end to end)."""
    result = await run_cli("peers", "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stderr
    return {p["peer_id"] for p in json.loads(result.stdout) if p["connected"]}


async def wait_for_peers(node: NodeProcess, expected: set[str]) -> None:
    with trio.fail_after(CONNECT_TIMEOUT_S):
        while await peers_json(node) != expected:
            await trio.sleep(0.2)


async def test_line_of_three_connects_and_redials_a_restarted_node(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", bootstrap=[a.addr])
    c = await start("c", bootstrap=[b.addr])

    await wait_for_peers(a, {b.peer_id})
    await wait_for_peers(b, {a.peer_id, c.peer_id})
    await wait_for_peers(c, {b.peer_id})

    # Kill b without a chance to say goodbye, then bring it back on the same address.
    b_listen = b.listen_addr
    assert await b.stop(signal.SIGKILL) == -signal.SIGKILL
    await wait_for_peers(c, set())
    b2 = await start("b", listen=[b_listen], bootstrap=[a.addr])
    assert b2.peer_id == b.peer_id

    # c redials b on its own (b has no bootstrap entry for c); b dials a again.
    await wait_for_peers(c, {b.peer_id})
    await wait_for_peers(a, {b.peer_id})
    await wait_for_peers(b2, {a.peer_id, c.peer_id})


async def test_sigterm_stops_cleanly_with_exit_code_zero(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", bootstrap=[a.addr])
    await wait_for_peers(b, {a.peer_id})
    for node in (a, b):
        assert await node.stop(signal.SIGTERM) == 0
        assert not (node.data_dir / "node.json").exists()
        assert "node.stopped" in node.stderr_path.read_text()


async def test_sigint_stops_cleanly_and_stdout_holds_only_the_ready_line(start: StartNode) -> None:
    a = await start("a")
    assert await a.stop(signal.SIGINT) == 0
    assert a.process.stdout is not None
    rest = b""
    while chunk := await a.process.stdout.receive_some():
        rest += chunk
    assert rest == b"", "stdout must hold exactly one line, the ready line"


async def test_second_node_on_the_same_data_dir_is_refused(start: StartNode) -> None:
    a = await start("a")
    result = await run_cli("run", "--data-dir", str(a.data_dir), "--listen", "/ip4/127.0.0.1/tcp/0")
    assert result.returncode != 0
    assert b"in use by vivim-node run (pid " in result.stderr
    assert result.stdout == b""
    assert (await run_cli("status", "--json", "--data-dir", str(a.data_dir))).returncode == 0


async def test_full_mesh_peers_report_each_others_listen_addresses(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", bootstrap=[a.addr])
    c = await start("c", bootstrap=[a.addr, b.addr])
    nodes = (a, b, c)
    # Every node learns every other's listen address: from its bootstrap list when it dialed,
    # from identify when it was dialed. /v1/peers must answer throughout.
    with trio.fail_after(CONNECT_TIMEOUT_S):
        for node in nodes:
            expected = {other.peer_id: [other.addr] for other in nodes if other is not node}
            while True:
                peers = (await node.api("/v1/peers"))["peers"]
                seen = {p["peer_id"]: p["addrs"] for p in peers if p["connected"]}
                if seen == expected:
                    break
                await trio.sleep(0.05)


async def test_a_stop_during_start_up_is_still_a_clean_exit(tmp_path: Path) -> None:
    # SIGTERM at several points of start-up (importing libp2p, opening the database, binding):
    # always exit 0, never killed by the default handler. (Before `main` runs at all, ~0.1 s
    # after exec, only the default handler exists; the first delay leaves a loaded machine room.)
    data_dir = tmp_path / "a"
    init_data_dir(data_dir)
    for delay in (0.5, 0.8, 1.2):
        process = await trio.lowlevel.open_process(
            node_command("run", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await trio.sleep(delay)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0, f"SIGTERM after {delay} s"
