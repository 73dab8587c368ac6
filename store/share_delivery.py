"""Shares between nodes, the store's side: what a friend may pull, and what we accept.

The grantor's side: `share_items_for(db, recipient_did, after, now_ms)` reads `share_feed` (what
became the recipient's, in order; its `seq` is the pull cursor, an integer that only grows) and
makes, for each row, a `ShareBundle` (a grant the recipient may still see by
`store.access.resolve_access`) or the `GrantRevocation` of a revoked grant. A DID that is not a
friend gets nothing, and a friend gets nothing about an ACU they have no grant for. A circle
grant travels under the circle's *current* version (the content key is wrapped with the current
circle key, deterministically), so a member added later reads the circle's earlier grants and a
removed one nothing new; a network grant's content key is wrapped for the friend at pull time.

The recipient's side: `accept_bundle` checks and opens a bundle (`protocols.share_bundle.
open_bundle`: signatures, the grantor device's credentials, that the grant names us, unwrap,
decrypt, the content id) from a friend who is not blocked, and keeps it as a received share;
`accept_revocation` keeps a revocation of a share we hold (`check_revocation`: never a global
grant's). Both are idempotent; a bad item raises and stores nothing. `accept_item` takes either
as wire bytes. `list_received` is `acus list --received`.
"""

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from peewee import SqliteDatabase

from protocols.canonical import canonical_decode
from protocols.errors import BadSignature, MalformedInput
from protocols.share_bundle import (
    BUNDLE_TYPE,
    BundleRefused,
    KeyKind,
    ShareBundle,
    open_bundle,
)
from protocols.share_crypto import KeyContext, WrappedKey, wrap_key, wrap_with_circle_key
from protocols.sharing import (
    REVOCATION_TYPE,
    GrantRevocation,
    Permission,
    SharingGrant,
    TargetKind,
    check_revocation,
)
from protocols.trust import TrustState
from store import peering
from store.access import resolve_access
from store.database import write_transaction
from store.devices import credentials_of, trust_state
from store.identity import load_identity
from store.sharing import circle_members, revocations_of
from store.vault_sql import connection

__all__ = [
    "DEFAULT_ITEMS",
    "Accepted",
    "ReceivedAcu",
    "ShareItem",
    "accept_bundle",
    "accept_item",
    "accept_revocation",
    "bundles_for",
    "list_received",
    "share_items_for",
    "share_page",
    "take_item",
]

# Items made per call: a page of the share pull holds at most 1000 (protocols.share_sync).
DEFAULT_ITEMS: Final = 100
Random = Callable[[int], bytes]
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShareItem:
    """One thing a recipient may pull: its cursor `position` and a bundle or a revocation."""

    position: int
    item: ShareBundle | GrantRevocation

    def to_wire(self) -> bytes:
        return self.item.to_wire()


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceivedAcu:
    """An ACU a friend shared with us: what its live grants allow (`permissions`, empty when
    every grant is revoked or expired: what was received stays readable)."""

    acu_id: str
    author: str
    content: str
    type: str
    source_time_ms: int
    permissions: tuple[str, ...]
    grant_ids: tuple[str, ...]
    revoked: bool
    received_at_ms: int


# --- the grantor's side ---------------------------------------------------------------------------


def share_items_for(
    db: SqliteDatabase,
    recipient_did: str,
    after: int,
    *,
    now_ms: int,
    limit: int = DEFAULT_ITEMS,
    random: Random = os.urandom,
) -> tuple[list[ShareItem], bool]:
    """What `recipient_did` may pull past cursor `after`, at most `limit` items in cursor order,
    and whether more are past the last; nothing for a DID that is not a friend."""
    items, _, more = share_page(db, recipient_did, after, now_ms=now_ms, limit=limit, random=random)
    return items, more


def share_page(
    db: SqliteDatabase,
    recipient_did: str,
    after: int,
    *,
    now_ms: int,
    limit: int = DEFAULT_ITEMS,
    random: Random = os.urandom,
) -> tuple[list[ShareItem], int, bool]:
    """`share_items_for`, with the cursor to ask with next: past every feed row looked at,
    those it skipped included (a grant no longer live), so a pull never stalls on them."""
    recipient = peering.friend(db, recipient_did)
    if recipient is None:
        return [], after, False
    with db.atomic():
        conn = connection(db)
        rows = conn.execute(
            "SELECT f.seq, f.grant_id, f.revocation_id FROM share_feed AS f"
            " WHERE f.seq > ? AND (f.recipient_did = ? OR f.recipient_did IS NULL)"
            " ORDER BY f.seq LIMIT ?",
            (after, recipient_did, limit + 1),
        ).fetchall()
        more = len(rows) > limit
        state = trust_state(db)
        members = circle_members(conn)
        items: list[ShareItem] = []
        scanned = after
        for seq, grant_id, revocation_id in rows[:limit]:
            scanned = int(seq)
            if revocation_id is not None:
                (wire,) = conn.execute(
                    "SELECT wire FROM grant_revocation WHERE id = ?", (revocation_id,)
                ).fetchone()
                items.append(ShareItem(position=seq, item=GrantRevocation.from_wire(bytes(wire))))
                continue
            bundle = _bundle(
                db, conn, grant_id, recipient, members, state, now_ms=now_ms, random=random
            )
            if bundle is not None:
                items.append(ShareItem(position=seq, item=bundle))
        return items, scanned, more


def bundles_for(
    db: SqliteDatabase, recipient_did: str, after: int = 0, *, now_ms: int
) -> list[ShareBundle]:
    """Every bundle `recipient_did` may see past `after` (`share_items_for` without the
    revocations, all pages)."""
    bundles: list[ShareBundle] = []
    more = True
    while more:
        items, after, more = share_page(db, recipient_did, after, now_ms=now_ms)
        bundles += [item.item for item in items if isinstance(item.item, ShareBundle)]
    return bundles


def _bundle(
    db: SqliteDatabase,
    conn: sqlite3.Connection,
    grant_id: str,
    recipient: peering.Friend,
    members: dict[str, tuple[str, ...]],
    state: TrustState,
    *,
    now_ms: int,
    random: Random,
) -> ShareBundle | None:
    """The bundle of grant `grant_id` for `recipient`, or None if they may not see it now."""
    row = conn.execute(
        "SELECT g.wire, s.content_key, s.ciphertext, g.encrypted_key, g.ephemeral_pub_key,"
        " g.circle_version FROM sharing_grant AS g JOIN share_content AS s ON s.acu_id = g.acu_id"
        " WHERE g.id = ?",
        (grant_id,),
    ).fetchone()
    if row is None:
        return None
    grant = SharingGrant.from_wire(bytes(row[0]))
    access = resolve_access(
        requester_did=recipient.did,
        owner_did=grant.grantor_did,
        acu_id=grant.acu_id,
        grants=[grant],
        revocations=revocations_of(conn, grant.acu_id),
        circle_members=members,
        accepted_connections=frozenset({recipient.did}),
        now_ms=now_ms,
    )
    if not access.allowed:
        return None
    if not state.is_trusted(grant.grantor_device):
        return None  # signed by a device revoked since: its grants travel no more
    credentials = credentials_of(state, grant.grantor_device)
    content_key = bytes(row[1])

    def bundle(kind: KeyKind, **keys: bytes) -> ShareBundle:
        return ShareBundle(
            grant=grant.to_wire(),
            ciphertext=bytes(row[2]),
            key_kind=kind,
            wrapped_key=keys.get("wrapped_key"),
            circle_version=keys.get("circle_version"),
            circle_key=keys.get("circle_key"),
            content_key=keys.get("content_key"),
            certificate=credentials.certificate,
            chain=credentials.chain,
            rotations=credentials.rotations,
        )

    if grant.target_kind is TargetKind.DID:
        wrapped = WrappedKey(encrypted_key=bytes(row[3]), ephemeral_pub_key=bytes(row[4]))
        return bundle(KeyKind.DIRECT, wrapped_key=wrapped.to_wire())
    if grant.target_kind is TargetKind.NETWORK:
        wrapped = wrap_key(
            content_key,
            context=KeyContext.content(acu_id=grant.acu_id, grant_id=grant.id),
            recipient_x25519_public_key=recipient.encryption_key,
            ephemeral_private_key=random(32),
        )
        return bundle(KeyKind.DIRECT, wrapped_key=wrapped.to_wire())
    assert grant.target is not None
    version = conn.execute(
        "SELECT v.version, v.record, v.circle_key, k.encrypted_key, k.ephemeral_pub_key"
        " FROM circle_version AS v JOIN circle_member_key AS k ON k.circle_id = v.circle_id"
        " AND k.version = v.version AND k.member_did = ? WHERE v.circle_id = ?"
        " ORDER BY v.version DESC LIMIT 1",
        (recipient.did, grant.target),
    ).fetchone()
    if version is None or version[0] != _current_version(conn, grant.target):
        return None
    under_circle = wrap_with_circle_key(
        content_key,
        bytes(version[2]),
        acu_id=grant.acu_id,
        circle_id=grant.target,
        circle_key_version=version[0],
    )
    member_key = WrappedKey(encrypted_key=bytes(version[3]), ephemeral_pub_key=bytes(version[4]))
    return bundle(
        KeyKind.CIRCLE,
        circle_version=bytes(version[1]),
        circle_key=member_key.to_wire(),
        content_key=under_circle.to_wire(),
    )


def _current_version(conn: sqlite3.Connection, circle: str) -> int:
    (version,) = conn.execute(
        "SELECT max(version) FROM circle_version WHERE circle_id = ?", (circle,)
    ).fetchone()
    return int(version)


# --- the recipient's side -------------------------------------------------------------------------


def accept_item(
    db: SqliteDatabase, item: bytes, *, encryption_key: bytes, now_ms: int
) -> str | None:
    """Accept one pulled item's wire bytes (a bundle or a revocation): the grant id it was
    about, or None for a revocation of a share we never received. Raises as the two below."""
    return take_item(db, item, encryption_key=encryption_key, now_ms=now_ms)[0]


def take_item(
    db: SqliteDatabase, item: bytes, *, encryption_key: bytes, now_ms: int
) -> tuple[str | None, bool]:
    """`accept_item`, and whether the item was new here (a bundle or revocation received
    before, by a pull or a letter, changes nothing and is not new)."""
    try:
        value = canonical_decode(item)
    except MalformedInput as err:
        raise BundleRefused("malformed", f"the item does not decode: {err}") from err
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == BUNDLE_TYPE:
        bundle = _decoded(ShareBundle.from_wire, item)
        accepted = accept_bundle(db, bundle, encryption_key=encryption_key, now_ms=now_ms)
        return accepted.grant_id, accepted.new
    if kind == REVOCATION_TYPE:
        revocation = _decoded(GrantRevocation.from_wire, item)
        stored = accept_revocation(db, revocation, now_ms=now_ms)
        return (revocation.grant_id if stored else None), stored
    raise BundleRefused("malformed", f"not a share item (type {kind!r:.60})")


@dataclass(frozen=True, kw_only=True, slots=True)
class Accepted:
    """A received share: `grant_id` and whether this call stored it (`new`)."""

    grant_id: str
    acu_id: str
    grantor_did: str
    new: bool


def accept_bundle(
    db: SqliteDatabase, bundle: ShareBundle, *, encryption_key: bytes, now_ms: int
) -> Accepted:
    """Check and open `bundle` (our X25519 private key `encryption_key`) and keep what it holds
    as a received share. Idempotent. Raises `BundleRefused` (with its code: not_a_friend,
    blocked, forged, not_for_us, unreadable, wrong_content, ...) and stores nothing then."""
    identity = load_identity(db)
    if identity is None:
        raise BundleRefused("no_identity", "this vault has no identity yet")
    opened = open_bundle(
        bundle,
        recipient_did=identity.did,
        recipient_x25519_private_key=encryption_key,
        now_ms=now_ms,
    )
    grant = opened.grant
    if peering.is_blocked(db, grant.grantor_did):
        raise BundleRefused("blocked", f"{grant.grantor_did} is blocked")
    if peering.friend(db, grant.grantor_did) is None:
        raise BundleRefused("not_a_friend", f"{grant.grantor_did} is not a friend of ours")
    with write_transaction(db):
        conn = connection(db)
        if conn.execute("SELECT 1 FROM received_share WHERE grant_id = ?", (grant.id,)).fetchone():
            return Accepted(
                grant_id=grant.id, acu_id=grant.acu_id, grantor_did=grant.grantor_did, new=False
            )
        circle_version: int | None = None
        if opened.circle_version is not None and opened.circle_key is not None:
            version = opened.circle_version
            circle_version = version.version
            conn.execute(
                "INSERT OR IGNORE INTO received_circle_key (circle_id, version, owner_did, record,"
                " circle_key, received_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    version.circle_id,
                    version.version,
                    version.owner_did,
                    version.to_wire(),
                    opened.circle_key,
                    now_ms,
                ),
            )
        conn.execute(
            "INSERT INTO received_share (grant_id, acu_id, grantor_did, grantor_device,"
            " target_kind, target, permissions, grant_wire, expires_at_ms, record, author,"
            " content, type, source_time_ms, circle_version, received_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                grant.id,
                grant.acu_id,
                grant.grantor_did,
                grant.grantor_device,
                grant.target_kind.value,
                grant.target,
                json.dumps(grant.permissions.to_wire()),
                grant.to_wire(),
                grant.expires_at_ms,
                opened.record,
                opened.author,
                opened.content,
                opened.acu_type,
                opened.source_time_ms,
                circle_version,
                now_ms,
            ),
        )
    return Accepted(grant_id=grant.id, acu_id=grant.acu_id, grantor_did=grant.grantor_did, new=True)


def accept_revocation(db: SqliteDatabase, revocation: GrantRevocation, *, now_ms: int) -> bool:
    """Keep `revocation` of a share we received: True if stored now, False if we hold no share
    under that grant or hold the revocation already. Raises `BundleRefused` (forged,
    untrusted_device), `Irrevocable` (a global grant) or `RevocationMismatch`."""
    try:
        revocation.verify()
    except BadSignature as err:
        raise BundleRefused("forged", "the revocation's signature does not verify") from err
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT grant_wire FROM received_share WHERE grant_id = ?", (revocation.grant_id,)
        ).fetchone()
        if row is None:
            return False
        grant = SharingGrant.from_wire(bytes(row[0]))
        check_revocation(revocation, grant)
        known = peering.friend(db, grant.grantor_did)
        devices = {grant.grantor_device, *(known.devices if known is not None else ())}
        if revocation.grantor_device not in devices:
            raise BundleRefused(
                "untrusted_device",
                f"the revocation is signed by {revocation.grantor_device}, not a device we know "
                f"of {grant.grantor_did}",
            )
        if conn.execute(
            "SELECT 1 FROM received_revocation WHERE grant_id = ?", (grant.id,)
        ).fetchone():
            return False
        conn.execute(
            "INSERT INTO received_revocation (id, grant_id, wire, revoked_at_ms, received_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (revocation.id, grant.id, revocation.to_wire(), revocation.revoked_at_ms, now_ms),
        )
        return True


def list_received(
    db: SqliteDatabase, *, now_ms: int, acu_id: str | None = None
) -> list[ReceivedAcu]:
    """The ACUs friends shared with us (only `acu_id`, if given), newest first; `permissions`
    is the union over the grants neither revoked nor expired at `now_ms`."""
    with db.atomic():
        conn = connection(db)
        where, args = ("WHERE s.acu_id = ?", (acu_id,)) if acu_id is not None else ("", ())
        rows = conn.execute(
            "SELECT s.acu_id, s.author, s.content, s.type, s.source_time_ms, s.grant_id,"
            " s.permissions, s.expires_at_ms, r.grant_id IS NOT NULL, s.received_at_ms"
            f" FROM received_share AS s LEFT JOIN received_revocation AS r"
            f" ON r.grant_id = s.grant_id {where} ORDER BY s.received_at_ms DESC, s.grant_id",
            args,
        ).fetchall()
    by_acu: dict[str, list[tuple[object, ...]]] = {}
    for row in rows:
        by_acu.setdefault(row[0], []).append(row)
    received: list[ReceivedAcu] = []
    for acu, grants in by_acu.items():
        permissions = Permission(0)
        live = False
        for row in grants:
            expires = row[7]
            if not row[8] and (expires is None or now_ms < int(str(expires))):
                permissions |= Permission.from_wire(json.loads(str(row[6])))
                live = True
        first = grants[0]
        received.append(
            ReceivedAcu(
                acu_id=acu,
                author=str(first[1]),
                content=str(first[2]),
                type=str(first[3]),
                source_time_ms=int(str(first[4])),
                permissions=tuple(permissions.to_wire()) if live else (),
                grant_ids=tuple(sorted(str(row[5]) for row in grants)),
                revoked=not live,
                received_at_ms=max(int(str(row[9])) for row in grants),
            )
        )
    return received


def _decoded(decode: Callable[[bytes], _T], data: bytes) -> _T:
    try:
        return decode(data)
    except MalformedInput as err:
        raise BundleRefused("malformed", f"the item does not decode: {err}") from err
