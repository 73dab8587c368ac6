#!/usr/bin/env python3
"""The whole story of vivim-node in one run, with real node processes on this machine.

    .venv/bin/python scripts/demo.py [--keep] [--timeout 60]

Five nodes on 127.0.0.1, each its own process with its own data directory: Alice's laptop and
phone (two devices of one identity), her friend Bob, Dave (a stranger) and a relay R. Alice
imports a conversation on her laptop and her phone gets it by sync; Bob registers at R and
becomes Alice's friend; while Bob is offline Alice shares an ACU with him, her node mails it to R,
and Bob reads it when he comes back (Alice's laptop is offline by then, so only R can have brought
it); Alice publishes another ACU and Dave, connected only to Bob, receives and verifies it. Every
action is a `vivim-node` command (`--json`), shown as it runs; waiting for its effect polls the
node's API. Each step is told as it happens and summed up at the end.

A step that does not happen within --timeout seconds stops the demo with exit status 1 and the
end of the relevant node's log. The nodes are always stopped (Ctrl-C included) and their data
directories removed, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.errors import NodeError
from node.local_cluster import NodeProcess, node_command, start_node, stop_all

T = TypeVar("T")

# What a newcomer should see happen, in order: (key, what it means). The summary reports each.
STEPS = (
    ("paired", "Alice's phone joins her identity"),
    ("synced", "the conversation imported on her laptop syncs to her phone"),
    ("friends", "Alice and Bob become friends"),
    ("mailed", "Alice's node mails a share to relay R while Bob is offline"),
    ("received", "Bob comes back and reads the share, delivered by R"),
    ("published", "Dave, a stranger, receives and verifies Alice's publication"),
)
# Polling another process (its CLI) is all a script can do; 0.2 s keeps five nodes and the
# polling CLI within two cores.
POLL_S = 0.2
WIDTH = 100

CONVERSATION = {
    "title": "Basil on the windowsill",
    "provider": "claude",
    "model": "claude-3-5-sonnet",
    "messages": [
        {"role": "user", "content": "Why are my basil leaves turning yellow?", "timestamp": 0},
        {
            "role": "assistant",
            "content": "Usually overwatering: the roots sit wet and cannot take up nitrogen.",
            "timestamp": 30,
        },
        {"role": "user", "content": "How often should I water it?", "timestamp": 60},
        {
            "role": "assistant",
            "content": "When the top two centimetres of soil are dry, about twice a week.",
            "timestamp": 90,
        },
        {"role": "user", "content": "Should I pinch off the flowers?", "timestamp": 120},
        {
            "role": "assistant",
            "content": "Yes: flowering makes the leaves bitter and the plant stops growing.",
            "timestamp": 150,
        },
    ],
}


class DemoFailed(Exception):
    """A step did not happen; `node` is the one whose log tells why."""

    def __init__(self, message: str, node: NodeProcess | None = None) -> None:
        super().__init__(message)
        self.node = node


@dataclass
class Demo:
    base: Path
    timeout: float
    started: float
    nodes: list[NodeProcess]
    results: dict[str, tuple[float, str]]

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        prefix = f"[{self.elapsed():5.1f} s] "
        print(
            textwrap.fill(text, WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix)),
            flush=True,
        )

    def done(self, key: str, detail: str) -> None:
        self.results[key] = (self.elapsed(), detail)

    async def start(self, name: str, **kwargs: Any) -> NodeProcess:
        try:
            node = await start_node(name, self.base / name, **kwargs)
        except NodeError as err:
            raise DemoFailed(str(err)) from err
        self.nodes.append(node)
        return node

    async def restart(self, node: NodeProcess, **kwargs: Any) -> NodeProcess:
        """The same node again, on the same address (so that others find it where it was)."""
        return await self.start(node.name, listen=[node.listen_addr], **kwargs)

    async def cli(
        self, node: NodeProcess | str, *args: str, log_of: NodeProcess | None = None
    ) -> Any:
        """`vivim-node ARGS --json` on the node's data directory, shown; its answer as JSON.

        `node` is a name for a directory whose node does not run; `log_of` is the node whose
        log explains a failure (by default `node`).
        """
        name = node if isinstance(node, str) else node.name
        shown = f"vivim-node {' '.join(short(a) for a in args)}"
        print(f"{'':10}{name}$ {shown}", flush=True)
        command = node_command(*args, "--json", "--data-dir", str(self.base / name))
        what = f"`{shown}` on {name}"
        if log_of is None and not isinstance(node, str):
            log_of = node
        try:
            with trio.fail_after(self.timeout):
                result = await trio.run_process(
                    command, capture_stdout=True, capture_stderr=True, check=False
                )
        except trio.TooSlowError:
            raise DemoFailed(f"{what} took over {self.timeout:g} s", log_of) from None
        if result.returncode != 0:
            stderr = result.stderr.decode().strip()
            raise DemoFailed(f"{what} failed (exit {result.returncode}): {stderr}", log_of)
        return json.loads(result.stdout)

    async def until(
        self, what: str, node: NodeProcess, path: str, check: Callable[[Any], T | None]
    ) -> T:
        """Ask the node's API for `path` until `check` finds something (true) in the answer.

        Polling goes through the API rather than the CLI: a CLI process costs a few hundred ms
        of CPU, which the nodes need more on two cores. What it reads is what the CLI prints.
        """
        try:
            with trio.fail_after(self.timeout):
                while True:
                    found = check(await node.api(path))
                    if found:
                        return found
                    await trio.sleep(POLL_S)
        except trio.TooSlowError:
            raise DemoFailed(f"{what} did not happen within {self.timeout:g} s", node) from None
        except NodeError as err:
            raise DemoFailed(f"{what}: {node.name}'s API failed: {err}", node) from err


def short(text: str) -> str:
    """A DID, id, code, address or path cut to what a reader needs to tell them apart."""
    if "/p2p/" in text:
        address, peer_id = text.rsplit("/p2p/", 1)
        return f"{address}/p2p/{short(peer_id)}"
    for prefix in ("did:key:", "vivim-pair:", "vivim-invite:", "bafy", "12D3KooW"):
        if text.startswith(prefix) and len(text) > 24:
            return f"{text[: len(prefix) + 4]}…{text[-4:]}"
    if text.startswith("/") and len(text) > 24:
        return Path(text).name
    return text


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def first_line(acu: dict[str, Any]) -> str:
    return str(acu["content"]).splitlines()[0]


def held_for(did: str) -> Callable[[Any], int]:
    """From a relay's status: how many envelopes it holds for `did`."""
    return lambda status: sum(r["envelopes"] for r in status["by_recipient"] if r["did"] == did)


def connected(peers: Any) -> set[str]:
    return {p["peer_id"] for p in peers["peers"] if p["connected"]}


def relay_files(relay: NodeProcess) -> bytes:
    """The relay's database as it is on disk, write-ahead log included."""
    files = (relay.data_dir / "vivim.db", relay.data_dir / "vivim.db-wal")
    return b"".join(path.read_bytes() for path in files if path.exists())


async def story(demo: Demo) -> None:
    say, cli, until = demo.say, demo.cli, demo.until

    say(
        "Starting relay R: a node that holds encrypted mail for people whose devices are "
        "offline (`vivim-node run` with VIVIM_RELAY=1)."
    )
    relay = await demo.start("relay", env={"VIVIM_RELAY": "1"})

    say("Starting Alice's laptop, her first device. `init` creates her identity, a DID, there.")
    laptop = await demo.start("alice-laptop", bootstrap=[relay.addr])
    alice = laptop.ready["did"]
    say(f"Alice is {short(alice)}; her laptop is device {short(laptop.peer_id)}.")

    say(
        "Alice adds her phone. Her laptop makes a one-time pairing code; the phone joins her "
        "identity with it, then runs its own node, which dials the laptop."
    )
    code = (await cli(laptop, "device", "pair"))["code"]
    await cli("alice-phone", "init", "--join", code, log_of=laptop)
    phone = await demo.start("alice-phone")
    if phone.ready["did"] != alice:
        raise DemoFailed(f"the phone runs as {phone.ready['did']}, not as Alice", phone)
    say(f"The phone is device {short(phone.peer_id)}, acting for Alice's DID like the laptop.")
    demo.done("paired", "Alice's phone joined her identity with a code from her laptop")

    say(
        "Alice imports a conversation on her laptop. It is cut into ACUs (atomic chat units), "
        "here each question with its answer; each is signed by her and never changes."
    )
    export = demo.base / "basil.json"
    export.write_text(json.dumps(CONVERSATION, indent=2))
    await cli(laptop, "import", str(export), "--format", "vivim")
    imported = time.monotonic()
    acus = (await laptop.api("/v1/acus"))["acus"]
    ids = {a["id"] for a in acus}
    await until(
        "the phone getting the imported ACUs",
        phone,
        "/v1/acus",
        lambda page: {a["id"] for a in page["acus"]} >= ids,
    )
    took = time.monotonic() - imported
    await cli(phone, "acus", "list")
    say(
        f"The laptop holds {plural(len(acus), 'ACU')}; sync brought them all to the phone "
        f"{took:.1f} s after the import."
    )
    demo.done(
        "synced", f"{len(acus)} ACUs imported on the laptop were on the phone {took:.1f} s later"
    )

    say(
        "Starting Bob's node. Bob registers at relay R, so that mail for him can wait there "
        "while he is offline."
    )
    bob_node = await demo.start("bob", bootstrap=[relay.addr])
    bob = bob_node.ready["did"]
    await cli(bob_node, "mailbox", "register", relay.addr)

    say(
        "Alice makes an invite code and gives it to Bob. Bob's node sends her a signed friend "
        "request with it, naming his relay; Alice accepts."
    )
    invite = (await cli(laptop, "invite"))["code"]
    await cli(bob_node, "friend", "add", invite)
    await cli(laptop, "friend", "accept", bob)
    await until(
        "Bob receiving Alice's acceptance",
        bob_node,
        "/v1/friends",
        lambda r: alice in {f["did"] for f in r["friends"]},
    )
    say("Alice and Bob are friends: each holds the request and the acceptance, both signed.")
    demo.done("friends", "Alice and Bob are friends: invite, signed request, signed acceptance")

    say("Bob goes offline: his node stops.")
    await bob_node.stop()

    shared = next(a for a in acus if "water it" in a["content"])
    say(
        f'Alice shares one ACU with Bob: "{first_line(shared)}" Her node encrypts it for Bob '
        "alone and, as he is offline, seals it to him and deposits it at his relay R."
    )
    before = held_for(bob)(await relay.api("/v1/relay/status"))
    await cli(laptop, "share", shared["id"], "--with", bob)
    envelopes = await until(
        "Alice's node mailing the share to R",
        relay,
        "/v1/relay/status",
        lambda r: max(0, held_for(bob)(r) - before),
    )
    await cli(relay, "relay", "status")
    if shared["content"].encode() in relay_files(relay):
        raise DemoFailed("the shared ACU's text is in the relay's database in the clear", relay)
    say(
        f"R holds {plural(envelopes, 'envelope')} for Bob, sealed to him: the ACU's text is "
        "nowhere in R's database."
    )
    demo.done(
        "mailed",
        f"Bob offline: Alice's node left {plural(envelopes, 'envelope')} at R (no plaintext there)",
    )

    say(
        "Alice closes her laptop too. She and Bob are never online at the same time from now "
        "on, so the share can only reach Bob through R."
    )
    await laptop.stop()

    say("Bob comes back. His node fetches its mail from R, decrypts it and checks Alice's grant.")
    back_ms = time.time() * 1000
    bob_node = await demo.restart(bob_node, bootstrap=[relay.addr])
    got = await until(
        "Bob receiving the shared ACU",
        bob_node,
        "/v1/received",
        lambda r: next((a for a in r["acus"] if a["acu_id"] == shared["id"]), None),
    )
    await cli(bob_node, "acus", "list", "--received")
    if got["content"] != shared["content"]:
        raise DemoFailed("Bob's copy of the shared ACU differs from Alice's", bob_node)
    mailbox = await cli(bob_node, "mailbox", "status")
    letters = mailbox["received_by_outcome"].get("applied", 0)
    if not letters:
        raise DemoFailed("Bob's node took no letter from R", bob_node)
    left = held_for(bob)(await relay.api("/v1/relay/status"))
    took = (got["received_at_ms"] - back_ms) / 1000
    say(
        f'Bob reads "{first_line(got)}" {took:.1f} s after starting his node: his node took '
        f"{plural(letters, 'letter')} from R, which now holds {left} for him."
    )
    demo.done(
        "received",
        f"Bob back, Alice away: he read the share via R, {took:.1f} s after starting",
    )

    say("Starting Dave, a stranger: not Alice's friend, and connected only to Bob.")
    dave = await demo.start("dave", bootstrap=[bob_node.addr])
    await until(
        "Dave connecting to Bob", dave, "/v1/peers", lambda r: bob_node.peer_id in connected(r)
    )

    say("Alice opens her laptop again; her node reconnects to her friend Bob.")
    laptop = await demo.restart(laptop, bootstrap=[relay.addr])
    await until(
        "Alice's laptop reconnecting to Bob",
        laptop,
        "/v1/peers",
        lambda r: bob_node.peer_id in connected(r),
    )

    public = next(a for a in acus if "yellow" in a["content"])
    say(
        f'Alice publishes another ACU to the global commons: "{first_line(public)}" A '
        "publication is signed, public and permanent; it spreads by gossip to every node."
    )
    publication = await cli(laptop, "publish", public["id"], "--title", "Yellow basil leaves")
    await until(
        "Dave receiving the publication",
        dave,
        "/v1/global",
        lambda r: publication["id"] in {p["id"] for p in r["publications"]},
    )
    await cli(dave, "global", "list")
    seen = await cli(dave, "global", "show", publication["id"])
    if seen["publisher_did"] != alice or seen["content"]["acu"]["content"] != public["content"]:
        raise DemoFailed("Dave's copy of the publication is not Alice's", dave)
    names = {n.peer_id: n.name for n in demo.nodes}
    source = names.get(seen["received_from"], short(seen["received_from"]))
    peers = sorted(names.get(p, short(p)) for p in connected(await dave.api("/v1/peers")))
    took = (seen["received_at_ms"] - publication["published_at_ms"]) / 1000
    say(
        f"Dave holds it {took:.2f} s after it was published, received from {source} (Dave is "
        f"connected to {', '.join(peers)}). His node checked Alice's signature and her "
        "device's certificate before keeping it; it keeps nothing it cannot verify."
    )
    demo.done(
        "published",
        f"Dave, a stranger, had Alice's publication {took:.2f} s after it, via {source}",
    )


def print_summary(demo: Demo, failed: bool) -> None:
    print("\nSummary")
    reached = True
    for key, meaning in STEPS:
        if key in demo.results:
            at, detail = demo.results[key]
            print(f"  ok      {at:5.1f} s  {key:9}  {detail}")
        elif reached and failed:
            print(f"  FAILED           {key:9}  {meaning}")
            reached = False
        else:
            print(f"  not reached      {key:9}  {meaning}")
    if not failed:
        print(f"Demo finished in {demo.elapsed():.1f} s: every step happened.", flush=True)


async def main(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="vivim-demo-"))
    demo = Demo(base, args.timeout, time.monotonic(), [], {})
    print("vivim-node demo: five nodes on 127.0.0.1, each its own process and data directory.")
    code = 130  # unless the story ends: stopped by a signal
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            try:
                await story(demo)
            except DemoFailed as err:
                print_summary(demo, failed=True)
                print(f"\nerror: {err}", file=sys.stderr)
                if err.node is not None:
                    print(
                        f"the end of {err.node.name}'s log ({err.node.stderr_path}):\n"
                        + err.node.stderr_tail(),
                        file=sys.stderr,
                    )
                code = 1
            else:
                print_summary(demo, failed=False)
                code = 0
            finally:
                await stop_all(demo.nodes)
            nursery.cancel_scope.cancel()
    finally:
        if args.keep:
            print(f"\nData directories and logs (NAME.stderr.log) kept in {base}", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return code


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("\nstopping the demo's nodes", file=sys.stderr)
            scope.cancel()
            return


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directories and logs, and say where"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds each step may take before the demo gives up (default 60)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
