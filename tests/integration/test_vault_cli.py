"""The vault commands, end to end: straight to the data directory, and through a running node."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from node.local_cluster import init_data_dir
from tests.integration.conftest import StartNode, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHATGPT = FIXTURES / "chatgpt_export.json"
VIVIM = FIXTURES / "vivim_conversation.json"


async def cli_json(data_dir: Path, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


async def all_acu_ids(data_dir: Path) -> set[str]:
    page = await cli_json(data_dir, "acus", "list", "--limit", "1000")
    assert page["next_cursor"] is None
    return {acu["id"] for acu in page["acus"]}


async def test_import_twice_offline_creates_nothing_new_and_verifies(tmp_path: Path) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    first = await cli_json(data_dir, "import", str(CHATGPT))
    assert first["conversations_created"] == 3
    assert first["acus_created"] > 0
    assert first["problems"] == []
    acus = await all_acu_ids(data_dir)
    assert len(acus) == first["acus_created"]

    second = await cli_json(data_dir, "import", str(CHATGPT))
    assert second["conversations_created"] == 0
    assert second["acus_created"] == 0
    assert second["ops_written"] == 0
    assert second["acus_skipped"] == first["acus_created"]
    assert await all_acu_ids(data_dir) == acus

    report = await cli_json(data_dir, "verify")
    assert report == {"ok": True, "problems": []}


async def test_the_same_file_gives_the_same_acus_on_another_device_of_the_same_vault(
    tmp_path: Path,
) -> None:
    # Two copies of one data directory (one identity) import independently: same ACU ids.
    a = tmp_path / "a"
    init_data_dir(a)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    await cli_json(a, "import", str(CHATGPT))
    await cli_json(b, "import", str(CHATGPT))
    assert await all_acu_ids(a) == await all_acu_ids(b)


async def test_conversations_show_keeps_the_branch_of_the_current_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    await cli_json(data_dir, "import", str(CHATGPT))
    conversations = (await cli_json(data_dir, "conversations", "list"))["conversations"]
    assert len(conversations) == 3
    branches = set()
    for conversation in conversations:
        detail = await cli_json(data_dir, "conversations", "show", conversation["id"])
        main = [m for m in detail["messages"] if m["branch"] == "main"]
        assert [m["index"] for m in main] == list(range(len(main)))
        branches.update(m["branch"] for m in detail["messages"])
    assert branches == {"main", "alternate"}, "the fixture's edit branch is recorded"


async def test_edit_makes_a_new_version_and_history_follows_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    await cli_json(data_dir, "import", str(VIVIM))
    original = (await cli_json(data_dir, "acus", "list", "--type", "qa"))["acus"][0]
    edited = await cli_json(
        data_dir, "acu", "edit", original["id"], "--content", "Q: better? A: better."
    )
    assert edited["version_of"] == original["id"]
    history = await cli_json(data_dir, "acu", "history", original["id"])
    assert [v["id"] for v in history["versions"]] == [original["id"], edited["id"]]
    unchanged = await cli_json(data_dir, "acu", "show", original["id"])
    assert unchanged["content"] == original["content"]
    links = (await cli_json(data_dir, "acu", "show", edited["id"]))["links"]
    assert {(link["source"], link["relation"], link["target"]) for link in links} >= {
        (edited["id"], "version_of", original["id"])
    }


async def test_a_malformed_conversation_is_named_and_the_others_are_imported(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    export = json.loads(CHATGPT.read_text())
    broken = json.loads(json.dumps(export[0]))
    first_node = next(iter(broken["mapping"]))
    broken["mapping"][first_node]["parent"] = 12345
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps([broken, *export[1:]]))
    result = await run_cli("import", str(bad_file), "--json", "--data-dir", str(data_dir))
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["conversations_created"] == len(export) - 1
    (problem,) = summary["problems"]
    assert problem["position"] == 0
    assert problem["path"].startswith("conversations[0].mapping")


async def test_a_file_that_is_not_json_is_refused_with_its_position(tmp_path: Path) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    bad = tmp_path / "broken.json"
    bad.write_text('[{"title": "x",\n  "mapping": {]')
    result = await run_cli("import", str(bad), "--data-dir", str(data_dir))
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert stderr.startswith("error: ") and "line 2" in stderr
    assert "Traceback" not in stderr


async def test_verify_reports_a_row_changed_behind_the_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "vault"
    init_data_dir(data_dir)
    await cli_json(data_dir, "import", str(VIVIM))
    with sqlite3.connect(data_dir / "vivim.db") as conn:
        conn.execute("UPDATE conversation SET title = 'tampered'")
    result = await run_cli("verify", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert any(p["entity_type"] == "conversation" for p in report["problems"])


async def test_through_a_running_node_the_cli_uses_the_api(start: StartNode) -> None:
    node = await start("a")
    summary = await cli_json(node.data_dir, "import", str(CHATGPT))
    assert summary["conversations_created"] == 3
    # The node served it: its API lists the same ACUs the CLI sees, and its state hash is stable.
    listed = await node.api("/v1/acus?limit=1000")
    assert {a["id"] for a in listed["acus"]} == await all_acu_ids(node.data_dir)
    first_hash = (await node.api("/v1/state-hash"))["state_hash"]
    again = await cli_json(node.data_dir, "import", str(CHATGPT))
    assert again["acus_created"] == 0
    assert (await node.api("/v1/state-hash"))["state_hash"] == first_hash
    assert (await cli_json(node.data_dir, "verify"))["ok"] is True
