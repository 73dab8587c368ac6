"""Start real `vivim-node` processes on loopback: for scripts/cluster.py, benchmarks and tests.

Each node gets its own data directory, listens on 127.0.0.1 with an OS-chosen port, and is
considered started when it prints its JSON ready line. Its stderr goes to a file next to its data
directory, which is what to read when something goes wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from node.api_client import get_json
from node.errors import NodeError

LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
TOPOLOGIES = ("line", "star", "full")
# A node that is not ready in this long is not going to be: it failed (see its stderr).
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class NodeStartFailed(NodeError):
    pass


def node_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "node", *args]


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    stderr_path: Path
    process: trio.Process
    ready: dict[str, Any] = field(default_factory=dict)
    signalled: bool = False

    @property
    def peer_id(self) -> str:
        return str(self.ready["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.ready["addrs"][0])

    @property
    def listen_addr(self) -> str:
        """The address it listens on, without /p2p/: to restart it on the same port."""
        return self.addr.rsplit("/p2p/", 1)[0]

    async def api(self, path: str) -> Any:
        return await trio.to_thread.run_sync(get_json, self.data_dir, path)

    async def connected_peers(self) -> set[str]:
        peers = await self.api("/v1/peers")
        return {p["peer_id"] for p in peers["peers"] if p["connected"]}

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the node and wait for it; kill it if it overstays STOP_TIMEOUT_S."""
        if self.process.returncode is None:
            self.signal(sig)
            with trio.move_on_after(STOP_TIMEOUT_S):
                return await self.process.wait()
            self.process.kill()
        return await self.process.wait()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` once: a second SIGTERM would hit the default handler mid-shutdown."""
        if not self.signalled and self.process.returncode is None:
            self.signalled = True
            self.process.send_signal(signal.Signals(sig))

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no stderr)"


def init_data_dir(data_dir: Path) -> None:
    subprocess.run(
        node_command("init", "--if-missing", "--data-dir", str(data_dir)),
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def start_node(
    name: str,
    data_dir: Path,
    *,
    listen: Sequence[str] = (LOOPBACK_LISTEN,),
    bootstrap: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> NodeProcess:
    """Init (if needed) and run a node; return once it printed its ready line."""
    await trio.to_thread.run_sync(init_data_dir, data_dir)
    args = ["run", "--data-dir", str(data_dir), "--log-level", log_level]
    for addr in listen:
        args += ["--listen", addr]
    for addr in bootstrap:
        args += ["--bootstrap", addr]
    stderr_path = data_dir.with_name(data_dir.name + ".stderr.log")
    with stderr_path.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            node_command(*args),
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            # Its own session: a Ctrl-C in the terminal reaches only the script that started it,
            # which then stops its nodes one by one (instead of every process at once).
            start_new_session=True,
        )
    node = NodeProcess(name, data_dir, stderr_path, process)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            node.ready = await _read_ready_line(process)
    except (trio.TooSlowError, NodeStartFailed) as err:
        await node.stop(signal.SIGKILL)
        raise NodeStartFailed(
            f"node {name} did not become ready ({err or 'timeout'}); its stderr ends with:\n"
            + node.stderr_tail()
        ) from err
    except BaseException:
        # Cancelled (Ctrl-C) while it starts: it is in its own session, so nobody else stops it.
        with trio.CancelScope(shield=True):
            await node.stop(signal.SIGKILL)
        raise
    return node


async def _read_ready_line(process: trio.Process) -> dict[str, Any]:
    assert process.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        chunk = await process.stdout.receive_some(4096)
        if not chunk:
            raise NodeStartFailed(f"it exited with status {await process.wait()}")
        buffer += chunk
    line = buffer.split(b"\n", 1)[0]
    ready = json.loads(line)
    if not isinstance(ready, dict) or ready.get("event") != "ready":
        raise NodeStartFailed(f"its first stdout line is not a ready event: {line!r}")
    return ready


def bootstrap_edges(n: int, topology: str) -> list[tuple[int, int]]:
    """(i, j): node i bootstraps to node j, which starts before it."""
    if topology == "line":
        return [(i, i - 1) for i in range(1, n)]
    if topology == "star":
        return [(i, 0) for i in range(1, n)]
    if topology == "full":
        return [(i, j) for i in range(1, n) for j in range(i)]
    raise ValueError(f"unknown topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")


async def start_cluster(
    n: int, topology: str, base_dir: Path, *, env: Mapping[str, str] | None = None
) -> list[NodeProcess]:
    """Start n nodes in order, each bootstrapping to the earlier nodes its topology names."""
    edges = bootstrap_edges(n, topology)
    nodes: list[NodeProcess] = []
    try:
        for i in range(n):
            targets = [nodes[j].addr for (a, j) in edges if a == i]
            nodes.append(
                await start_node(f"node{i}", base_dir / f"node{i}", bootstrap=targets, env=env)
            )
    except BaseException:
        await stop_all(nodes)
        raise
    return nodes


async def wait_connected(nodes: Sequence[NodeProcess], topology: str) -> None:
    """Until every edge of the topology is connected, as both ends' `peers` report it.

    Polls the nodes' APIs (they are other processes); the caller bounds it with a cancel scope.
    """
    edges = bootstrap_edges(len(nodes), topology)
    while True:
        views = [await node.connected_peers() for node in nodes]
        if all(nodes[j].peer_id in views[i] and nodes[i].peer_id in views[j] for i, j in edges):
            return
        await trio.sleep(0.1)


async def stop_all(nodes: Sequence[NodeProcess]) -> list[int]:
    codes: list[int] = []
    with trio.CancelScope(shield=True):
        for node in nodes:
            node.signal()
        for node in nodes:
            codes.append(await node.stop())
    return codes
