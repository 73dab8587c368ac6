"""The friends' control API routes (they need the running node: invites name its addresses,
requests and acceptances go over the network). A refusal is a 400 with its code (409 for
`already_connected`), a friend or relay that cannot be reached a 502."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.peering import DEFAULT_INVITE_HOURS, PeeringFailed, PeeringService
from protocols.errors import LocalProtocolError, MalformedInput
from store.peering import TRUST_LEVELS, PeeringRefused

MAX_INVITE_HOURS = 24 * 365
MAX_MESSAGE = 500  # protocols.peering.MAX_MESSAGE


def peering_routes(service: PeeringService) -> list[Route]:
    """POST /v1/peering/invite, GET /v1/friends, GET /v1/friends/requests, POST
    /v1/friends/add, /v1/friends/accept, /v1/friends/block and /v1/friends/unblock."""

    async def invite(request: Request) -> Response:
        hours = (await _body(request)).get("hours", DEFAULT_INVITE_HOURS)
        if type(hours) is not int or not 1 <= hours <= MAX_INVITE_HOURS:
            return _error(400, "bad_request", f"hours must be 1 to {MAX_INVITE_HOURS}")
        return await _call(service.invite(hours))

    async def add(request: Request) -> Response:
        body = await _body(request)
        code, message = body.get("code"), body.get("message", "")
        if not isinstance(code, str):
            return _error(400, "bad_request", "code must be the invite code (vivim-invite:...)")
        if not isinstance(message, str) or len(message) > MAX_MESSAGE:
            return _error(400, "bad_request", f"message must be text of at most {MAX_MESSAGE}")
        return await _call(service.add(code, message))

    async def accept(request: Request) -> Response:
        body = await _body(request)
        did, trust = body.get("did"), body.get("trust", "trusted")
        if not isinstance(did, str):
            return _error(400, "bad_request", "did must be the requester's DID")
        if trust not in TRUST_LEVELS:
            return _error(400, "bad_request", f"trust must be one of {', '.join(TRUST_LEVELS)}")
        return await _call(service.accept(did, trust))

    async def block(request: Request) -> Response:
        did = (await _body(request)).get("did")
        if not isinstance(did, str) or not did.startswith("did:key:"):
            return _error(400, "bad_request", "did must be a DID (did:key:...)")
        return await _call(service.block(did))

    async def unblock(request: Request) -> Response:
        did = (await _body(request)).get("did")
        if not isinstance(did, str) or not did.startswith("did:key:"):
            return _error(400, "bad_request", "did must be a DID (did:key:...)")
        return await _call(service.unblock(did))

    async def friends(request: Request) -> Response:
        return await _call(_wrap("friends", service.friends()))

    async def requests(request: Request) -> Response:
        return await _call(_wrap("requests", service.requests()))

    return [
        Route("/v1/peering/invite", invite, methods=["POST"]),
        Route("/v1/friends", friends, methods=["GET"]),
        Route("/v1/friends/requests", requests, methods=["GET"]),
        Route("/v1/friends/add", add, methods=["POST"]),
        Route("/v1/friends/accept", accept, methods=["POST"]),
        Route("/v1/friends/block", block, methods=["POST"]),
        Route("/v1/friends/unblock", unblock, methods=["POST"]),
    ]


async def _wrap(key: str, work: Awaitable[list[dict[str, Any]]]) -> dict[str, Any]:
    return {key: await work}


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _call(work: Awaitable[dict[str, Any]]) -> Response:
    try:
        return JSONResponse(await work)
    except PeeringFailed as err:
        status = (
            502 if err.code == "unreachable" else 409 if err.code == "already_connected" else 400
        )
        return _error(status, err.code, str(err))
    except PeeringRefused as err:
        return _error(409 if err.code == "already_connected" else 400, err.code, str(err))
    except MalformedInput as err:
        return _error(400, err.code, str(err))
    except LocalProtocolError as err:
        return _error(400, "bad_request", str(err))


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
