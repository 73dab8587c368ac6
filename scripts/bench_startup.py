#!/usr/bin/env python3
"""Startup benchmark: time from `vivim-node run` to its ready line, idle RSS, time to shut down.

    .venv/bin/python scripts/bench_startup.py [--runs 3] [--idle 10]

Each run uses a fresh, already initialised data directory (init is not timed), starts the node on
127.0.0.1 with an OS-chosen port, reads the ready line, waits --idle seconds, reads the process's
resident memory (VmRSS, /proc), then sends SIGTERM and times the exit. Prints one line per run and
a JSON summary with medians. Targets on a 2-core machine: ready < 2 s, idle RSS < 120 MB,
shutdown < 3 s.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from node.local_cluster import init_data_dir, node_command

TARGET_READY_S = 2.0
TARGET_RSS_MB = 120.0
TARGET_SHUTDOWN_S = 3.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


async def one_run(base: Path, idle_s: float) -> dict[str, float]:
    data_dir = base / "node"
    init_data_dir(data_dir)
    started = time.perf_counter()
    process = await trio.lowlevel.open_process(
        node_command("run", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the node exited before it was ready")
                buffer += chunk
        ready_s = time.perf_counter() - started
        assert json.loads(buffer.split(b"\n")[0])["event"] == "ready"
        await trio.sleep(idle_s)
        rss = rss_mb(process.pid)
        stop_started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await process.wait()
        shutdown_s = time.perf_counter() - stop_started
        if code != 0:
            raise RuntimeError(f"the node exited with {code} after SIGTERM")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return {"ready_s": ready_s, "idle_rss_mb": rss, "shutdown_s": shutdown_s}


async def main(args: argparse.Namespace) -> None:
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="vivim-bench-") as tmp:
            result = await one_run(Path(tmp), args.idle)
        results.append(result)
        print(
            f"run {i + 1}: ready {result['ready_s']:.2f} s, idle RSS {result['idle_rss_mb']:.1f} MB"
            f" after {args.idle:g} s, shutdown {result['shutdown_s']:.2f} s",
            file=sys.stderr,
        )
    summary = {
        key: round(statistics.median(r[key] for r in results), 3)
        for key in ("ready_s", "idle_rss_mb", "shutdown_s")
    }
    summary |= {
        "runs": args.runs,
        "idle_s": args.idle,
        "targets": {
            "ready_s": TARGET_READY_S,
            "idle_rss_mb": TARGET_RSS_MB,
            "shutdown_s": TARGET_SHUTDOWN_S,
        },
        "within_targets": summary["ready_s"] < TARGET_READY_S
        and summary["idle_rss_mb"] < TARGET_RSS_MB
        and summary["shutdown_s"] < TARGET_SHUTDOWN_S,
    }
    print(json.dumps({"benchmark": "startup", **summary}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="number of runs (median reported)")
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds before reading RSS")
    trio.run(main, parser.parse_args())
