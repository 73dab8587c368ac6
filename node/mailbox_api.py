"""The mailbox's control API routes: register at and withdraw from a relay (they need the
running node: they talk to the relay). The status routes are in node/vault_api.py's table."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.mailbox import (
    DEFAULT_QUOTA_BYTES,
    DEFAULT_REGISTRATION_DAYS,
    MailboxFailed,
    MailboxService,
)
from node.mailbox_link import MailboxRefused, RelayUnreachable
from protocols.errors import LocalProtocolError

MAX_REGISTRATION_DAYS = 3650


def mailbox_routes(service: MailboxService) -> list[Route]:
    """POST /v1/mailbox/register and /v1/mailbox/unregister. A relay's refusal is a 400 with its
    code; an unreachable relay a 502."""

    async def register(request: Request) -> Response:
        body = await _body(request)
        relay = body.get("relay")
        quota = body.get("quota_bytes", DEFAULT_QUOTA_BYTES)
        days = body.get("days", DEFAULT_REGISTRATION_DAYS)
        allow = body.get("allow", [])
        if not isinstance(relay, str):
            return _error(400, "bad_request", "relay must be the relay's multiaddr")
        if type(quota) is not int or quota < 1:
            return _error(400, "bad_request", "quota_bytes must be a positive integer")
        if type(days) is not int or not 1 <= days <= MAX_REGISTRATION_DAYS:
            return _error(400, "bad_request", f"days must be 1 to {MAX_REGISTRATION_DAYS}")
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            return _error(400, "bad_request", "allow must be a list of DIDs")
        return await _call(
            service.register(relay, quota_bytes=quota, days=days, allowed_senders=allow)
        )

    async def unregister(request: Request) -> Response:
        relay = (await _body(request)).get("relay")
        if not isinstance(relay, str):
            return _error(400, "bad_request", "relay must be the relay's peer id or multiaddr")
        return await _call(service.unregister(relay))

    return [
        Route("/v1/mailbox/register", register, methods=["POST"]),
        Route("/v1/mailbox/unregister", unregister, methods=["POST"]),
    ]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _call(work: Awaitable[dict[str, Any]]) -> Response:
    try:
        return JSONResponse(await work)
    except MailboxRefused as err:
        return _error(400, err.code, f"the relay refused: {err}")
    except RelayUnreachable as err:
        return _error(502, "relay_unreachable", f"{err}; check the address and that it runs")
    except (MailboxFailed, LocalProtocolError) as err:
        return _error(400, "bad_request", str(err))


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
