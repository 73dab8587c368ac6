"""How the CLI reaches the vault: through the running node's API, or directly when none runs.

Never both writers at once: the direct path holds the data directory's run lock (the same lock
a running node holds) for as long as it has the database open, so a node cannot start under it,
and a running node makes the CLI go through its API.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from node import vault_api
from node.api_client import request_json
from node.identity import (
    DATABASE_FILE,
    is_initialised,
    load_local_identity,
    load_public_identity,
)
from node.runtime import AlreadyRunning, NotRunning, read_runtime_file, run_lock
from store.database import open_database
from store.sql import execute_sql
from store.vault_log import LocalSigner

DIRECT_CACHE_KIB = 256 * 1024


class VaultClient(Protocol):
    mode: str  # "api" or "direct"

    def call(self, op: str, **params: Any) -> Any: ...


class DirectClient:
    """Runs node/vault_ops.py functions on the data directory's database."""

    mode = "direct"

    def __init__(self, db: Any, signer: LocalSigner, data_dir: Path) -> None:
        self._db = db
        self._signer = signer
        self._data_dir = data_dir

    def call(self, op: str, **params: Any) -> Any:
        route = vault_api.ROUTES_BY_OP[op]
        if route.signer:
            params["signer"] = self._signer
        if route.now:
            params["now_ms"] = int(time.time() * 1000)
        if route.data_dir:
            params["data_dir"] = self._data_dir
        return route.function(self._db, **params)


class ApiClient:
    """Sends the same calls to the running node's control API."""

    mode = "api"

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def call(self, op: str, **params: Any) -> Any:
        route = vault_api.ROUTES_BY_OP[op]
        path = route.path
        for name in route.path_params():
            value = urllib.parse.quote(str(params.pop(name)), safe="")
            path = path.replace("{" + name + "}", value)
        query = {k: v for k, v in params.items() if k in route.query and v is not None}
        if query:
            path += "?" + urllib.parse.urlencode(query)
        body = {k: v for k, v in params.items() if k in route.body}
        return request_json(
            self._data_dir,
            route.method,
            path,
            body if route.method == "POST" else None,
            timeout_s=route.timeout_s,
        )


@contextmanager
def open_vault_client(data_dir: Path) -> Iterator[VaultClient]:
    """The API client if a node runs on `data_dir`, else a direct client holding the lock."""
    if not is_initialised(data_dir):
        load_public_identity(data_dir)  # raises NotInitialised, with what to do
    with ExitStack() as stack:
        try:
            stack.enter_context(run_lock(data_dir, holder="a vivim-node command"))
        except AlreadyRunning as busy:
            try:
                read_runtime_file(data_dir)
            except NotRunning:
                # Held, but not by a node that serves its API (another command, or a node
                # still starting): say who holds it rather than "no node is running".
                raise busy from None
            locked = False
        else:
            locked = True
        if not locked:
            yield ApiClient(data_dir)
            return
        signer = load_local_identity(data_dir).signer()
        db = open_database(data_dir / DATABASE_FILE)
        stack.callback(db.close)
        # This process is the only user of the database for one command: give its single
        # connection a larger page cache (256 MiB, used only as a large import fills it).
        execute_sql(db, f"PRAGMA cache_size = -{DIRECT_CACHE_KIB}")
        yield DirectClient(db, signer, data_dir)
