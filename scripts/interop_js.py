#!/usr/bin/env python3
"""Check that js-libp2p and a real vivim-node interoperate: connect, identify and ping, both ways.

    .venv/bin/python scripts/interop_js.py [--pings 5] [--no-reverse] [--npm-ci] [--keep]

Needs Node.js and npm. The js side lives in scripts/interop/js (exact versions pinned in its
package.json and package-lock.json); when its node_modules is missing (or with --npm-ci), this runs
`npm ci` there first, which needs the npm registry.

Forward: it starts a vivim-node on 127.0.0.1 (node.local_cluster.start_node, in a temporary
directory) and runs `node dial.mjs <its multiaddr> --hold`, a js-libp2p peer (TCP, Noise, Yamux,
identify, ping) that dials it, runs identify and pings it. The check: the identify result names our
peer id and announces /ipfs/id/1.0.0 and /ipfs/ping/1.0.0, at least one ping got an answer, and
the node's control API (/v1/peers) lists the js peer as connected while dial.mjs holds the
connection open.

Reverse (unless --no-reverse): it runs `node listen.mjs`, a js-libp2p listener, and starts a
second vivim-node with --bootstrap <its multiaddr>. The check: the js side sees an inbound Noise +
Yamux connection from that node, identifies it (same protocols as above), pings it back over that
connection, and the node's /v1/peers lists the js peer as connected.

Progress goes to stderr; one JSON summary line goes to stdout ("ok": true or false). It stops every
process it started and exits 0 on success, 1 on a failed check (the message says which, with the
tail of the relevant log), 2 when Node.js/npm are missing or `npm ci` fails. The temporary
directory (node data, logs) is removed unless --keep is given or a check failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.local_cluster import NodeProcess, start_node

JS_DIR = Path(__file__).resolve().parent / "interop" / "js"
JS_PACKAGES = (
    "libp2p",
    "@libp2p/tcp",
    "@chainsafe/libp2p-noise",
    "@chainsafe/libp2p-yamux",
    "@libp2p/identify",
    "@libp2p/ping",
    "@multiformats/multiaddr",
)
REQUIRED_PROTOCOLS = ("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0")
# Bounds for each step; on loopback each takes well under a second.
STEP_TIMEOUT_S = 30.0
CONNECTED_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
JS_STOP_TIMEOUT_S = 5.0


class InteropFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"interop_js: {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(text) or "(empty)"


def ensure_js_deps(force: bool) -> dict[str, str]:
    """Node.js and npm present, node_modules installed from the lock file; the versions in use."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"interop_js: `{tool}` is not on PATH; install Node.js (>= 20) first")
    if force or not (JS_DIR / "node_modules").is_dir():
        reason = "--npm-ci given" if force else "node_modules is missing"
        log(f"{reason}: running `npm ci` in {JS_DIR} (needs the npm registry)")
        result = subprocess.run(
            # npm's report goes to our stderr: stdout carries only the summary line.
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            stdout=sys.stderr,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(
                f"interop_js: `npm ci` in {JS_DIR} failed (status {result.returncode})"
            )
    node_version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    versions = {"node": node_version}
    for package in JS_PACKAGES:
        manifest = JS_DIR / "node_modules" / package / "package.json"
        try:
            versions[package] = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(
                f"interop_js: {package} is not installed in {JS_DIR}/node_modules ({err}); "
                "run again with --npm-ci"
            ) from err
    return versions


@dataclass
class JsProcess:
    """A `node <script>` child: JSON lines on stdout, stderr to a file, stdin held open."""

    name: str
    process: trio.Process
    stderr_path: Path
    buffer: bytes = b""

    @classmethod
    async def start(cls, name: str, args: list[str], stderr_path: Path) -> JsProcess:
        with stderr_path.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                ["node", *args],
                cwd=JS_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        return cls(name, process, stderr_path)

    async def next_json(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                code = await self.process.wait()
                raise InteropFailed(
                    f"{self.name} exited with status {code} before printing a result; "
                    f"its stderr ends with:\n{tail(self.stderr_path)}"
                )
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            value = json.loads(line)
        except ValueError as err:
            raise InteropFailed(f"{self.name} printed a line that is not JSON: {line!r}") from err
        if not isinstance(value, dict):
            raise InteropFailed(f"{self.name} printed JSON that is not an object: {line!r}")
        return value

    async def stop(self) -> int:
        """Close its stdin (its cue to stop); SIGTERM, then SIGKILL, if it does not."""
        with trio.CancelScope(shield=True):
            if self.process.stdin is not None:
                await self.process.stdin.aclose()
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.process.returncode is None:
                    self.process.send_signal(sig)
                with trio.move_on_after(JS_STOP_TIMEOUT_S):
                    return await self.process.wait()
            return await self.process.wait()


def check_identify(who: str, result: dict[str, Any], expected_peer: str) -> None:
    if result.get("peer_id") != expected_peer:
        raise InteropFailed(
            f"{who}: identify names peer {result.get('peer_id')}, expected {expected_peer}"
        )
    protocols = result.get("protocols") or []
    missing = [p for p in REQUIRED_PROTOCOLS if p not in protocols]
    if missing:
        raise InteropFailed(
            f"{who}: identify does not announce {', '.join(missing)}; "
            f"it announced {protocols} (agent {result.get('agent_version')})"
        )


def check_pings(who: str, result: dict[str, Any]) -> None:
    if not result.get("ping_rtts_ms"):
        raise InteropFailed(f"{who}: no ping was answered; errors: {result.get('ping_errors')}")


async def wait_connected(node: NodeProcess, peer_id: str, who: str) -> None:
    """Until the node's /v1/peers lists peer_id as connected (it polls its swarm every 250 ms)."""
    with trio.move_on_after(CONNECTED_TIMEOUT_S):
        while True:
            if peer_id in await node.connected_peers():
                return
            await trio.sleep(POLL_INTERVAL_S)
    peers = await node.api("/v1/peers")
    raise InteropFailed(
        f"{who}: the node's /v1/peers did not list js peer {peer_id} as connected within "
        f"{CONNECTED_TIMEOUT_S:.0f}s; it lists {peers.get('peers')}; node stderr ends with:\n"
        + node.stderr_tail()
    )


async def forward(base: Path, pings: int) -> dict[str, Any]:
    """js-libp2p dials our node, identifies and pings it."""
    node = await start_node("vivim-listener", base / "vivim-listener")
    try:
        log(f"forward: node {node.peer_id} listens on {node.addr}; running dial.mjs")
        js = await JsProcess.start(
            "dial.mjs",
            ["dial.mjs", node.addr, "--pings", str(pings), "--hold"],
            base / "dial.mjs.stderr.log",
        )
        try:
            with trio.fail_after(STEP_TIMEOUT_S):
                result = await js.next_json()
            if not result.get("ok"):
                raise InteropFailed(
                    f"forward: dial.mjs failed at {result.get('stage')}: {result.get('error')}; "
                    f"node stderr ends with:\n{node.stderr_tail()}"
                )
            check_identify("forward", result, node.peer_id)
            check_pings("forward", result)
            await wait_connected(node, result["local_peer_id"], "forward")
            log(
                f"forward: js peer {result['local_peer_id']} identified our node "
                f"({result['agent_version']}), pings {result['ping_rtts_ms']} ms, "
                "and the node lists it as connected"
            )
        finally:
            code = await js.stop()
        if code != 0:
            raise InteropFailed(
                f"forward: dial.mjs exited with status {code}; its stderr ends with:\n"
                + tail(js.stderr_path)
            )
        return {
            "node_peer_id": node.peer_id,
            "js_peer_id": result["local_peer_id"],
            "agent_version": result["agent_version"],
            "protocol_version": result["protocol_version"],
            "protocols": result["protocols"],
            "connection": result["connection"],
            "ping_rtts_ms": result["ping_rtts_ms"],
            "node_saw_js_peer_connected": True,
        }
    finally:
        await node.stop()


async def reverse(base: Path, pings: int) -> dict[str, Any]:
    """Our node bootstraps to a js-libp2p listener, which identifies and pings it back."""
    js = await JsProcess.start(
        "listen.mjs", ["listen.mjs", "--pings", str(pings)], base / "listen.mjs.stderr.log"
    )
    node: NodeProcess | None = None
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            listening = await js.next_json()
        if listening.get("event") != "listening" or not listening.get("addrs"):
            raise InteropFailed(f"reverse: listen.mjs did not report listening: {listening}")
        js_peer, js_addr = listening["peer_id"], listening["addrs"][0]
        log(f"reverse: js peer {js_peer} listens on {js_addr}; starting a node that dials it")
        node = await start_node("vivim-dialer", base / "vivim-dialer", bootstrap=[js_addr])
        events: dict[str, dict[str, Any]] = {}
        with trio.move_on_after(STEP_TIMEOUT_S) as scope:
            while not {"connect", "identify", "ping"} <= events.keys():
                event = await js.next_json()
                if event.get("event") == "error":
                    raise InteropFailed(f"reverse: listen.mjs reported {event}")
                if event.get("peer_id") == node.peer_id:
                    events.setdefault(str(event["event"]), event)
        if scope.cancelled_caught:
            raise InteropFailed(
                f"reverse: within {STEP_TIMEOUT_S:.0f}s listen.mjs saw only {sorted(events)} "
                f"from node {node.peer_id} (want connect, identify, ping); node stderr ends "
                f"with:\n{node.stderr_tail()}\nlisten.mjs stderr ends with:\n{tail(js.stderr_path)}"
            )
        connect = events["connect"]
        if connect.get("direction") != "inbound":
            raise InteropFailed(f"reverse: the js side saw a {connect.get('direction')} connection")
        check_identify("reverse", events["identify"], node.peer_id)
        check_pings("reverse", events["ping"])
        await wait_connected(node, js_peer, "reverse")
        log(
            f"reverse: node {node.peer_id} dialed the js peer, which identified it and pinged it "
            f"back ({events['ping']['ping_rtts_ms']} ms); the node lists the js peer as connected"
        )
        return {
            "node_peer_id": node.peer_id,
            "js_peer_id": js_peer,
            "agent_version": events["identify"]["agent_version"],
            "protocols": events["identify"]["protocols"],
            "connection": {k: connect[k] for k in ("direction", "encryption", "multiplexer")},
            "ping_rtts_ms": events["ping"]["ping_rtts_ms"],
            "node_saw_js_peer_connected": True,
        }
    finally:
        if node is not None:
            await node.stop()
        await js.stop()


async def run(args: argparse.Namespace, versions: dict[str, str], base: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {"event": "interop_js", "ok": False, "versions": versions}
    try:
        summary["forward"] = await forward(base, args.pings)
        if not args.no_reverse:
            summary["reverse"] = await reverse(base, args.pings)
        summary["ok"] = True
    except InteropFailed as err:
        summary["error"] = str(err).split("\n", 1)[0]
        summary["dir"] = str(base)
        log(f"FAILED: {err}")
        log(f"logs are kept in {base}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Check js-libp2p <-> vivim-node interop (connect, identify, ping)."
    )
    parser.add_argument("--pings", type=int, default=5, help="pings per direction (default 5)")
    parser.add_argument("--no-reverse", action="store_true", help="skip our node dialing js")
    parser.add_argument("--npm-ci", action="store_true", help="run `npm ci` even if installed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.pings < 1:
        parser.error("--pings must be at least 1")
    try:
        versions = ensure_js_deps(args.npm_ci)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    log("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    base = Path(tempfile.mkdtemp(prefix="vivim-interop-js-"))
    summary = trio.run(run, args, versions, base)
    print(json.dumps(summary), flush=True)
    if summary["ok"] and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    elif summary["ok"]:
        log(f"kept {base}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
