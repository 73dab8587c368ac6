#!/usr/bin/env python3
"""Sync benchmark: a freshly paired device catches up on a large history; one write reaching
five devices.

    .venv/bin/python scripts/bench_sync.py [--ops 100000] [--devices 5] [--trials 20]

Device A (its own process, a real node) holds about --ops ops (a generated export imported
straight to its data directory). Device B is paired with it (`init --join`) and started; the
clock runs from B's ready line (B dials A after it) until B logs the completed sync that brought
it A's heads, every op verified and persisted (B's start-up is printed apart, as b_startup_s).
Prints ops/s end to end, wire bytes per op (batch frames as A sent them, from its log), peak RSS
of both processes and of each of B's op-checking processes (VmHWM), the CPU seconds each used
during the sync (they share this machine's cores: where the time went) and from them the
CPU per op counted in verifies and how many cores the sync kept busy, this machine's
single-core Ed25519 verify rate measured in the same run (the best of short windows before and
after the sync) and the ratio of the two. Targets: at least half the verify rate; peak RSS
under 250 MB.

Then, on a small identity of its own, --devices devices (one and the others it paired, each
connected to it) and --trials writes on the first (an ACU edit through its control API): for
each, the time until the last device logged applying it (log timestamps, so polling adds
nothing). Prints p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import nacl.signing
import trio

from node.api_client import request_json
from node.local_cluster import NodeProcess, node_command, start_node, stop_all

TARGET_RSS_MB = 250.0
OPS_PER_CONVERSATION = 21  # 10 exchanges, each answer with a code block: 20 ACUs + 1


def export(path: Path, conversations: int) -> None:
    items = []
    for c in range(conversations):
        messages = []
        for m in range(10):
            messages.append({"role": "user", "content": f"Question {m} of {c}?", "timestamp": c})
            messages.append(
                {
                    "role": "assistant",
                    "content": f"Answer {m} of {c}.\n\n```python\nprint({c}, {m})\n```\n",
                    "timestamp": c,
                }
            )
        items.append({"title": f"c{c}", "provider": "bench", "model": "m", "messages": messages})
    path.write_text(json.dumps(items))


def verify_rate(windows: int = 3, seconds: float = 0.5) -> float:
    """Single-core Ed25519 verifies per second: the best of `windows` windows, so a moment when
    the (shared) machine was busy does not lower the rate and so flatter the ratio."""
    key = nacl.signing.SigningKey.generate()
    signed = key.sign(b"x" * 300)
    verify_key = key.verify_key
    best = 0.0
    for _ in range(windows):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(500):
                verify_key.verify(signed)
            count += 500
        best = max(best, count / (time.perf_counter() - started))
    return best


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checking_processes(pid: int) -> list[int]:
    """B's op-checking processes (node/op_checker.py): its children started by multiprocessing's
    spawn (not its resource tracker)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" not in command:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                found.append(int(status.parent.name))
    return found


def cli(*args: str) -> str:
    result = subprocess.run(node_command(*args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"vivim-node {args[0]} failed:\n{result.stderr[-2000:]}")
    return result.stdout


async def heads(node: NodeProcess) -> dict[str, int]:
    return dict((await node.api("/v1/sync/status"))["heads"])


async def pair(first: NodeProcess, data_dir: Path) -> None:
    code = json.loads(cli("device", "pair", "--data-dir", str(first.data_dir), "--json"))["code"]
    cli("init", "--join", code, "--data-dir", str(data_dir))


def log_records(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in node.stderr_path.read_text().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def stamp(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()


async def catch_up(base: Path, ops: int) -> dict[str, Any]:
    holder = base / "a"
    cli("init", "--data-dir", str(holder))
    bulk = base / "bulk.json"
    export(bulk, max(1, ops // OPS_PER_CONVERSATION))
    print(f"importing about {ops} ops into A...", file=sys.stderr)
    cli("import", str(bulk), "--data-dir", str(holder))
    nodes: list[NodeProcess] = []
    try:
        a = await start_node("a", holder)
        nodes.append(a)
        await pair(a, base / "b")
        rate = verify_rate()
        target = (await heads(a))[a.peer_id]
        a_cpu_before = cpu_s(a.process.pid)
        print(f"B syncs {target} ops from A...", file=sys.stderr)
        launched = time.time()
        b = await start_node("b", base / "b")
        nodes.append(b)
        # The sync is timed from B's ready line (it dials A after it) to B's log saying the
        # sync that caught up completed (written after its last commit). B's start-up is
        # printed on its own. Read from the log, not by polling B's control API, which would
        # cost B the CPU it is measured on.
        ready = time.time()
        b_cpu_at_ready = cpu_s(b.process.pid)
        with trio.fail_after(3600):
            while sum(int(r["applied"]) for r in log_records(b, "sync.completed")) < target:
                await trio.sleep(0.1)
        if (await heads(b)).get(a.peer_id, 0) < target:
            raise RuntimeError("B logged the sync complete but does not hold every op")
        elapsed = max(stamp(r) for r in log_records(b, "sync.completed")) - ready
        checkers = checking_processes(b.process.pid)
        # Measured before and after the sync; the higher counts (the machine's speed, not a
        # busy moment of it).
        rate = max(rate, verify_rate())
        # Where the time went: the three processes share this machine's cores.
        cpu = {
            "a": round(cpu_s(a.process.pid) - a_cpu_before, 1),
            "b": round(cpu_s(b.process.pid) - b_cpu_at_ready, 1),
            "b_checkers": round(sum(cpu_s(p) for p in checkers), 1),
        }
        # A logs what it served when B's session ends, just after B's last commit.
        with trio.move_on_after(10):
            while not log_records(a, "sync.served"):
                await trio.sleep(0.1)
        served = log_records(a, "sync.served")
        wire = sum(int(r["bytes"]) for r in served)
        sent = sum(int(r["ops"]) for r in served)
        ops_per_s = target / elapsed
        return {
            "ops": target,
            "b_startup_s": round(ready - launched, 2),
            "sync_s": round(elapsed, 2),
            "ops_per_s": round(ops_per_s),
            "wire_bytes_per_op": round(wire / max(sent, 1)),
            "peak_rss_mb": {
                "a": round(peak_rss_mb(a.process.pid)),
                "b": round(peak_rss_mb(b.process.pid)),
                # Each checking process's own (they are B's children; B's figure is B alone).
                "b_checkers": [round(peak_rss_mb(p)) for p in checkers],
            },
            "cpu_s": cpu,
            # The CPU the processes (A, B, B's checkers) spent per op, in Ed25519 verifies at
            # the rate above: steadier than ops/s on a shared machine whose speed varies between
            # runs. The ratio is cores_busy / this, so 0.5 needs this at most 2 * cores_busy: 4
            # with both cores busy all along.
            "cpu_per_op_in_verifies": round(sum(cpu.values()) / target * rate, 2),
            "cores_busy": round(sum(cpu.values()) / elapsed, 2),
            "ed25519_verifies_per_s": round(rate),
            "ratio_to_verify_rate": round(ops_per_s / rate, 3),
        }
    finally:
        await stop_all(nodes)


async def spread(base: Path, devices: int, trials: int) -> dict[str, Any]:
    # A small vault of its own: what is measured is one write travelling, not a catch-up.
    holder = base / "s0"
    cli("init", "--data-dir", str(holder))
    export(base / "small.json", 1)
    cli("import", str(base / "small.json"), "--data-dir", str(holder))
    nodes: list[NodeProcess] = []
    try:
        a = await start_node("s0", holder)
        nodes.append(a)
        for n in range(1, devices):
            await pair(a, base / f"d{n}")
            nodes.append(await start_node(f"d{n}", base / f"d{n}"))
        others = nodes[1:]
        with trio.fail_after(60):
            while True:
                want = await heads(a)
                if [await heads(o) for o in others] == [want] * len(others):
                    break
                await trio.sleep(0.2)
        acu = (await a.api("/v1/acus?limit=1"))["acus"][0]["id"]
        latencies = []
        for trial in range(trials):
            before = [len(log_records(o, "sync.completed")) for o in others]
            written = time.time()
            result = await trio.to_thread.run_sync(
                partial(
                    request_json,
                    a.data_dir,
                    "POST",
                    f"/v1/acus/{acu}/edit",
                    {"content": f"edit {trial}"},
                )
            )
            acu = result.get("id", acu) if isinstance(result, dict) else acu
            target = (await heads(a))[a.peer_id]
            with trio.fail_after(30):
                while min([(await heads(o)).get(a.peer_id, 0) for o in others]) < target:
                    await trio.sleep(0.02)
            arrivals = []
            for o, count in zip(others, before, strict=True):
                records = log_records(o, "sync.completed")[count:]
                arrivals.append(max(stamp(r) for r in records) if records else time.time())
            latencies.append((max(arrivals) - written) * 1000)
            await trio.sleep(0.2)
        latencies.sort()
        return {
            "devices": devices,
            "trials": trials,
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        }
    finally:
        await stop_all(nodes)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vivim-bench-sync-") as tmp:
        base = Path(tmp)
        figures: dict[str, Any] = {"benchmark": "sync"}
        figures["catch_up"] = await catch_up(base, args.ops)
        print(json.dumps(figures["catch_up"]), file=sys.stderr)
        figures["one_write_to_all"] = await spread(base, args.devices, args.trials)
        catch = figures["catch_up"]
        figures["targets"] = {"ratio_to_verify_rate": 0.5, "peak_rss_mb": TARGET_RSS_MB}
        # The RSS target is the node processes' (A and B); B's checking processes are printed
        # apart, each with its own figure.
        rss = catch["peak_rss_mb"]
        figures["within_targets"] = (
            catch["ratio_to_verify_rate"] >= 0.5 and max(rss["a"], rss["b"]) < TARGET_RSS_MB
        )
        print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    trio.run(main, parser.parse_args())
