"""The sharing routes of the control API: circles, shares, access, received shares.

A table like node/vault_api.py's: each route names a function of node/sharing_ops.py, where its
parameters come from and whether it writes (on the single writer thread). Every function gets
the database; `signer` and `now_ms` are passed to those that name them. Refusals are JSON errors
with a code: 404 for what does not exist, 409 for what the state refuses (a global grant's
revocation answers 409 `irrevocable`: a global publication is permanent), 400 for bad input.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node import sharing_ops
from node.database import Database
from node.errors import NodeError
from node.vault_ops import error_status
from protocols.errors import ProtocolError
from protocols.sharing import Irrevocable
from store.errors import StoreError
from store.sharing import SharingRefused
from store.vault_log import LocalSigner

log = structlog.get_logger()

# A share request is a few ids; 64 KiB bounds what one can make the node read.
MAX_BODY_BYTES = 64 * 1024

# SharingRefused codes and their HTTP status (the rest are 409: the state refuses).
_STATUS_BY_CODE: Mapping[str, int] = {
    "circle_not_found": 404,
    "grant_not_found": 404,
    "bad_name": 400,
    "bad_target": 400,
    "too_large": 400,
}


@dataclass(frozen=True, kw_only=True)
class SharingRoute:
    op: str  # the function in node/sharing_ops.py
    method: str
    path: str
    query: tuple[str, ...] = ()
    body: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    writes: bool = False

    @property
    def function(self) -> Callable[..., Any]:
        fn: Callable[..., Any] = getattr(sharing_ops, self.op)
        return fn


ROUTES: tuple[SharingRoute, ...] = (
    SharingRoute(op="list_circles", method="GET", path="/v1/circles"),
    SharingRoute(
        op="create_circle", method="POST", path="/v1/circles", body={"name": str}, writes=True
    ),
    SharingRoute(
        op="add_circle_member",
        method="POST",
        path="/v1/circles/{name}/members",
        body={"did": str},
        writes=True,
    ),
    SharingRoute(
        op="remove_circle_member",
        method="DELETE",
        path="/v1/circles/{name}/members/{did}",
        writes=True,
    ),
    SharingRoute(op="list_shares", method="GET", path="/v1/shares", query=("acu_id",)),
    SharingRoute(
        op="share",
        method="POST",
        path="/v1/shares",
        body={
            "acu_id": str,
            "target_kind": str,
            "target": (str, type(None)),
            "permissions": list,
        },
        writes=True,
    ),
    SharingRoute(op="revoke", method="POST", path="/v1/shares/{grant_id}/revoke", writes=True),
    SharingRoute(op="access", method="GET", path="/v1/acus/{acu_id}/access", query=("did",)),
    SharingRoute(op="received", method="GET", path="/v1/received", query=("acu_id",)),
)


class BadRequest(NodeError):
    """A request the API refuses as malformed (400)."""


def sharing_routes(
    database: Database,
    signer: LocalSigner,
    on_write: Callable[[], None] = lambda: None,
    on_published: Callable[[str], Awaitable[None]] | None = None,
) -> list[Route]:
    """Starlette routes for the table (the caller puts the token check around them);
    `on_write` runs after each write that succeeded (a share raises a sharing level: an op),
    and `on_published` with the id of a publication a write made (`share --global`), for the
    commons to gossip it."""
    return [
        Route(
            route.path,
            _endpoint(route, database, signer, on_write, on_published),
            methods=[route.method],
        )
        for route in ROUTES
    ]


def _endpoint(
    route: SharingRoute,
    database: Database,
    signer: LocalSigner,
    on_write: Callable[[], None],
    on_published: Callable[[str], Awaitable[None]] | None,
) -> Callable[[Request], Awaitable[Response]]:
    wanted = set(inspect.signature(route.function).parameters)

    async def endpoint(request: Request) -> Response:
        try:
            params: dict[str, Any] = dict(request.path_params)
            params |= _query(route, request)
            params |= await _body(route, request)
        except BadRequest as err:
            return _error(400, "bad_request", str(err))
        if "signer" in wanted:
            params["signer"] = signer
        if "now_ms" in wanted:
            params["now_ms"] = int(time.time() * 1000)
        run = database.write if route.writes else database.read
        try:
            result = await run(_call, route.function, params)
        except (StoreError, ProtocolError, NodeError) as err:
            status, code, message = _refusal(err)
            if status is None:
                raise
            log.info(f"sharing.{route.op}_refused", error=code, message=message)
            return _error(status, code, message)
        if route.writes:
            on_write()
            if on_published is not None and isinstance(result, dict):
                publication_id = result.get("publication_id")
                if isinstance(publication_id, str):
                    await on_published(publication_id)
            log.info(f"sharing.{route.op}", **{k: v for k, v in params.items() if k != "signer"})
        return JSONResponse(result)

    return endpoint


def _refusal(err: BaseException) -> tuple[int | None, str, str]:
    if isinstance(err, Irrevocable):
        return 409, err.code, f"{err}: a global publication is permanent"
    if isinstance(err, SharingRefused):
        return _STATUS_BY_CODE.get(err.code, 409), err.code, str(err)
    status = error_status(err)
    if status is None:
        return None, "", ""
    return status[0], status[1], str(err)


def _query(route: SharingRoute, request: Request) -> dict[str, Any]:
    unknown = set(request.query_params) - set(route.query)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    return {name: request.query_params.get(name) for name in route.query}


async def _body(route: SharingRoute, request: Request) -> dict[str, Any]:
    if not route.body:
        return {}
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise BadRequest(f"the body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - set(route.body)
    if unknown:
        raise BadRequest(f"unknown body field(s): {', '.join(sorted(unknown))}")
    params: dict[str, Any] = {}
    for name, kind in route.body.items():
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadRequest(f"body field {name!r} has the wrong type")
        params[name] = value
    return params


def _call(db: Any, fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    return fn(db, **params)


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
