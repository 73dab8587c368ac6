"""Pairing real processes: a chain of three devices, and codes that are wrong, expired or reused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import trio

from node.local_cluster import NodeProcess
from protocols.pairing import PairingCode
from tests.integration.conftest import StartNode, run_cli


async def pair_code(node: NodeProcess, *extra: str) -> str:
    result = await run_cli("device", "pair", "--data-dir", str(node.data_dir), "--json", *extra)
    assert result.returncode == 0, result.stderr.decode()
    return str(json.loads(result.stdout)["code"])


async def join(data_dir: Path, code: str) -> Any:
    return await run_cli("init", "--join", code, "--data-dir", str(data_dir), "--json")


async def devices(data_dir: Path) -> dict[str, dict[str, Any]]:
    result = await run_cli("device", "list", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr.decode()
    return {d["peer_id"]: d for d in json.loads(result.stdout)["devices"]}


async def logged(node: NodeProcess, event: str, **fields: object) -> dict[str, Any]:
    """Wait for the node to log `event` with `fields`."""
    with trio.fail_after(10):
        while True:
            for line in node.stderr_path.read_text().splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if record.get("event") == event and all(
                        record.get(k) == v for k, v in fields.items()
                    ):
                        return dict(record)
            await trio.sleep(0.05)


async def test_a_device_pairs_a_second_which_pairs_a_third_and_each_holds_a_valid_chain(
    start: StartNode, tmp_path: Path
) -> None:
    first = await start("first")
    joined = await join(tmp_path / "second", await pair_code(first))
    assert joined.returncode == 0, joined.stderr.decode()
    second_id = json.loads(joined.stdout)["peer_id"]
    assert json.loads(joined.stdout)["did"] == first.ready["did"]
    second = await start("second")
    assert second.peer_id == second_id

    joined = await join(tmp_path / "third", await pair_code(second))
    assert joined.returncode == 0, joined.stderr.decode()
    third_id = json.loads(joined.stdout)["peer_id"]

    did = first.ready["did"]
    listed = await devices(tmp_path / "third")
    assert listed[third_id]["status"] == "trusted"
    assert listed[third_id]["trust_chain"] == [second_id, first.peer_id, did]
    assert listed[second_id]["trust_chain"] == [first.peer_id, did]
    assert listed[first.peer_id]["trust_chain"] == [did]
    on_second = await devices(second.data_dir)
    assert on_second[third_id]["approved_by"] == second_id
    on_first = await devices(first.data_dir)
    assert on_first[second_id]["status"] == "trusted"
    for data_dir in (first.data_dir, second.data_dir, tmp_path / "third"):
        result = await run_cli("verify", "--data-dir", str(data_dir))
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    # The joined device got the identity's encryption key, never its identity key.
    assert (tmp_path / "third" / "keys" / "encryption.key").exists()
    assert not (tmp_path / "third" / "keys" / "identity.key").exists()


async def test_wrong_expired_and_reused_codes_are_refused_on_both_sides_and_write_nothing(
    start: StartNode, tmp_path: Path
) -> None:
    first = await start("first")

    code = await pair_code(first)
    assert (await join(tmp_path / "ok", code)).returncode == 0
    reused = await join(tmp_path / "reused", code)
    assert reused.returncode == 1
    assert "used already" in reused.stderr.decode()
    await logged(first, "pairing.refused", reason="pairing_code_used")

    expiring = await pair_code(first, "--ttl", "1")
    await trio.sleep(1.2)
    expired = await join(tmp_path / "expired", expiring)
    assert expired.returncode == 1
    assert "expired" in expired.stderr.decode()
    await logged(first, "pairing.refused", reason="pairing_code_expired")

    real = PairingCode.from_text(await pair_code(first))
    wrong = dataclasses.replace(real, secret=bytes(32)).to_text()
    refused = await join(tmp_path / "wrong", wrong)
    assert refused.returncode == 1
    assert "does not match" in refused.stderr.decode()
    await logged(first, "pairing.refused", reason="pairing_approver_not_proven")

    damaged = await join(tmp_path / "damaged", code[:-3] + ("aaa" if code[-3:] != "aaa" else "bbb"))
    assert damaged.returncode == 1
    assert "pairing code" in damaged.stderr.decode()

    for name in ("reused", "expired", "wrong", "damaged"):
        assert not (tmp_path / name / "keys").exists(), name
        assert not (tmp_path / name / "vivim.db").exists(), name
    assert len(await devices(first.data_dir)) == 2
