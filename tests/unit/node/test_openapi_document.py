"""The hand-written OpenAPI document lists exactly the routes the control API serves."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Route

from node.api import OPENAPI_PATH, ApiBackend, build_app


def test_document_paths_match_the_app_routes() -> None:
    backend = ApiBackend(status=dict, peers=_no_peers, metrics=bytes)
    app = build_app(backend, "token", Path("api.token"))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    document = json.loads(OPENAPI_PATH.read_text())
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == documented


async def _no_peers() -> list[dict[str, object]]:
    return []
