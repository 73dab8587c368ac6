#!/usr/bin/env python3
"""Mailbox benchmark: senders deposit sealed envelopes at a relay; the recipient drains them.

    .venv/bin/python scripts/bench_mailbox.py [--envelopes 10000] [--senders 10] [--json]

Real processes on loopback: a relay (`VIVIM_RELAY=1`) and the recipient, a node of its own
identity registered at the relay (`mailbox register`). The senders are --senders devices paired
into that identity (`device pair`, `init --join`) that never run as nodes: before the clock
starts, ops are written in each one's own vault (store APIs on its database: a few imported
conversations, then renames) and every op is put in a letter of its own (`sync.ops`), signed by
the sender's device key and sealed to the identity's X25519 key, about 1 KiB of ciphertext. A
sender's first letter carries its first op, its self-introduction with its certificate chain, so
the recipient's ordinary checks accept everything after it.

Deposits (timed): in this process, one trio task per sender, each with its own libp2p host (its
device key), a link to the relay and an introduction; the clock runs from the first deposit to
the last `Stored`, each sender depositing DEPOSIT_BATCH envelopes per request (a Deposit holds
several, as an outbox sends them), one request after another on its stream. Each sender has
the relay's per-device token bucket (node/relay.py: 500/s, burst 2,000; a `rate_limited`
refusal is retried after RATE_LIMITED_RETRY_S and counted). The senders being devices of the
recipient's own DID (a sync.ops letter from another identity is refused by the recipient), the
relay pushes a notice of the new mail to every one of them but the depositor, at most one round
per NOTICE_COALESCE_S. The senders take those notices as a node
does (read, close; they start no drain): left unanswered (protocol not supported) they cost both
processes more than the deposits do. Notices taken are counted and printed.

Drain (timed): the recipient node starts again and drains the relay on start (list, fetch, open,
apply, ack). The clock runs from the start command (which is `init --if-missing` and `run`, as
node.local_cluster.start_node does) until the recipient's heads reach every sender's head and
the relay holds no more than before the deposits (the recipient's own mailed ops, which it never
takes back), polled every POLL_S. Startup (until the ready line) is printed apart, so drain/s reads
with and without it, and so is the drain's time as the recipient logged it (`mailbox.received`).

Prints deposits/s and drain/s against the target of 2,000 envelopes/s each way, the relay's peak
RSS (VmHWM) and the size of its database (vivim.db, -wal, -shm) right after the deposits.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import nacl.public
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError

from node.host import build_host
from node.identity import DATABASE_FILE, load_local_identity
from node.keys import encryption_key_file
from node.local_cluster import NodeProcess, node_command, start_node, stop_all
from node.mailbox_link import MailboxRefused, open_link
from node.streams import close_quietly, read_some
from protocols.envelope import Envelope, Letter, seal
from protocols.errors import RemoteProtocolError
from protocols.importers import parse_export
from protocols.mailbox_notice import (
    MAILBOX_NOTICE_PROTOCOL_ID,
    MAX_NOTICE_FRAME,
    NeedData,
    NoticeReader,
)
from protocols.vault_records import ImportedConversation
from store import mailbox as mailbox_store
from store.database import open_database, write_transaction
from store.devices import Credentials, credentials_of, trust_state
from store.vault import import_conversations, set_title
from store.vault_sql import connection

TARGET_PER_S = 2000.0
DAY_MS = 24 * 3600 * 1000
# A rename whose title is this long is an op of about 700 bytes, a sealed letter of about 1 KiB.
TITLE_LENGTH = 150
# One letter in this many is a conversation's or an ACU's create op (about 900 bytes of op).
CONVERSATION_EVERY = 10
RATE_LIMITED_RETRY_S = 0.02
# Envelopes per Deposit request (about 52 KiB): what an outbox sends a relay at once.
DEPOSIT_BATCH = 50
# The drain is timed by polling both nodes' APIs this often (its log gives the drain's own time).
POLL_S = 0.1
DRAIN_TIMEOUT_S = 1800.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cli(*args: str) -> str:
    result = subprocess.run(node_command(*args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"vivim-node {args[0]} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def database_bytes(data_dir: Path) -> dict[str, int]:
    """The sizes of the database file, its WAL and its shared-memory index, and their total."""
    sizes = {}
    for part, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm")):
        path = data_dir / (DATABASE_FILE + suffix)
        sizes[part] = path.stat().st_size if path.exists() else 0
    sizes["total"] = sum(sizes.values())
    return sizes


def log_records(path: Path, offset: int, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of `event` in `path` past `offset` bytes."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode().splitlines()
    found = []
    for line in lines:
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


# --- setting up ----------------------------------------------------------------------------------


@dataclass
class Sender:
    data_dir: Path
    device_seed: bytes
    peer_id: str
    credentials: Credentials
    head: int
    envelopes: list[Envelope]


def conversations(prefix: str, count: int) -> list[ImportedConversation]:
    items = [
        {
            "title": f"{prefix} {c}",
            "provider": "bench",
            "model": "m",
            "messages": [
                {"role": "user", "content": f"{prefix} question {c}?", "timestamp": c},
                {"role": "assistant", "content": f"{prefix} answer {c}.", "timestamp": c},
            ],
        }
        for c in range(count)
    ]
    parsed = list(parse_export(items))
    assert all(isinstance(p, ImportedConversation) for p in parsed), parsed
    return [p for p in parsed if isinstance(p, ImportedConversation)]


def write_ops(data_dir: Path, letters: int) -> None:
    """`letters - 1` ops of this device after its introduction (its first op), in its own vault:
    imported conversations (an op for each and one for its ACU), then renames of them."""
    identity = load_local_identity(data_dir)
    signer = identity.signer()
    db = open_database(data_dir / DATABASE_FILE)
    try:
        wanted = letters - 1  # the first letter carries the introduction
        count = max(1, wanted // CONVERSATION_EVERY // 2)  # each is 2 ops: conversation, ACU
        result = import_conversations(db, signer, conversations(identity.peer_id, count), now_ms())
        with db.atomic():
            ids = [row[0] for row in connection(db).execute("SELECT id FROM conversation")]
        with write_transaction(db):
            for n in range(wanted - result.ops_written):
                title = f"rename {n} " + "t" * TITLE_LENGTH
                set_title(db, signer, ids[n % len(ids)], title, now_ms())
    finally:
        db.close()


def seal_letters(data_dir: Path, recipient_key: bytes) -> Sender:
    """Every op of this device, one per letter, sealed to the identity's key."""
    identity = load_local_identity(data_dir)
    signing_key = identity.signer().signing_key
    db = open_database(data_dir / DATABASE_FILE)
    try:
        credentials = credentials_of(trust_state(db), identity.peer_id)
        with db.atomic():
            wires = [
                bytes(wire)
                for (wire,) in connection(db).execute(
                    "SELECT wire FROM sync_operation WHERE device = ? ORDER BY seq",
                    (identity.peer_id,),
                )
            ]
    finally:
        db.close()
    envelopes = []
    for wire in wires:
        created = now_ms()
        letter = Letter.create(
            signing_key=signing_key,
            recipient_did=identity.did,
            sender_did=identity.did,
            payload_type=mailbox_store.SYNC_OPS,
            payload=mailbox_store.encode_sync_ops([wire]),
            created_at_ms=created,
        )
        envelopes.append(
            seal(
                letter,
                recipient_did=identity.did,
                recipient_x25519_public_key=recipient_key,
                expires_at_ms=created + DAY_MS,
                ephemeral_private_key=os.urandom(32),
            )
        )
    return Sender(
        data_dir=data_dir,
        device_seed=identity.device_seed,
        peer_id=identity.peer_id,
        credentials=credentials,
        head=len(wires),
        envelopes=envelopes,
    )


async def pair(recipient: NodeProcess, data_dir: Path) -> None:
    out = await trio.to_thread.run_sync(
        cli, "device", "pair", "--data-dir", str(recipient.data_dir), "--json"
    )
    await trio.to_thread.run_sync(
        cli, "init", "--join", json.loads(out)["code"], "--data-dir", str(data_dir)
    )


async def wait_mailed(node: NodeProcess) -> None:
    """Until the recipient mailed its own ops to the relay (its other devices are away) and
    deposited them: they stay at the relay, as what it holds before the benchmark's mail."""
    with trio.fail_after(60):
        while True:
            head = (await node.api("/v1/sync/status"))["heads"][node.peer_id]
            status = await node.api("/v1/mailbox/status")
            if status["mailed_seq"] >= head and not status["outbox_envelopes"]:
                return
            await trio.sleep(POLL_S)


# --- the two timed phases ------------------------------------------------------------------------


@dataclass
class Deposits:
    """What the sender tasks share: counts, and the moments the main task waits for."""

    senders: int
    total: int
    connected: int = 0
    stored: int = 0
    rate_limited: int = 0
    notices: int = 0
    bad_notices: int = 0
    all_connected: trio.Event = field(default_factory=trio.Event)
    go: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


async def take_notice(shared: Deposits, stream: INetStream) -> None:
    """What a device does with a relay's notice, but the drain that follows: read it, close."""
    reader = NoticeReader()
    try:
        while isinstance(reader.next_event(), NeedData):
            reader.receive_data(await read_some(stream, MAX_NOTICE_FRAME))
        shared.notices += 1
    except (RemoteProtocolError, StreamError, BaseLibp2pError):
        shared.bad_notices += 1  # a hint only, as node/mailbox.py treats it
    finally:
        await close_quietly(stream)


async def deposit_all(sender: Sender, relay: NodeProcess, shared: Deposits) -> None:
    host = build_host(sender.device_seed)
    # The relay notices every device of the recipient's DID on a stream but the depositor, and
    # the senders are such devices: like a node (node/mailbox.py), they take the notices.
    host.set_stream_handler(TProtocol(MAILBOX_NOTICE_PROTOCOL_ID), partial(take_notice, shared))
    async with host.run([]):
        async with open_link(host, relay.peer_id, [relay.listen_addr]) as link:
            await link.introduce(sender.credentials)
            shared.connected += 1
            if shared.connected == shared.senders:
                shared.all_connected.set()
            await shared.go.wait()
            waiting = list(sender.envelopes)
            while waiting:
                batch = waiting[:DEPOSIT_BATCH]
                outcomes = await link.deposit(batch)
                retry = []
                for envelope in batch:
                    refused = outcomes[envelope.id]
                    if refused is None:
                        shared.stored += 1
                    elif refused[0] == "rate_limited":
                        shared.rate_limited += 1
                        retry.append(envelope)
                    else:
                        raise MailboxRefused(*refused)
                waiting = retry + waiting[len(batch) :]
                if retry:
                    await trio.sleep(RATE_LIMITED_RETRY_S)
            if shared.stored == shared.total:
                shared.done.set()
        await host.close()


async def report_deposits(shared: Deposits, started: float) -> None:
    while not shared.done.is_set():
        with trio.move_on_after(1.0):
            await shared.done.wait()
        elapsed = time.perf_counter() - started
        progress(
            f"  {shared.stored}/{shared.total} deposited in {elapsed:.1f} s, "
            f"{shared.stored / elapsed:.0f}/s, {shared.rate_limited} rate_limited refusals, "
            f"{shared.notices} notices to senders"
        )


async def deposits(
    senders: list[Sender], relay: NodeProcess, profile: cProfile.Profile | None
) -> dict[str, Any]:
    shared = Deposits(senders=len(senders), total=sum(len(s.envelopes) for s in senders))
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for sender in senders:
            nursery.start_soon(deposit_all, sender, relay, shared)
        with trio.fail_after(60):
            await shared.all_connected.wait()
        connect_s = time.perf_counter() - started
        progress(f"{len(senders)} senders connected and introduced in {connect_s:.2f} s")
        if profile is not None:
            profile.enable()
        started = time.perf_counter()
        shared.go.set()
        nursery.start_soon(report_deposits, shared, started)
        await shared.done.wait()
        elapsed = time.perf_counter() - started
        if profile is not None:
            profile.disable()
    return {
        "envelopes": shared.total,
        "seconds": round(elapsed, 2),
        "per_s": round(shared.total / elapsed),
        "rate_limited_refusals": shared.rate_limited,
        "notices_to_senders": shared.notices,
        "notice_streams_closed_early": shared.bad_notices,
        "connect_s": round(connect_s, 2),
    }


async def relay_envelopes(relay: NodeProcess) -> int:
    return int((await relay.api("/v1/relay/status"))["envelopes"])


async def drain(
    base: Path, senders: list[Sender], relay: NodeProcess, held_before: int
) -> tuple[NodeProcess, dict[str, Any]]:
    total = sum(len(s.envelopes) for s in senders)
    log_path = base / "recipient.stderr.log"
    log_offset = log_path.stat().st_size
    started = time.perf_counter()
    recipient = await start_node("recipient", base / "recipient")
    ready_s = time.perf_counter() - started
    progress(f"recipient ready in {ready_s:.2f} s; draining...")
    targets = {s.peer_id: s.head for s in senders}
    last_report = time.perf_counter()
    try:
        with trio.fail_after(DRAIN_TIMEOUT_S):
            while True:
                heads = (await recipient.api("/v1/sync/status"))["heads"]
                held = await relay_envelopes(relay)
                if held <= held_before and all(
                    heads.get(peer, 0) >= head for peer, head in targets.items()
                ):
                    break
                if time.perf_counter() - last_report >= 1.0:
                    last_report = time.perf_counter()
                    applied = sum(min(heads.get(p, 0), h) for p, h in targets.items())
                    progress(f"  {applied}/{total} ops applied, relay holds {held}")
                await trio.sleep(POLL_S)
    except BaseException:
        await stop_all([recipient])
        raise
    elapsed = time.perf_counter() - started
    # The recipient logs each drain of a relay when it ends, acks included (node/mailbox.py).
    logged = log_records(log_path, log_offset, "mailbox.received")
    logged_s = sum(int(r["ms"]) for r in logged) / 1000
    return recipient, {
        "envelopes": total,
        "seconds": round(elapsed, 2),
        "startup_s": round(ready_s, 2),
        "per_s": round(total / elapsed),
        "per_s_after_startup": round(total / (elapsed - ready_s)),
        "recipient_logged": {
            "drains": len(logged),
            "envelopes": sum(int(r["envelopes"]) for r in logged),
            "seconds": round(logged_s, 2),
            "per_s": round(total / logged_s) if logged_s else None,
        },
    }


# --- the run -------------------------------------------------------------------------------------


async def run(base: Path, args: argparse.Namespace) -> dict[str, Any]:
    per_sender = args.envelopes // args.senders
    if per_sender < 2:
        sys.exit("--envelopes must be at least twice --senders")
    nodes: list[NodeProcess] = []
    try:
        relay = await start_node("relay", base / "relay", env={"VIVIM_RELAY": "1"})
        nodes.append(relay)
        recipient = await start_node("recipient", base / "recipient")
        nodes.append(recipient)
        progress(f"pairing {args.senders} sender devices...")
        sender_dirs = [base / f"sender{n}" for n in range(args.senders)]
        for data_dir in sender_dirs:
            await pair(recipient, data_dir)
        await trio.to_thread.run_sync(
            cli, "mailbox", "register", relay.addr, "--data-dir", str(recipient.data_dir)
        )
        await wait_mailed(recipient)
        await stop_all([recipient])
        nodes.remove(recipient)

        progress(f"writing and sealing {per_sender} letters for each sender...")
        key = encryption_key_file(base / "recipient").read()
        public_key = bytes(nacl.public.PrivateKey(key).public_key)
        senders = []
        for data_dir in sender_dirs:
            await trio.to_thread.run_sync(write_ops, data_dir, per_sender)
            senders.append(await trio.to_thread.run_sync(seal_letters, data_dir, public_key))
        sizes = [e.size for s in senders for e in s.envelopes]
        mean_size = sum(sizes) / len(sizes)
        progress(
            f"{len(sizes)} envelopes, ciphertext {mean_size:.0f} bytes on average "
            f"({min(sizes)} to {max(sizes)})"
        )

        held_before = await relay_envelopes(relay)
        progress(f"depositing (the relay holds {held_before} of the recipient's own)...")
        profile = cProfile.Profile() if args.profile else None
        deposited = await deposits(senders, relay, profile)
        if profile is not None:
            profile.dump_stats(args.profile)
        relay_db = database_bytes(relay.data_dir)
        relay_rss_after_deposits = peak_rss_mb(relay.process.pid)
        held = await relay_envelopes(relay)
        assert held == held_before + len(sizes), (held, held_before, len(sizes))
        progress(json.dumps(deposited))

        recipient, drained = await drain(base, senders, relay, held_before)
        nodes.append(recipient)
        progress(json.dumps(drained))
        received = await recipient.api("/v1/mailbox/status")
        per_s = (deposited["per_s"], drained["per_s"])
        return {
            "benchmark": "mailbox",
            "senders": len(senders),
            "envelopes": len(sizes),
            "mean_ciphertext_bytes": round(mean_size),
            "deposit": deposited,
            "drain": drained,
            "received_by_outcome": received["received_by_outcome"],
            "relay_peak_rss_mb": {
                "after_deposits": round(relay_rss_after_deposits),
                "end": round(peak_rss_mb(relay.process.pid)),
            },
            "relay_db_bytes_after_deposits": relay_db,
            "target_per_s": TARGET_PER_S,
            "within_targets": min(per_s) >= TARGET_PER_S,
        }
    finally:
        await stop_all(nodes)


def report(figures: dict[str, Any]) -> None:
    def verdict(rate: float) -> str:
        return "pass" if rate >= TARGET_PER_S else "FAIL"

    deposit, drained = figures["deposit"], figures["drain"]
    print(
        f"{figures['envelopes']} envelopes from {figures['senders']} senders, "
        f"{figures['mean_ciphertext_bytes']} bytes of ciphertext on average"
    )
    print(
        f"deposits: {deposit['per_s']}/s ({deposit['seconds']} s; "
        f"{deposit['rate_limited_refusals']} rate_limited refusals retried, "
        f"{deposit['notices_to_senders']} notices to the senders)  "
        f"target {TARGET_PER_S:.0f}/s: {verdict(deposit['per_s'])}"
    )
    print(
        f"drain (fetch + apply + ack): {drained['per_s']}/s including startup "
        f"({drained['seconds']} s, of which startup {drained['startup_s']} s), "
        f"{drained['per_s_after_startup']}/s after it  "
        f"target {TARGET_PER_S:.0f}/s: {verdict(drained['per_s'])}"
    )
    logged = drained["recipient_logged"]
    print(
        f"  as the recipient logged its drain: {logged['envelopes']} envelopes in "
        f"{logged['seconds']} s, {logged['per_s']}/s"
    )
    rss = figures["relay_peak_rss_mb"]
    print(f"relay peak RSS: {rss['after_deposits']} MB after deposits, {rss['end']} MB at the end")
    size = figures["relay_db_bytes_after_deposits"]
    print(
        f"relay database after deposits: {size['total'] / 2**20:.1f} MB "
        f"({size['total'] / figures['envelopes']:.0f} bytes/envelope): vivim.db "
        f"{size['db'] / 2**20:.1f} MB, -wal {size['wal'] / 2**20:.1f} MB, "
        f"-shm {size['shm'] / 2**20:.1f} MB"
    )


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="vivim-bench-mailbox-"))
    try:
        figures = await run(base, args)
        report(figures)
        if args.json:
            print(json.dumps(figures))
    finally:
        if args.keep:
            progress(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=10_000, help="in all (default 10000)")
    parser.add_argument("--senders", type=int, default=10, help="sender devices (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="write a cProfile of this side of the deposits (it slows this side, so the "
        "figures of such a run are not the benchmark's)",
    )
    trio.run(main, parser.parse_args())
