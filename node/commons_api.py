"""The global commons' control API routes: publish (needs the running node: it gossips), list,
show, and delete, which is always refused (a publication is never deleted)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.commons import CommonsService
from node.database import Database
from protocols.errors import LocalProtocolError
from store import commons as commons_store

MAX_TAGS_TEXT = 4096


def publication_json(row: commons_store.PublicationRow, content: object = None) -> dict[str, Any]:
    body = row.to_json()
    if content is not None:
        body["content"] = content
    return body


def commons_routes(service: CommonsService, db: Database) -> list[Route]:
    """POST /v1/global/publish, GET /v1/global, GET and DELETE /v1/global/{publication_id}."""

    async def publish(request: Request) -> Response:
        body = await _body(request)
        subject = body.get("subject_id")
        title = body.get("title", "")
        tags = body.get("tags", [])
        license_ = body.get("license", "")
        if not isinstance(subject, str):
            return _error(400, "bad_request", "subject_id must be an ACU or conversation id")
        if not isinstance(title, str) or not isinstance(license_, str):
            return _error(400, "bad_request", "title and license must be text")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return _error(400, "bad_request", "tags must be a list of text")
        try:
            published = await service.publish(subject, title=title, tags=tags, license=license_)
        except commons_store.SubjectNotFound as err:
            return _error(404, "not_found", str(err))
        except LocalProtocolError as err:
            return _error(400, "bad_request", str(err))
        held = await db.read(commons_store.get_publication, published.publication.id)
        assert held is not None
        return JSONResponse(
            publication_json(held[0])
            | {"grants": list(published.grants), "acus": len(published.grants)}
        )

    async def list_(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", commons_store.DEFAULT_LIMIT))
            before = request.query_params.get("before")
            before_seq = None if before is None else int(before)
        except ValueError:
            return _error(400, "bad_request", "limit and before must be integers")
        rows = await db.read(commons_store.list_publications, limit, before_seq)
        return JSONResponse({"publications": [publication_json(row) for row in rows]})

    async def show(request: Request) -> Response:
        publication_id = request.path_params["publication_id"]
        held = await db.read(commons_store.get_publication, publication_id)
        if held is None:
            return _error(404, "not_found", f"no global publication {publication_id} here")
        row, publication = held
        return JSONResponse(publication_json(row, commons_store.decoded_content(publication)))

    async def delete(request: Request) -> Response:
        publication_id = request.path_params["publication_id"]
        try:
            await db.read(commons_store.delete_publication, publication_id)
        except commons_store.PublicationNotFound as err:
            return _error(404, "not_found", str(err))
        except commons_store.PublicationImmutable as err:
            return _error(409, "immutable", str(err))
        raise AssertionError("delete_publication always refuses")

    return [
        Route("/v1/global/publish", publish, methods=["POST"]),
        Route("/v1/global", list_, methods=["GET"]),
        Route("/v1/global/{publication_id}", show, methods=["GET"]),
        Route("/v1/global/{publication_id}", delete, methods=["DELETE"]),
    ]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
