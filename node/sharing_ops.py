"""The circle, share and received-share commands, as blocking functions of the database.

Each takes the database first and returns a JSON-ready value; node/sharing_api.py runs them on
the database's reader or writer thread behind the control API. `share --global` is the commons'
`publish` (store.commons) with its global grants recorded in the sharing tables, in one
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from peewee import SqliteDatabase

from node.vault_ops import InvalidRequest, to_json
from protocols.errors import MalformedInput
from protocols.sharing import Permission, TargetKind
from store import commons, sharing
from store.database import write_transaction
from store.errors import AcuNotFound
from store.share_delivery import list_received
from store.vault import get_acu
from store.vault_log import LocalSigner


def _json(value: Any) -> dict[str, Any]:
    """A store result as the JSON object the API answers with."""
    return cast(dict[str, Any], to_json(value))


# The extra permissions a share may give (view is in every grant).
PERMISSIONS = ("annotate", "remix", "reshare")
TARGETS = ("did", "circle", "network", "global")


def create_circle(
    db: SqliteDatabase, signer: LocalSigner, name: str, now_ms: int
) -> dict[str, Any]:
    return _json(sharing.create_circle(db, signer, name, now_ms))


def list_circles(db: SqliteDatabase) -> dict[str, Any]:
    return {"circles": to_json(sharing.list_circles(db))}


def add_circle_member(
    db: SqliteDatabase, signer: LocalSigner, name: str, did: str, now_ms: int
) -> dict[str, Any]:
    return _json(sharing.add_circle_member(db, signer, name, did, now_ms))


def remove_circle_member(
    db: SqliteDatabase, signer: LocalSigner, name: str, did: str, now_ms: int
) -> dict[str, Any]:
    return _json(sharing.remove_circle_member(db, signer, name, did, now_ms))


def share(
    db: SqliteDatabase,
    signer: LocalSigner,
    acu_id: str,
    target_kind: str,
    target: str | None,
    permissions: Sequence[str],
    now_ms: int,
) -> dict[str, Any]:
    if target_kind not in TARGETS:
        raise InvalidRequest(f"target_kind must be one of {', '.join(TARGETS)}")
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown or not all(isinstance(p, str) for p in permissions):
        raise InvalidRequest(f"permissions are among {', '.join(PERMISSIONS)}: {sorted(unknown)}")
    try:
        granted = Permission.from_wire(sorted({"view", *permissions}))
    except MalformedInput as err:
        raise InvalidRequest(str(err)) from err
    kind = TargetKind(target_kind)
    if kind is TargetKind.GLOBAL:
        return _publish(db, signer, acu_id, target, granted, now_ms)
    grant = sharing.share_acu(db, signer, acu_id, kind, target, now_ms, permissions=granted)
    return _json(grant)


def _publish(
    db: SqliteDatabase,
    signer: LocalSigner,
    acu_id: str,
    target: str | None,
    permissions: Permission,
    now_ms: int,
) -> dict[str, Any]:
    """`share --global`: the same act as `publish` (the commons' record, the level raised to
    GLOBAL, the irrevocable global grant), without title or tags."""
    if target is not None:
        raise InvalidRequest("a global share names no target")
    del permissions  # a global grant is view for everyone; the publication is the content
    with write_transaction(db):
        if get_acu(db, acu_id) is None:
            raise AcuNotFound(acu_id)
        # publish raises the level and records the global grant (store.sharing.share_acu).
        published = commons.publish(db, signer, acu_id, now_ms=now_ms)
        grant = sharing.get_grant(db, published.grants[0])
    return {**to_json(grant), "publication_id": published.publication.id}


def revoke(db: SqliteDatabase, signer: LocalSigner, grant_id: str, now_ms: int) -> dict[str, Any]:
    return _json(sharing.revoke_grant(db, signer, grant_id, now_ms))


def list_shares(db: SqliteDatabase, acu_id: str | None) -> dict[str, Any]:
    return {"shares": to_json(sharing.list_grants(db, acu_id))}


def access(db: SqliteDatabase, acu_id: str, did: str | None, now_ms: int) -> dict[str, Any]:
    if not did:
        raise InvalidRequest("did is required: GET /v1/acus/{acu_id}/access?did=did:key:...")
    found = sharing.access_for(db, acu_id, did, now_ms)
    return {
        "acu_id": acu_id,
        "did": did,
        "allowed": found.allowed,
        "rule": found.rule.value,
        "rules": [rule.value for rule in found.rules],
        "permissions": found.permissions.to_wire(),
        "grant_ids": list(found.grant_ids),
    }


def received(db: SqliteDatabase, acu_id: str | None, now_ms: int) -> dict[str, Any]:
    return {"acus": to_json(list_received(db, now_ms=now_ms, acu_id=acu_id))}
