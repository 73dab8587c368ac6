"""Every way to start `vivim-node` wrong ends in one clear `error:` line and an untouched data dir.

Each case runs the real CLI: malformed multiaddr, port in use, missing, corrupt or too open key
file, database from a newer version, bad config.toml, no running node. A bootstrap peer that does
not answer is not an error: the node runs and logs why the dial failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from protocols.peer_id import peer_id_from_ed25519_public_key
from store.migrations import APPLICATION_ID
from tests.integration.conftest import StartNode, run_cli

LOOPBACK_ANY_PORT = "/ip4/127.0.0.1/tcp/0"
KEY_FILES = ("identity.key", "encryption.key", "device.key")
# The first redial comes after well under a second (FAST_REDIAL_ENV); this is the budget for the
# node to start and log its first failed dial.
DIAL_FAILED_TIMEOUT_S = 30
# The run lock holds no data: a refused `run` may leave it behind without changing anything.
LOCK_FILE = "node.lock"
# Far above any schema version this build knows (it counts migrations).
FUTURE_SCHEMA_VERSION = 999

Snapshot = dict[str, tuple[int, str]]


def snapshot(data_dir: Path) -> Snapshot:
    """Every path under data_dir: its mode and, for files, the SHA-256 of its bytes."""
    tree: Snapshot = {}
    for path in sorted(data_dir.rglob("*")):
        name = str(path.relative_to(data_dir))
        if name == LOCK_FILE:
            continue
        mode = path.lstat().st_mode
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else ""
        tree[name] = (mode, digest)
    return tree


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_one_error_line(result: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    """The process failed with exactly one `error:` line on stderr naming every needle."""
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert result.stdout == b"", "nothing on stdout, above all no ready line"
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


async def init(data_dir: Path) -> dict[str, Any]:
    result = await run_cli("init", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    created: dict[str, Any] = json.loads(result.stdout)
    return created


async def run_node_once(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    """`vivim-node run` that is expected to give up before it is ready."""
    return await run_cli("run", "--data-dir", str(data_dir), *extra)


def random_peer_id() -> str:
    return peer_id_from_ed25519_public_key(bytes(nacl.signing.SigningKey.generate().verify_key))


def log_events(stderr_path: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of stderr_path whose event is `name`."""
    events = []
    for line in stderr_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == name:
                events.append(record)
    return events


async def test_init_creates_private_key_files_and_id_prints_the_same_identity(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "a"
    created = await init(data_dir)
    assert created["did"].startswith("did:key:z6Mk")
    assert created["peer_id"].startswith("12D3KooW")

    assert file_mode(data_dir / "keys") == 0o700
    for name in KEY_FILES:
        assert file_mode(data_dir / "keys" / name) == 0o600, name
    assert file_mode(data_dir / "api.token") == 0o600

    result = await run_cli("id", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["did"], shown["peer_id"]) == (created["did"], created["peer_id"])
    assert shown["running"] is False


async def test_init_never_overwrites_an_existing_identity(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    before = snapshot(data_dir)

    result = await run_cli("init", "--data-dir", str(data_dir))
    assert_one_error_line(result, str(data_dir), "already holds an identity")
    assert snapshot(data_dir) == before

    result = await run_cli("init", "--if-missing", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert snapshot(data_dir) == before


async def test_malformed_listen_multiaddr_is_one_error_line_with_exit_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    before = snapshot(data_dir)

    result = await run_node_once(data_dir, "--listen", "/ip4/999.1.1.1/tcp/1")

    assert result.returncode == 2
    assert_one_error_line(result, "'/ip4/999.1.1.1/tcp/1'", "malformed multiaddr", "--listen")
    assert snapshot(data_dir) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--listen", "/ip4/127.0.0.1/tcp/{port}"), "/ip4/127.0.0.1/tcp/{port}"),
        (("--listen", LOOPBACK_ANY_PORT, "--api-port", "{port}"), "127.0.0.1:{port}"),
    ],
    ids=["listen", "api"],
)
async def test_port_in_use_ends_with_an_error_line_naming_the_port(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_node_once(data_dir, *(arg.format(port=port) for arg in args))

    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert result.stdout == b"", "no ready line"
    assert "Traceback" not in stderr, stderr
    # Log lines (JSON) may come first; the error line is the last thing the process says.
    last = stderr.splitlines()[-1]
    assert last.startswith("error: "), stderr
    assert named.format(port=port) in last
    assert "in use" in last
    assert not (data_dir / "node.json").exists()


def remove(path: Path) -> None:
    path.unlink()


def overwrite_with_garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a key\n")
    path.chmod(0o600)


def open_to_others(path: Path) -> None:
    path.chmod(0o644)


@pytest.mark.parametrize(
    ("tamper", "needles"),
    [
        (remove, ("is missing", "restore it from a backup")),
        (overwrite_with_garbage, ("is corrupt", "restore it from a backup")),
        (open_to_others, ("0644", "chmod 600")),
    ],
    ids=["missing", "corrupt", "mode-0644"],
)
async def test_bad_device_key_file_is_refused_and_nothing_changes(
    tmp_path: Path, tamper: Callable[[Path], None], needles: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    key_path = data_dir / "keys" / "device.key"
    tamper(key_path)
    before = snapshot(data_dir)

    result = await run_node_once(data_dir, "--listen", LOOPBACK_ANY_PORT)

    assert_one_error_line(result, str(key_path), *needles)
    assert snapshot(data_dir) == before


async def test_database_from_a_newer_version_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    db_path = data_dir / "vivim.db"
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        db.execute(f"PRAGMA user_version = {FUTURE_SCHEMA_VERSION}")
        db.commit()
    db_bytes = db_path.read_bytes()
    before = snapshot(data_dir)

    result = await run_node_once(data_dir, "--listen", LOOPBACK_ANY_PORT)

    assert_one_error_line(result, str(FUTURE_SCHEMA_VERSION), "upgrade vivim-node")
    assert db_path.read_bytes() == db_bytes
    assert snapshot(data_dir) == before  # and no -wal or -shm file left behind


async def test_bootstrap_peer_that_does_not_answer_is_logged_and_the_node_runs(
    start: StartNode,
) -> None:
    # Bound but not listening: connections to it are refused, and no one else can take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        silent_peer = f"/ip4/127.0.0.1/tcp/{port}/p2p/{random_peer_id()}"

        node = await start("a", bootstrap=[silent_peer])

        with trio.fail_after(DIAL_FAILED_TIMEOUT_S):
            while not (failures := log_events(node.stderr_path, "bootstrap.dial_failed")):
                await trio.sleep(0.1)
        assert failures[0]["addr"] == silent_peer
        assert failures[0]["level"] == "warning"
        assert "check the address" in failures[0]["hint"]

        status = await node.api("/v1/status")
        assert status["peer_id"] == node.peer_id
        assert status["connected_peers"] == 0


async def test_status_without_a_running_node_says_how_to_start_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    for extra in ((), ("--json",)):
        result = await run_cli("status", *extra, "--data-dir", str(data_dir))
        assert_one_error_line(result, "no node is running", "vivim-node run")


@pytest.mark.parametrize("command", [(), ("run",)], ids=["top-level", "run"])
async def test_help_names_data_dir_listen_and_bootstrap(command: tuple[str, ...]) -> None:
    result = await run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--data-dir", "--listen", "--bootstrap"):
        assert flag in result.stdout.decode(), flag


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ('api_port = "x"\n', ("api_port", "'x'", "wrong type")),
        ('colour = "blue"\n', ("unknown setting", "colour")),
        ('log_level = "loud"\n', ("'loud'", "log level")),
        ('listen = ["/ip4/999.1.1.1/tcp/1"]\n', ("malformed multiaddr", "999.1.1.1")),
        ("listen = [\n", ("not valid TOML",)),
    ],
    ids=["wrong-type", "unknown-key", "bad-log-level", "malformed-listen", "not-toml"],
)
async def test_bad_config_file_is_one_error_line_naming_it(
    tmp_path: Path, setting: str, needles: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "a"
    await init(data_dir)
    config_file = data_dir / "config.toml"
    config_file.write_text(setting)
    before = snapshot(data_dir)

    # No --listen: the listen address comes from config.toml (or its bad value is the point).
    result = await run_cli("run", "--data-dir", str(data_dir))

    assert result.returncode == 2
    assert_one_error_line(result, str(config_file), *needles)
    assert snapshot(data_dir) == before
