#!/usr/bin/env python3
"""Sharing benchmark (issue 7), in sections; prints one JSON object, a key per section.

    .venv/bin/python scripts/bench_share.py [--sections global sharing] [--keep]
        [--nodes 20] [--degree 3] [--publications 20] [--seed 7]            (global)
        [--acus 1000] [--members 50] [--running-members 50] [--crypto-seconds 1]  (sharing)

Sections (SECTIONS below; each is `async def section(args, base_dir) -> dict`, and adds its own
arguments in `add_arguments`):

- **global**: a publication's spread through real node processes on loopback. --nodes nodes
  (default 20) are connected in a random --degree-regular topology (default 3; seeded, redrawn
  until connected): each node bootstraps to its neighbours started before it. Before the clock,
  each publisher imports one conversation. Then --publications times (default 20), one after
  another, node k % nodes publishes an ACU (`vivim-node publish`, through its control API); the
  spread is the time from the publisher's `commons.published` log line to the last other node's
  `commons.received` line for that publication (log timestamps, the same clock on one machine,
  so polling adds nothing; polled every POLL_S until all hold it). Prints p50, p99 and max
  against the target (every node within 2 s at p99), and how each node first received them
  (gossip or pull).
- **sharing**: share --acus ACUs (default 1,000) with a --members circle (default 50).
  First, one core's rates of protocols/share_crypto.py, each timed over --crypto-seconds (default
  1): `wrap_key` with a fresh ephemeral X25519 key per wrap (os.urandom, as the store draws it)
  and `unwrap_key`, `wrap_with_circle_key` and `unwrap_with_circle_key`.
  Then end to end, real node processes on loopback: Alice (a generated vivim-format export
  imported into her data directory before she starts: 20 ACUs per conversation, a question-
  answer and a code ACU per exchange) and the members, each its own process bootstrapping to
  Alice. Each member befriends Alice through the control APIs' real peering flow (Alice's
  invite, the member's `friend add`, Alice's `friend accept --trust close`, until the member
  lists Alice), then Alice creates the circle and adds every member (`circle add`, one version
  each). All members run during the shares unless --running-members is smaller: then the
  members are started in batches of that size to befriend them and all but the first batch are
  stopped before the circle is made (they stay members; with no relays, nothing is mailed to
  them). The clock: Alice shares every ACU with the circle one after another through her
  control API (POST /v1/shares, what `share ACU --circle NAME` sends): shares/s. A member holds
  them all at the timestamp of its --acus-th distinct `share.received` log line, measured from
  Alice's first `sharing.share` line (log timestamps, one clock on one machine, so polling adds
  nothing); after the clock each member's /v1/received (`acus list --received`) is counted
  too. Prints first, p50 and last member, the pulls, pages and items Alice served, pull and hint
  failures, the CPU seconds each process used from the first share to the last delivery, and
  RSS. "how" in the output says which members ran.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import nacl.public
import trio

from node.api_client import request_json
from node.local_cluster import NodeProcess, node_command, start_node, stop_all
from protocols.cid import content_id_of_bytes
from protocols.share_crypto import (
    KEY_LENGTH,
    KeyContext,
    WrappedKey,
    unwrap_key,
    unwrap_with_circle_key,
    wrap_key,
    wrap_with_circle_key,
)

TARGET_P99_S = 2.0
POLL_S = 0.05
SPREAD_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 120.0
FAST_REDIAL_ENV = {"VIVIM_REDIAL_MIN_S": "0.2", "VIVIM_REDIAL_MAX_S": "1"}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cli(*args: str) -> str:
    result = subprocess.run(node_command(*args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"vivim-node {args[0]} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def log_records(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    records = []
    for line in node.stderr_path.read_text().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


def stamp(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def quantile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: p99 of 20 values lies between the two largest)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- global: a publication's spread ---------------------------------------------------------------


def regular_graph(n: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """The edges (i, j), j < i, of a random connected simple `degree`-regular graph on n nodes
    (pairing model, drawn again until simple and connected)."""
    if n * degree % 2 or degree >= n:
        raise SystemExit(f"no {degree}-regular graph on {n} nodes")
    while True:
        stubs = [v for v in range(n) for _ in range(degree)]
        rng.shuffle(stubs)
        edges = {(max(a, b), min(a, b)) for a, b in zip(stubs[::2], stubs[1::2], strict=True)}
        if len(edges) != n * degree // 2 or any(a == b for a, b in edges):
            continue
        reached, frontier = {0}, [0]
        while frontier:
            v = frontier.pop()
            for a, b in edges:
                for x, y in ((a, b), (b, a)):
                    if x == v and y not in reached:
                        reached.add(y)
                        frontier.append(y)
        if len(reached) == n:
            return sorted(edges)


async def wait_edges(nodes: list[NodeProcess], edges: list[tuple[int, int]]) -> None:
    with trio.fail_after(CONNECT_TIMEOUT_S):
        while True:
            views = [await node.connected_peers() for node in nodes]
            if all(nodes[j].peer_id in views[i] and nodes[i].peer_id in views[j] for i, j in edges):
                return
            await trio.sleep(0.2)


def conversation_file(path: Path, title: str) -> Path:
    messages = []
    for n in range(3):
        messages.append({"role": "user", "content": f"{title}: question {n}?", "timestamp": n})
        messages.append({"role": "assistant", "content": f"{title}: answer {n}.", "timestamp": n})
    path.write_text(
        json.dumps({"title": title, "provider": "bench", "model": "m", "messages": messages})
    )
    return path


async def spread(node_list: list[NodeProcess], publisher: NodeProcess, acu: str) -> dict[str, Any]:
    published = json.loads(
        await trio.to_thread.run_sync(
            cli, "publish", acu, "--json", "--data-dir", str(publisher.data_dir)
        )
    )
    publication_id = published["id"]
    others = [n for n in node_list if n is not publisher]
    arrivals: dict[str, dict[str, Any]] = {}
    with trio.fail_after(SPREAD_TIMEOUT_S):
        while len(arrivals) < len(others):
            await trio.sleep(POLL_S)
            for node in others:
                if node.name in arrivals:
                    continue
                for record in log_records(node, "commons.received"):
                    if record["publication_id"] == publication_id:
                        arrivals[node.name] = record
                        break
    [origin] = [
        r
        for r in log_records(publisher, "commons.published")
        if r["publication_id"] == publication_id
    ]
    start = stamp(origin)
    return {
        "id": publication_id,
        "spread_s": max(stamp(r) for r in arrivals.values()) - start,
        "via": [r["via"] for r in arrivals.values()],
    }


async def global_section(args: argparse.Namespace, base_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    edges = regular_graph(args.nodes, args.degree, rng)
    nodes: list[NodeProcess] = []
    try:
        for i in range(args.nodes):
            bootstrap = [nodes[j].addr for (a, j) in edges if a == i]
            nodes.append(
                await start_node(
                    f"node{i}", base_dir / f"node{i}", bootstrap=bootstrap, env=FAST_REDIAL_ENV
                )
            )
        progress(f"global: {args.nodes} nodes started; waiting for {len(edges)} connections")
        await wait_edges(nodes, edges)
        publishers = [nodes[k % args.nodes] for k in range(args.publications)]
        acus: dict[str, str] = {}
        for node in nodes[: min(args.publications, args.nodes)]:
            path = conversation_file(base_dir / f"{node.name}.json", f"spread {node.name}")
            await trio.to_thread.run_sync(
                cli, "import", str(path), "--json", "--data-dir", str(node.data_dir)
            )
            listed = json.loads(
                await trio.to_thread.run_sync(
                    cli, "acus", "list", "--json", "--data-dir", str(node.data_dir)
                )
            )
            acus[node.name] = listed["acus"][0]["id"]
        progress(f"global: {args.publications} publications, one after another")
        results = []
        for k, publisher in enumerate(publishers):
            result = await spread(nodes, publisher, acus[publisher.name])
            progress(f"  publication {k + 1}: every node in {result['spread_s'] * 1000:.0f} ms")
            results.append(result)
    finally:
        await stop_all(nodes)
    times = [r["spread_s"] for r in results]
    via = [v for r in results for v in r["via"]]
    p99 = quantile(times, 99)
    return {
        "nodes": args.nodes,
        "degree": args.degree,
        "publications": len(results),
        "p50_s": round(quantile(times, 50), 4),
        "p99_s": round(p99, 4),
        "max_s": round(max(times), 4),
        "target_p99_s": TARGET_P99_S,
        "meets_target": p99 <= TARGET_P99_S,
        "received_by_gossip": via.count("gossip"),
        "received_by_pull": via.count("pull"),
    }


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--publications", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)


# --- sharing: 1,000 ACUs with a 50-member circle --------------------------------------------------

CIRCLE = "bench"
# Time for every running member to hold every share; far above what is expected, so a stall
# shows as a timeout with the counts so far, not as a hang.
DELIVER_TIMEOUT_S = 900.0
# Counting log lines of 50 nodes costs CPU on the cores they share; the figures come from the
# lines' timestamps, so polling slowly adds nothing to them.
DELIVER_POLL_S = 1.0
# Friend requests and acceptances go over the network: the CLI's own bound (node/cli_friends.py).
SEND_TIMEOUT_S = 60.0
# Nodes started at once: more only queue on the two cores.
START_CONCURRENCY = 4
# 10 exchanges, each answer with a code block: a question-answer ACU and a code ACU each (as in
# scripts/bench_sync.py's export).
ACUS_PER_CONVERSATION = 20


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls of `work` per second, over batches until `seconds` have passed."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            work()
        count += 200
    return count / elapsed


def key_rates(seconds: float) -> dict[str, float]:
    """protocols.share_crypto's wraps and unwraps per second on this machine's one core, each
    with what the store gives it: a fresh 32-byte ephemeral key per direct wrap (os.urandom, as
    store/sharing.py draws it), the contexts of a real grant and circle version."""
    acu_id = content_id_of_bytes(b"bench acu")
    grant_id = content_id_of_bytes(b"bench grant")
    circle_id = content_id_of_bytes(b"bench circle")
    content_key, circle_key = os.urandom(KEY_LENGTH), os.urandom(KEY_LENGTH)
    recipient = nacl.public.PrivateKey.generate()
    recipient_private, recipient_public = bytes(recipient), bytes(recipient.public_key)
    context = KeyContext.content(acu_id=acu_id, grant_id=grant_id)

    def wrap() -> WrappedKey:
        return wrap_key(
            content_key,
            context=context,
            recipient_x25519_public_key=recipient_public,
            ephemeral_private_key=os.urandom(KEY_LENGTH),
        )

    wrapped = wrap()
    under_circle = wrap_with_circle_key(
        content_key, circle_key, acu_id=acu_id, circle_id=circle_id, circle_key_version=3
    )
    rates = {
        "direct_wraps_per_s": rate(wrap, seconds),
        "direct_unwraps_per_s": rate(
            lambda: unwrap_key(
                wrapped, context=context, recipient_x25519_private_key=recipient_private
            ),
            seconds,
        ),
        "circle_wraps_per_s": rate(
            lambda: wrap_with_circle_key(
                content_key, circle_key, acu_id=acu_id, circle_id=circle_id, circle_key_version=3
            ),
            seconds,
        ),
        "circle_unwraps_per_s": rate(
            lambda: unwrap_with_circle_key(
                under_circle, circle_key, acu_id=acu_id, circle_id=circle_id, circle_key_version=3
            ),
            seconds,
        ),
    }
    return {name: round(value) for name, value in rates.items()}


def bulk_export(path: Path, conversations: int) -> None:
    """A vivim-format export (tests/fixtures/vivim_conversation.json's shape) of
    `conversations` conversations, ACUS_PER_CONVERSATION distinct ACUs each."""
    items = []
    for c in range(conversations):
        messages = []
        for m in range(ACUS_PER_CONVERSATION // 2):
            messages.append({"role": "user", "content": f"Question {m} of {c}?", "timestamp": c})
            answer = f"Answer {m} of {c}.\n\n```python\nprint({c}, {m})\n```\n"
            messages.append({"role": "assistant", "content": answer, "timestamp": c})
        items.append({"title": f"c{c}", "provider": "bench", "model": "m", "messages": messages})
    path.write_text(json.dumps(items))


async def call(
    node: NodeProcess, method: str, path: str, body: Any = None, timeout_s: float = 10.0
) -> Any:
    return await trio.to_thread.run_sync(
        partial(request_json, node.data_dir, method, path, body, timeout_s)
    )


def did_of(node: NodeProcess) -> str:
    return str(node.ready["did"])


async def acu_ids(node: NodeProcess, count: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while len(ids) < count:
        query = "/v1/acus?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = await call(node, "GET", query)
        ids += [a["id"] for a in page["acus"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    if len(ids) < count:
        sys.exit(f"the import made {len(ids)} ACUs, fewer than the {count} to share")
    return ids[:count]


async def befriend(alice: NodeProcess, member: NodeProcess) -> None:
    """The real peering flow through both control APIs: an invite from Alice, the member's
    request, Alice's acceptance; until the member lists Alice as a friend."""
    code = (await call(alice, "POST", "/v1/peering/invite", {"hours": 1}))["code"]
    await call(member, "POST", "/v1/friends/add", {"code": code}, SEND_TIMEOUT_S)
    await call(
        alice,
        "POST",
        "/v1/friends/accept",
        {"did": did_of(member), "trust": "close"},
        SEND_TIMEOUT_S,
    )
    with trio.fail_after(CONNECT_TIMEOUT_S):
        while did_of(alice) not in [
            f["did"] for f in (await call(member, "GET", "/v1/friends"))["friends"]
        ]:
            await trio.sleep(0.1)


async def start_members(
    base_dir: Path, names: list[str], alice: NodeProcess, into: list[NodeProcess]
) -> None:
    limiter = trio.CapacityLimiter(START_CONCURRENCY)

    async def one(name: str) -> None:
        async with limiter:
            into.append(await start_node(name, base_dir / name, bootstrap=[alice.addr]))

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)


def received_counts(members: list[NodeProcess]) -> dict[str, int]:
    return {m.name: len({r["grant_id"] for r in log_records(m, "share.received")}) for m in members}


async def sharing_section(args: argparse.Namespace, base_dir: Path) -> dict[str, Any]:
    progress(f"sharing: key wraps and unwraps, {args.crypto_seconds:g} s each")
    keys = key_rates(args.crypto_seconds)
    progress(f"  {keys}")
    running = min(args.running_members, args.members)
    holder = base_dir / "alice"
    await trio.to_thread.run_sync(cli, "init", "--data-dir", str(holder))
    bulk = base_dir / "bulk.json"
    bulk_export(bulk, -(-args.acus // ACUS_PER_CONVERSATION))
    progress(f"sharing: importing {args.acus} ACUs into Alice")
    await trio.to_thread.run_sync(cli, "import", str(bulk), "--data-dir", str(holder))
    nodes: list[NodeProcess] = []
    try:
        alice = await start_node("alice", holder)
        nodes.append(alice)
        acus = await acu_ids(alice, args.acus)
        # Every member is a real identity befriended through the real peering flow; those past
        # the first `running` are started for it in batches of `running` and stopped after it.
        members: list[NodeProcess] = []
        names = [f"member{i:02}" for i in range(args.members)]
        member_dids: list[str] = []
        for first in range(0, args.members, running):
            batch: list[NodeProcess] = []
            await start_members(base_dir, names[first : first + running], alice, batch)
            batch.sort(key=lambda m: m.name)
            nodes += batch
            for member in batch:
                await befriend(alice, member)
                member_dids.append(did_of(member))
            progress(f"sharing: {len(member_dids)} of {args.members} members are friends")
            if first == 0:
                members = batch
            else:
                await stop_all(batch)
        await call(alice, "POST", "/v1/circles", {"name": CIRCLE})
        for member_did in member_dids:
            await call(alice, "POST", f"/v1/circles/{CIRCLE}/members", {"did": member_did})
        [circle] = [
            c for c in (await call(alice, "GET", "/v1/circles"))["circles"] if c["name"] == CIRCLE
        ]
        with trio.fail_after(CONNECT_TIMEOUT_S):
            while not {m.peer_id for m in members} <= await alice.connected_peers():
                await trio.sleep(0.2)

        progress(f"sharing: Alice shares {len(acus)} ACUs with the circle ({running} members run)")
        pids = [n.process.pid for n in [alice, *members]]
        cpu_before = {pid: cpu_s(pid) for pid in pids}
        started = time.perf_counter()
        for acu in acus:
            await call(
                alice,
                "POST",
                "/v1/shares",
                {"acu_id": acu, "target_kind": "circle", "target": CIRCLE, "permissions": []},
            )
        share_s = time.perf_counter() - started
        progress(f"  {len(acus) / share_s:.0f} shares/s; waiting for the members to hold them")
        with trio.fail_after(DELIVER_TIMEOUT_S):
            while True:
                counts = received_counts(members)
                if min(counts.values()) >= len(acus):
                    break
                progress(f"  members hold {sorted(counts.values())[:: max(1, running // 10)]} ...")
                await trio.sleep(DELIVER_POLL_S)
        cpu = {pid: cpu_s(pid) - cpu_before[pid] for pid in pids}
        wall_s = time.perf_counter() - started
        rss = {pid: rss_mb(pid) for pid in pids}
        # Checked through the members' own API, after the clock: what `acus list --received`
        # shows.
        listed = [len((await call(m, "GET", "/v1/received"))["acus"]) for m in members]
    finally:
        await stop_all(nodes)

    shares = log_records(alice, "sharing.share")
    first_share, last_share = stamp(shares[0]), stamp(shares[-1])
    held_s, repeated = [], 0
    for member in members:
        # A grant pulled again (a hint's pull overlapping another) is logged again: the first
        # line of each grant is when the member got it.
        first_seen: dict[str, float] = {}
        records = log_records(member, "share.received")
        for record in records:
            first_seen.setdefault(record["grant_id"], stamp(record))
        repeated += len(records) - len(first_seen)
        held_s.append(max(first_seen.values()) - first_share)
    pulls = [len(log_records(m, "share.pulled")) for m in members]
    served = log_records(alice, "share.served")
    return {
        "keys": keys,
        "acus": len(acus),
        "members": args.members,
        "members_running": running,
        "how": (
            f"{args.members} member identities, each its own node process befriended through the"
            f" peering flow (invite, friend add, friend accept) and added to the circle; "
            + (
                "all of them run during the shares"
                if running == args.members
                else f"only the first {running} run during the shares (the others were started"
                f" in batches of {running} to befriend them, then stopped)"
            )
        ),
        "circle_version": circle["version"],
        "alice_shares_per_s": round(len(acus) / share_s, 1),
        "alice_share_s": round(share_s, 3),
        "alice_share_span_log_s": round(last_share - first_share, 3),
        "member_holds_all_s": {
            "first": round(min(held_s), 3),
            "p50": round(statistics.median(held_s), 3),
            "last": round(max(held_s), 3),
        },
        "last_member_after_last_share_s": round(max(held_s) - (last_share - first_share), 3),
        "received_listed": {"min": min(listed), "max": max(listed)},
        "pulls_per_member": {"min": min(pulls), "max": max(pulls)},
        "pages_served": len(served),
        "items_served": sum(int(r["items"]) for r in served),
        "received_again": repeated,
        "pull_failures": sum(len(log_records(m, "share.pull_failed")) for m in members),
        "hint_failures": sum(
            stamp(r) >= first_share for r in log_records(alice, "share.hint_failed")
        ),
        "cpu_s": {
            "alice": round(cpu[alice.process.pid], 1),
            "members_total": round(sum(cpu[m.process.pid] for m in members), 1),
            "wall_s": round(wall_s, 1),
        },
        "rss_mb": {
            "alice": round(rss[alice.process.pid]),
            "member_mean": round(statistics.mean(rss[m.process.pid] for m in members)),
        },
    }


def add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--acus", type=int, default=1000)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument(
        "--running-members",
        type=int,
        default=50,
        help="members running as processes while Alice shares (the rest befriended, then stopped)",
    )
    parser.add_argument("--crypto-seconds", type=float, default=1.0)


# --- sections -------------------------------------------------------------------------------------

Section = Callable[[argparse.Namespace, Path], Awaitable[dict[str, Any]]]
SECTIONS: dict[str, tuple[Section, Callable[[argparse.ArgumentParser], None]]] = {
    "global": (global_section, add_global_arguments),
    "sharing": (sharing_section, add_sharing_arguments),
}


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench_share-"))
    figures: dict[str, Any] = {}
    try:
        for name in args.sections:
            section_dir = base / name
            section_dir.mkdir()
            figures[name] = await SECTIONS[name][0](args, section_dir)
    finally:
        if args.keep:
            progress(f"data directories kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(figures, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=sorted(SECTIONS),
        default=sorted(SECTIONS),
        help="which sections to run (default: all)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    for _, add_arguments in SECTIONS.values():
        add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
