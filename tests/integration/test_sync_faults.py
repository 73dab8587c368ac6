"""Sync under faults: forged ops from a trusted device's tampered vault, a receiving device
killed with SIGKILL again and again while it syncs a large history, and one of its op-checking
processes killed mid-sync."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import nacl.signing
import trio

from node.keys import device_key_file
from protocols.cid import content_id
from protocols.hlc import Timestamp
from protocols.oplog import OpKind, SyncOperation
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.vault_records import LinkRelation, link_id
from store.database import open_database
from store.vault_log import OP_INSERT, op_row
from tests.integration.conftest import FAST_REDIAL_ENV, StartNode, run_cli
from tests.integration.test_pairing import join, pair_code
from tests.integration.test_sync import (
    CONVERGE_TIMEOUT_S,
    family,
    logged,
    state_hash,
    verify,
    wait_converged,
)


def forge(data_dir: Path, case: str) -> SyncOperation:
    """Write into a stopped device's vault an op no honest device would make, as the next op
    of its chain (or of a device nobody certified), and return it."""
    db = open_database(data_dir / "vivim.db")
    try:
        seed = device_key_file(data_dir).read()
        key = nacl.signing.SigningKey(seed)
        device = peer_id_from_ed25519_public_key(bytes(key.verify_key))
        did = str(db.execute_sql("SELECT did FROM identity").fetchone()[0])
        seq, prev = db.execute_sql(
            "SELECT last_seq, last_op_id FROM device_log WHERE device = ?", (device,)
        ).fetchone()
        now = int(time.time() * 1000)
        wall = now + 3_600_000 if case == "clock_far_ahead" else now
        if case == "uncertified_device":
            key = nacl.signing.SigningKey.generate()
            device = peer_id_from_ed25519_public_key(bytes(key.verify_key))
            seq, prev = 0, None
        if case == "broken_chain":
            prev = content_id({"not": "the previous op"})
        source, target = content_id({"a": case}), content_id({"b": case})
        op = SyncOperation.sign(
            signing_key=key,
            author=did,
            device=device,
            seq=seq + 1,
            prev=prev,
            hlc=Timestamp(wall_ms=wall, counter=0, node=device),
            entity_type="acu_link",
            entity_id=link_id(source, target, LinkRelation.REFERENCES),
            kind=OpKind.CREATE,
            payload={
                "source": source,
                "target": target,
                "relation": LinkRelation.REFERENCES.value,
                "created_by": did,
            },
        )
        if case == "bad_signature":
            stranger = nacl.signing.SigningKey.generate()
            signature = stranger.sign(op.signed_bytes()).signature
            op = SyncOperation.from_wire(op.to_wire().replace(op.signature, signature))
        db.execute_sql(OP_INSERT, op_row(op, now))
        db.execute_sql(
            "INSERT INTO device_log (device, last_seq, last_op_id) VALUES (?, ?, ?)"
            " ON CONFLICT (device) DO UPDATE SET last_seq = excluded.last_seq,"
            " last_op_id = excluded.last_op_id",
            (op.device, op.seq, op.id),
        )
        return op
    finally:
        db.close()


async def test_forged_ops_from_a_tampered_device_are_refused_and_honest_history_stays(
    start: StartNode, tmp_path: Path
) -> None:
    first, second = await family(start, tmp_path, 2)
    agreed = await wait_converged([first, second])
    await second.stop()
    pristine = tmp_path / "second-pristine"
    shutil.copytree(second.data_dir, pristine)
    expected = {
        "bad_signature": "bad_signature",
        "clock_far_ahead": "clock_drift",
        "broken_chain": "chain_break",
        "uncertified_device": "unknown_device",
    }
    forged: set[str] = set()
    for case, code in expected.items():
        shutil.rmtree(second.data_dir)
        shutil.copytree(pristine, second.data_dir)
        op = forge(second.data_dir, case)
        forged.add(op.id)
        tampered = await start("device-1")
        with trio.fail_after(CONVERGE_TIMEOUT_S):
            while not [r for r in logged(first, "sync.op_refused") if r["op_id"] == op.id]:
                await trio.sleep(0.05)
        refusal = next(r for r in logged(first, "sync.op_refused") if r["op_id"] == op.id)
        assert refusal["error"] == code, (case, refusal)
        await tampered.stop()
        assert await state_hash(first) == agreed, case
        heads = (await first.api("/v1/sync/status"))["heads"]
        assert op.device not in heads or heads[op.device] < op.seq, case
        # Only forged ops were refused (each sync that met one refused it again: the device
        # announces, and it is synced on connect, so a forged op may be logged more than once).
        assert {r["op_id"] for r in logged(first, "sync.op_refused")} == forged, case
    await verify(first)


def export(path: Path, conversations: int) -> Path:
    """A vivim-format file: each conversation 10 exchanges, each answer with a code block, so 20
    ACUs and 21 ops per conversation."""
    items = []
    for c in range(conversations):
        messages = []
        for m in range(10):
            messages.append({"role": "user", "content": f"Q{m} of {c}?", "timestamp": c * 100 + m})
            messages.append(
                {
                    "role": "assistant",
                    "content": f"A{m} of {c}.\n\n```python\nprint({c}, {m})\n```\n",
                    "timestamp": c * 100 + m,
                }
            )
        items.append({"title": f"c{c}", "provider": "bulk", "model": "m", "messages": messages})
    path.write_text(json.dumps(items))
    return path


async def test_a_device_killed_again_and_again_while_it_syncs_a_large_history_converges(
    start: StartNode, tmp_path: Path
) -> None:
    rng = random.Random(7)
    holder_dir = tmp_path / "device-0"
    assert (await run_cli("init", "--data-dir", str(holder_dir))).returncode == 0
    bulk = export(tmp_path / "bulk.json", 2400)
    imported = await run_cli("import", str(bulk), "--data-dir", str(holder_dir), "--json")
    assert imported.returncode == 0, imported.stderr.decode()
    assert json.loads(imported.stdout)["ops_written"] >= 50_000
    first, second = await family(start, tmp_path, 2)
    total = (await first.api("/v1/sync/status"))["heads"][first.peer_id]
    for _ in range(3):
        await trio.sleep(rng.uniform(0.5, 2.5))
        second.process.kill()  # SIGKILL: no chance to finish anything
        await second.process.wait()
        second.signalled = True
        second = await start("device-1")
    with trio.fail_after(120):
        while sum((await second.api("/v1/sync/status"))["heads"].values()) < total:
            await trio.sleep(0.5)
    assert await wait_converged([first, second])
    heads = [(await node.api("/v1/sync/status"))["heads"] for node in (first, second)]
    assert heads[0] == heads[1]  # every op of every device, each once (op ids are keys)
    assert heads[0][first.peer_id] == total
    await second.stop(signal.SIGTERM)
    await verify(second)


def checking_processes(pid: int) -> list[int]:
    """The op-checking processes of node `pid` (node/op_checker.py: spawned children)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            status = (proc / "status").read_text()
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command and f"\nPPid:\t{pid}\n" in status:
            found.append(int(proc.name))
    return found


async def test_a_checking_process_killed_mid_sync_fails_that_sync_and_the_next_converges(
    start: StartNode, tmp_path: Path
) -> None:
    holder_dir = tmp_path / "device-0"
    assert (await run_cli("init", "--data-dir", str(holder_dir))).returncode == 0
    bulk = export(tmp_path / "bulk.json", 1500)
    imported = await run_cli("import", str(bulk), "--data-dir", str(holder_dir), "--json")
    assert imported.returncode == 0, imported.stderr.decode()
    first = await start("device-0")
    total = (await first.api("/v1/sync/status"))["heads"][first.peer_id]
    joined = await join(tmp_path / "device-1", await pair_code(first))
    assert joined.returncode == 0, joined.stderr.decode()
    # Anti-entropy every second: the sync after the failed one starts without waiting 30 s.
    second = await start("device-1", env={**FAST_REDIAL_ENV, "VIVIM_SYNC_INTERVAL_S": "1"})
    with trio.fail_after(30):
        while not (checkers := checking_processes(second.process.pid)):
            await trio.sleep(0.02)
    os.kill(checkers[0], signal.SIGKILL)
    with trio.fail_after(60):
        while not any(r.get("error") == "CheckerDied" for r in logged(second, "sync.failed")):
            await trio.sleep(0.1)
    with trio.fail_after(120):
        while (await second.api("/v1/sync/status"))["heads"].get(first.peer_id, 0) < total:
            await trio.sleep(0.5)
    assert second.process.returncode is None  # the node itself kept running
    assert await wait_converged([first, second])
    assert checkers[0] not in checking_processes(second.process.pid)
    await second.stop(signal.SIGTERM)
    await verify(second)
