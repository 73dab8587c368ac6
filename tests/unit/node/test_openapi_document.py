"""The hand-written OpenAPI document lists exactly the routes the control API serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from starlette.routing import Route

from node.api import OPENAPI_PATH, ApiBackend, build_app
from node.commons import CommonsService
from node.commons_api import commons_routes
from node.database import Database
from node.mailbox import MailboxService
from node.mailbox_api import mailbox_routes
from node.pairing import PairingCodes, pairing_route
from node.peering import PeeringService
from node.peering_api import peering_routes
from node.sharing_api import sharing_routes
from node.vault_api import build_vault_routes
from store.vault_log import LocalSigner


def test_document_paths_match_the_app_routes() -> None:
    backend = ApiBackend(status=dict, peers=_no_peers, metrics=bytes)
    # The routes only hold the database and signer; nothing here calls them.
    vault_routes = [
        *build_vault_routes(cast(Database, None), cast(LocalSigner, None), Path(".")),
        pairing_route(PairingCodes(), "did", "peer id", list),
        *mailbox_routes(cast(MailboxService, None)),
        *peering_routes(cast(PeeringService, None)),
        *sharing_routes(cast(Database, None), cast(LocalSigner, None)),
        *commons_routes(cast(CommonsService, None), cast(Database, None)),
    ]
    app = build_app(backend, "token", Path("api.token"), vault_routes)
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
