"""The vault's routes: one table that both the control API and the CLI's API client read.

Each route names a function of node/vault_ops.py, where its parameters come from (path, query,
JSON body) and whether it writes. The server builds Starlette routes from the table; the client
builds requests from it; the CLI's offline path calls the same functions directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node import device_ops, mailbox_ops, sync_ops, vault_ops
from node.database import Database
from node.errors import NodeError
from protocols.errors import ProtocolError
from store.errors import StoreError
from store.vault_log import LocalSigner

log = structlog.get_logger()

# An import batch is a few hundred conversations; 32 MiB leaves room for long ones and still
# bounds what one request can make the node hold in memory.
MAX_BODY_BYTES = 32 * 1024 * 1024


# The modules of command functions, each taking the database first.
MODULES = {
    "vault": vault_ops,
    "device": device_ops,
    "sync": sync_ops,
    "mailbox": mailbox_ops,
}


@dataclass(frozen=True, kw_only=True)
class VaultRoute:
    op: str  # the function in node/vault_ops.py
    method: str
    path: str  # Starlette path; {name} parameters are strings
    query: Mapping[str, type] = field(default_factory=dict)
    body: Mapping[str, type] = field(default_factory=dict)
    writes: bool = False  # runs on the single writer thread
    # The CLI's patience: reads answer at once; an import batch or a verify of a large vault
    # takes a while.
    timeout_s: float = 30.0
    signer: bool = False  # gets the device's LocalSigner
    now: bool = False  # gets now_ms
    data_dir: bool = False  # gets the data directory (key files)
    module: str = "vault"  # which of MODULES holds the function

    @property
    def function(self) -> Callable[..., Any]:
        fn: Callable[..., Any] = getattr(MODULES[self.module], self.op)
        return fn

    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


ROUTES: tuple[VaultRoute, ...] = (
    VaultRoute(
        op="import_items",
        method="POST",
        path="/v1/import",
        body={"export_format": str, "items": list, "first_position": int},
        writes=True,
        signer=True,
        now=True,
        timeout_s=600.0,
    ),
    VaultRoute(
        op="list_conversations",
        method="GET",
        path="/v1/conversations",
        query={"limit": int, "cursor": str},
    ),
    VaultRoute(op="get_conversation", method="GET", path="/v1/conversations/{conversation_id}"),
    VaultRoute(
        op="list_acus",
        method="GET",
        path="/v1/acus",
        query={"conversation_id": str, "acu_type": str, "limit": int, "cursor": str},
    ),
    VaultRoute(op="get_acu", method="GET", path="/v1/acus/{acu_id}"),
    VaultRoute(op="acu_history", method="GET", path="/v1/acus/{acu_id}/history"),
    VaultRoute(
        op="edit_acu",
        method="POST",
        path="/v1/acus/{acu_id}/edit",
        body={"content": str},
        writes=True,
        signer=True,
        now=True,
    ),
    VaultRoute(op="verify", method="GET", path="/v1/verify", now=True, timeout_s=3600.0),
    VaultRoute(op="state_hash", method="GET", path="/v1/state-hash"),
    VaultRoute(op="list_devices", method="GET", path="/v1/devices", signer=True, module="device"),
    VaultRoute(op="sync_status", method="GET", path="/v1/sync/status", module="sync"),
    VaultRoute(
        op="mailbox_status", method="GET", path="/v1/mailbox/status", signer=True, module="mailbox"
    ),
    VaultRoute(op="relay_status", method="GET", path="/v1/relay/status", module="mailbox"),
    VaultRoute(
        op="plan_revocation",
        method="GET",
        path="/v1/devices/{peer_id}/revocation",
        signer=True,
        module="device",
    ),
    VaultRoute(
        op="revoke_device",
        method="POST",
        path="/v1/devices/{peer_id}/revoke",
        writes=True,
        signer=True,
        now=True,
        module="device",
    ),
    VaultRoute(
        op="approve_device",
        method="POST",
        path="/v1/devices/{peer_id}/approve",
        writes=True,
        signer=True,
        now=True,
        module="device",
    ),
    VaultRoute(
        op="rotate_identity",
        method="POST",
        path="/v1/identity/rotate",
        writes=True,
        signer=True,
        now=True,
        data_dir=True,
        module="device",
    ),
)
ROUTES_BY_OP = {route.op: route for route in ROUTES}
QUERY_DEFAULTS: Mapping[str, Any] = {"limit": vault_ops.DEFAULT_PAGE}


class BadRequest(NodeError):
    """A request the API refuses as malformed (400)."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _query_params(route: VaultRoute, request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, kind in route.query.items():
        raw = request.query_params.get(name)
        if raw is None:
            params[name] = QUERY_DEFAULTS.get(name)
            continue
        try:
            params[name] = kind(raw)
        except ValueError as err:
            raise BadRequest(f"query parameter {name}={raw!r} is not a {kind.__name__}") from err
    unknown = set(request.query_params) - set(route.query)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    return params


async def _body_params(route: VaultRoute, request: Request) -> dict[str, Any]:
    if not route.body:
        return {}
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes; send smaller batches")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes; send smaller batches")
    try:
        # Off the event loop: a large import batch takes a noticeable time to parse.
        body = await trio.to_thread.run_sync(json.loads, b"".join(chunks))
    except ValueError as err:
        raise BadRequest(f"the body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    params: dict[str, Any] = {}
    for name, kind in route.body.items():
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadRequest(f"body field {name!r} must be a {kind.__name__}")
        params[name] = value
    unknown = set(body) - set(route.body)
    if unknown:
        raise BadRequest(f"unknown body field(s): {', '.join(sorted(unknown))}")
    return params


def build_vault_routes(
    database: Database,
    signer: LocalSigner,
    data_dir: Path,
    on_write: Callable[[], None] = lambda: None,
) -> list[Route]:
    """Starlette routes for the table (the caller puts the token check around them).
    `on_write` is called after each write that succeeded (sync announces the new heads)."""
    return [
        Route(
            route.path,
            _endpoint(route, database, signer, data_dir, on_write),
            methods=[route.method],
        )
        for route in ROUTES
    ]


def _endpoint(
    route: VaultRoute,
    database: Database,
    signer: LocalSigner,
    data_dir: Path,
    on_write: Callable[[], None],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            params = {name: request.path_params[name] for name in route.path_params()}
            params |= _query_params(route, request)
            params |= await _body_params(route, request)
        except BadRequest as err:
            return JSONResponse({"error": "bad_request", "message": str(err)}, status_code=400)
        if route.signer:
            params["signer"] = signer
        if route.now:
            params["now_ms"] = now_ms()
        if route.data_dir:
            params["data_dir"] = data_dir
        run = database.write if route.writes else database.read
        started = time.monotonic()
        try:
            result = await run(_call, route.function, params)
        except (StoreError, ProtocolError, NodeError) as err:
            status = vault_ops.error_status(err)
            if status is None:
                raise
            log.info(f"vault.{route.op}_refused", error=status[1], message=str(err))
            return JSONResponse({"error": status[1], "message": str(err)}, status_code=status[0])
        if route.writes:
            on_write()
            # One summary line per write: the counts an import or an edit produced.
            counts = {k: v for k, v in result.items() if isinstance(v, int | str | bool)}
            log.info(f"vault.{route.op}", ms=round((time.monotonic() - started) * 1000), **counts)
        return JSONResponse(result)

    return endpoint


def _call(db: Any, fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    return fn(db, **params)
