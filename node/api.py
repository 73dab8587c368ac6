"""The local control API: HTTP/JSON on 127.0.0.1; every route but /openapi.json needs the token.

Starlette (on trio through anyio) served by hypercorn's trio worker. Starlette does not generate an
OpenAPI document, so `openapi.json` next to this module is written by hand; a test checks that it
documents exactly the routes the app serves. The CLI (`status`, `peers`) and the VIVIM app use this
API; it never listens on anything but loopback.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

API_HOST = "127.0.0.1"
API_VERSION_PREFIX = "/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
# Hypercorn waits this long for in-flight requests at shutdown; the node must stop within 3 s.
GRACEFUL_TIMEOUT_S = 1.0


@dataclass(frozen=True, kw_only=True)
class ApiBackend:
    """What the API reads from the node; the runner provides it."""

    status: Callable[[], dict[str, Any]]
    peers: Callable[[], Awaitable[list[dict[str, Any]]]]
    metrics: Callable[[], bytes]


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def build_app(
    backend: ApiBackend, token: str, token_path: Path, more_routes: Sequence[Route] = ()
) -> Starlette:
    """The API app; `more_routes` (the vault's) get the same token check as the built-in ones."""
    expected = f"Bearer {token}".encode()

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return error_response(
                    401,
                    "unauthorized",
                    f"missing or wrong token: send 'Authorization: Bearer <token>' with the "
                    f"token from {token_path}",
                )
            return await handler(request)

        return endpoint

    async def status(_: Request) -> Response:
        return JSONResponse(backend.status())

    async def peers(_: Request) -> Response:
        return JSONResponse({"peers": await backend.peers()})

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(
            backend.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    openapi_document = json.loads(OPENAPI_PATH.read_text())

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document)

    async def not_found(request: Request, _: Exception) -> Response:
        return error_response(404, "not_found", f"no route {request.url.path}; see /openapi.json")

    async def method_not_allowed(request: Request, _: Exception) -> Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here")

    return Starlette(
        routes=[
            Route(f"{API_VERSION_PREFIX}/status", guarded(status), methods=["GET"]),
            Route(f"{API_VERSION_PREFIX}/peers", guarded(peers), methods=["GET"]),
            Route("/metrics", guarded(metrics), methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *(
                Route(route.path, guarded(route.endpoint), methods=route.methods)
                for route in more_routes
            ),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )


async def serve_api(
    app: Starlette,
    port: int,
    *,
    # Typed Any: the trio-stubs that py-libp2p pulls in (trio-typing) predate trio.TaskStatus.
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `nursery.start` returns the bound URLs (the port the OS chose)."""
    config = hypercorn.config.Config()
    config.bind = [f"{API_HOST}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    await hypercorn.trio.serve(app, config, task_status=task_status)  # type: ignore[arg-type]
