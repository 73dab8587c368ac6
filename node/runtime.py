"""Files a running node shares with the CLI: the API token, the run lock and `node.json`.

- `api.token` (0600): the bearer token of the local control API; whoever can read the data
  directory may drive the node, nobody else.
- `node.lock`: held (flock) by the running node, so two processes never run on one data directory.
- `node.json`: written when the node is ready, removed at shutdown: pid, API URL, peer id and
  addresses, which is how `status`, `peers` and `id` find a node whose API port the OS chose.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from node.errors import NodeError

TOKEN_FILE = "api.token"
LOCK_FILE = "node.lock"
RUNTIME_FILE = "node.json"
# 32 random bytes: as strong as the keys themselves.
TOKEN_BYTES = 32


class EarlySignals:
    """Remembers SIGINT/SIGTERM that arrive while `run` still imports libp2p (~0.7 s), before
    trio listens for them, so that a stop during start-up is a clean exit 0, not a kill."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: object) -> None:
        self.signum = signum


class NotRunning(NodeError):
    """No node is running on this data directory."""


class AlreadyRunning(NodeError):
    """Another node process holds this data directory."""


def create_token_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_token(data_dir: Path, *, create: bool = True) -> str:
    """The API token. The node creates it if an older data directory lacks it (`create`); the
    CLI only reads it. Like a key, a token others can read is refused."""
    path = data_dir / TOKEN_FILE
    if create and not path.exists():
        with suppress(FileExistsError):
            create_token_file(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as err:
        raise NodeError(f"{path} is missing: restart the node, which creates a new one") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise NodeError(
            f"{path} has mode {stat.S_IMODE(mode):04o}, readable by others, who could drive the "
            f"node with it: run `chmod 600 {path}`"
        )
    token = path.read_text().strip()
    if not token:
        raise NodeError(f"{path} is empty: delete it and restart the node to make a new token")
    return token


@contextmanager
def run_lock(data_dir: Path, holder: str = "vivim-node run") -> Iterator[None]:
    """Hold the data directory: for the life of a node, or of a command that opens the database
    while no node runs. The lock file says who holds it, for the error the next comer gets."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            who = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise AlreadyRunning(
                f"{data_dir} is in use by {who}: wait for it or stop it, "
                "or give this one its own --data-dir"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def write_runtime_file(data_dir: Path, info: dict[str, Any]) -> None:
    path = data_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def remove_runtime_file(data_dir: Path) -> None:
    with suppress(FileNotFoundError):
        (data_dir / RUNTIME_FILE).unlink()


def read_runtime_file(data_dir: Path) -> dict[str, Any]:
    """What the running node wrote, or NotRunning if no live node wrote it."""
    path = data_dir / RUNTIME_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise NotRunning(
            f"no node is running on {data_dir}: start one with `vivim-node run` "
            "(or pass the --data-dir it runs with)"
        ) from err
    except (OSError, ValueError) as err:
        raise NotRunning(f"{path} is unreadable ({err}); restart the node") from err
    if not isinstance(info, dict) or not _pid_alive(info.get("pid")):
        raise NotRunning(
            f"the node that wrote {path} is no longer running: start it with `vivim-node run`"
        )
    return info


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
