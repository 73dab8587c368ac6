"""Integration fixtures: real `vivim-node` processes on 127.0.0.1, stopped at teardown."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from node.local_cluster import NodeProcess, node_command, start_node, stop_all

# Tests redial within a second rather than the default 30 s cap.
FAST_REDIAL_ENV = {"VIVIM_REDIAL_MIN_S": "0.2", "VIVIM_REDIAL_MAX_S": "1"}


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `vivim-node ARGS` to completion (in a thread: it is a short blocking call)."""
    return await trio.to_thread.run_sync(
        partial(subprocess.run, node_command(*args), capture_output=True, timeout=60)
    )


StartNode = Callable[..., Awaitable[NodeProcess]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartNode]:
    """`await start("a", bootstrap=[...])` runs a node with data dir tmp_path/a."""
    nodes: list[NodeProcess] = []

    async def _start(name: str, **kwargs: Any) -> NodeProcess:
        kwargs.setdefault("env", FAST_REDIAL_ENV)
        node = await start_node(name, tmp_path / name, **kwargs)
        nodes.append(node)
        return node

    yield _start
    await stop_all(nodes)
