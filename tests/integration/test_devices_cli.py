"""Revocation and identity rotation through the CLI, against a running node and without one."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import StartNode, run_cli
from tests.integration.test_pairing import devices, join, pair_code


async def test_revoke_and_rotate_through_the_running_node_and_refusals_that_say_why(
    start: StartNode, tmp_path: Path
) -> None:
    first = await start("first")
    joined = await join(tmp_path / "second", await pair_code(first))
    second_id = json.loads(joined.stdout)["peer_id"]
    data = str(first.data_dir)

    itself = await run_cli("device", "revoke", first.peer_id, "--yes", "--data-dir", data)
    assert itself.returncode == 1 and "cannot revoke itself" in itself.stderr.decode()
    unconfirmed = await run_cli("device", "revoke", second_id, "--data-dir", data)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr.decode()
    assert (await devices(first.data_dir))[second_id]["status"] == "trusted"

    revoked = await run_cli("device", "revoke", second_id, "--yes", "--json", "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr.decode()
    assert json.loads(revoked.stdout)["revoked"] == second_id
    listed = await devices(first.data_dir)
    assert listed[second_id]["status"] == "revoked"
    assert listed[second_id]["revoked_by"] == first.peer_id
    again = await run_cli("device", "approve", second_id, "--data-dir", data)
    assert again.returncode == 1 and "never approved again" in again.stderr.decode()

    rotated = await run_cli("identity", "rotate", "--json", "--data-dir", data)
    assert rotated.returncode == 0, rotated.stderr.decode()
    assert json.loads(rotated.stdout)["key_version"] == 2
    assert json.loads(rotated.stdout)["did"] == first.ready["did"]
    assert not (first.data_dir / "keys" / "identity.key.next").exists()

    # The joined device has no identity key; it runs without a node here (straight to disk).
    no_key = await run_cli("identity", "rotate", "--data-dir", str(tmp_path / "second"))
    assert no_key.returncode == 1
    assert "does not hold the identity key" in no_key.stderr.decode()

    verified = await run_cli("verify", "--data-dir", data)
    assert verified.returncode == 0, verified.stdout.decode()
