#!/usr/bin/env python3
"""Start N vivim-node processes on 127.0.0.1 in a topology and report when they are connected.

    .venv/bin/python scripts/cluster.py -n 3 --topology line --duration 10

Each node gets its own data directory under a temporary directory (or --dir), listens on an
OS-chosen port and bootstraps to the earlier nodes its topology names (line: the previous node;
star: node 0; full: every earlier node). When every edge is connected, one JSON summary line goes to
stdout: peer ids, addresses, API URLs and the seconds from start until all were connected. It then
runs until Ctrl-C or --duration, and always stops its nodes (their logs: <dir>/nodeN.stderr.log).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

from node.errors import NodeError
from node.local_cluster import (
    TOPOLOGIES,
    NodeProcess,
    start_cluster,
    stop_all,
    wait_connected,
)


async def main(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vivim-cluster-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"starting {args.n} nodes ({args.topology}) under {base}", file=sys.stderr)
    nodes: list[NodeProcess] = []
    code = 130  # unless _run finishes: stopped by a signal
    # Ctrl-C or SIGTERM at any moment, start-up included, ends in the `finally` that stops nodes.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        try:
            code = await _run(args, base, nodes)
        finally:
            codes = await stop_all(nodes)
            print(f"stopped {len(nodes)} nodes, exit codes {codes}", file=sys.stderr)
        nursery.cancel_scope.cancel()
    return code


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("stopping the cluster", file=sys.stderr)
            scope.cancel()
            return


async def _run(args: argparse.Namespace, base: Path, nodes: list[NodeProcess]) -> int:
    started = time.monotonic()
    try:
        nodes.extend(await start_cluster(args.n, args.topology, base))
        with trio.fail_after(args.connect_timeout):
            await wait_connected(nodes, args.topology)
    except trio.TooSlowError:
        print(f"error: not all connected within {args.connect_timeout:g} s", file=sys.stderr)
        return 1
    except NodeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {
        "event": "connected",
        "topology": args.topology,
        "seconds_until_connected": round(time.monotonic() - started, 3),
        "dir": str(base),
        "nodes": [
            {"name": n.name, "peer_id": n.peer_id, "addrs": n.ready["addrs"], "api": n.ready["api"]}
            for n in nodes
        ],
    }
    print(json.dumps(summary), flush=True)
    print("running; Ctrl-C stops the cluster", file=sys.stderr)
    await trio.sleep(math.inf if args.duration is None else args.duration)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="line")
    parser.add_argument("--duration", type=float, help="seconds to run after connecting")
    parser.add_argument("--dir", help="where the data directories go (default: a new temp dir)")
    parser.add_argument(
        "--connect-timeout", type=float, default=60.0, help="give up after this many seconds"
    )
    args = parser.parse_args()
    if args.n < 1:
        parser.error("-n must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
