"""The owner's side of the sharing mesh: circles, grants, revocations, access (migration 9).

store/SHARING_DESIGN.md, "Circles and grants". Blocking functions of the database, each taking
`db` first, like the vault API; randomness (salts, keys, ephemeral keys) is drawn here with
`random` (os.urandom unless a test passes its own), time is `now_ms`.

- `create_circle`, `add_circle_member`, `remove_circle_member`, `list_circles`: a circle is a
  name, an id (`circle_id` of a random salt) and versions; every change of membership signs a
  `CircleKeyVersion` with the next version and a new random key, wrapped for each member's X25519
  key, so what is shared after a removal is unreadable to the removed member. Only friends
  (accepted connections, `store.peering`) may be added; a member whose connection has ended since
  is left out of the next version.
- `share_acu` raises the ACU's sharing level (`store.vault.raise_sharing_level`, an op), signs a
  `SharingGrant` with this device's key and, for a grant that needs a key, gives the ACU its
  content key (drawn once per ACU, kept) and the ciphertext of its canonical record; a direct
  grant keeps the content key wrapped for its target, a circle grant wrapped with the circle's
  current key. All in one transaction.
- `revoke_grant` signs a `GrantRevocation`; a global grant raises `Irrevocable` (and a trigger
  refuses one in SQL whatever wrote it).
- `list_grants`, `access_for` (store.access.resolve_access over the tables).

Every write also records, in `share_feed`, who may pull what (store.share_delivery reads it).
"""

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from peewee import SqliteDatabase

from protocols.share_bundle import MAX_CIPHERTEXT_BYTES, acu_record
from protocols.share_crypto import KeyContext, encrypt_content, wrap_key, wrap_with_circle_key
from protocols.sharing import (
    CIRCLE_SALT_LENGTH,
    MAX_CIRCLE_MEMBERS,
    CircleKeyVersion,
    GrantRevocation,
    Permission,
    SharingGrant,
    SharingLevel,
    TargetKind,
    circle_id,
    raise_level,
)
from store import peering
from store.access import Access, resolve_access
from store.database import write_transaction
from store.errors import AcuNotFound, StoreError
from store.vault import raise_sharing_level
from store.vault_log import LocalSigner
from store.vault_sql import connection

__all__ = [
    "MAX_CIRCLE_NAME",
    "CircleInfo",
    "GrantInfo",
    "SharingRefused",
    "access_for",
    "add_circle_member",
    "create_circle",
    "get_grant",
    "list_circles",
    "list_grants",
    "remove_circle_member",
    "revoke_grant",
    "share_acu",
]

Random = Callable[[int], bytes]
KEY_LENGTH: Final = 32
MAX_CIRCLE_NAME: Final = 64


class SharingRefused(StoreError):
    """A sharing write the store refuses; `code` is the API's error code. Nothing changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True, slots=True)
class CircleInfo:
    id: str
    name: str
    version: int
    members: tuple[str, ...]
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class GrantInfo:
    id: str
    acu_id: str
    grantor_did: str
    grantor_device: str
    target_kind: str
    target: str | None
    circle_name: str | None
    circle_version: int | None
    permissions: tuple[str, ...]
    issued_at_ms: int
    expires_at_ms: int | None
    revoked_at_ms: int | None


def not_a_friend(did: str) -> SharingRefused:
    return SharingRefused(
        "not_a_friend",
        f"{did} is not a friend: run `vivim-node friend add CODE` with their invite code (or "
        f"`vivim-node friend accept {did}` for their request) first",
    )


# --- circles --------------------------------------------------------------------------------------


def create_circle(
    db: SqliteDatabase, signer: LocalSigner, name: str, now_ms: int, *, random: Random = os.urandom
) -> CircleInfo:
    """A new circle `name` with no members (version 1, its own key). `SharingRefused`
    (bad_name, circle_exists)."""
    _check_name(name)
    with write_transaction(db):
        conn = connection(db)
        if conn.execute("SELECT 1 FROM circle WHERE name = ?", (name,)).fetchone():
            raise SharingRefused("circle_exists", f"there is a circle named {name!r} already")
        salt = random(CIRCLE_SALT_LENGTH)
        new_id = circle_id(signer.author, salt)
        conn.execute(
            "INSERT INTO circle (id, name, owner_did, salt, created_at_ms) VALUES (?, ?, ?, ?, ?)",
            (new_id, name, signer.author, salt, now_ms),
        )
        _new_version(db, signer, new_id, 1, (), now_ms, random)
        return _circle(conn, name)


def add_circle_member(
    db: SqliteDatabase,
    signer: LocalSigner,
    name: str,
    did: str,
    now_ms: int,
    *,
    random: Random = os.urandom,
) -> CircleInfo:
    """Add friend `did` to circle `name`: the next version, a new key wrapped for every member.
    The new member may pull what the circle's live grants give. `SharingRefused`
    (circle_not_found, not_a_friend, already_member, too_many_members)."""
    with write_transaction(db):
        conn = connection(db)
        circle = _circle(conn, name)
        if did in circle.members:
            raise SharingRefused("already_member", f"{did} is in circle {name!r} already")
        if _friend_key(db, did) is None:
            raise not_a_friend(did)
        if len(circle.members) >= MAX_CIRCLE_MEMBERS:
            raise SharingRefused(
                "too_many_members", f"a circle has at most {MAX_CIRCLE_MEMBERS} members"
            )
        _new_version(
            db, signer, circle.id, circle.version + 1, (*circle.members, did), now_ms, random
        )
        live = conn.execute(
            "SELECT g.id FROM sharing_grant AS g WHERE g.target_kind = 'circle' AND g.target = ?"
            " AND NOT EXISTS (SELECT 1 FROM grant_revocation AS r WHERE r.grant_id = g.id)"
            " AND (g.expires_at_ms IS NULL OR g.expires_at_ms > ?) ORDER BY g.seq",
            (circle.id, now_ms),
        ).fetchall()
        _feed(conn, [did], [grant_id for (grant_id,) in live])
        return _circle(conn, name)


def remove_circle_member(
    db: SqliteDatabase,
    signer: LocalSigner,
    name: str,
    did: str,
    now_ms: int,
    *,
    random: Random = os.urandom,
) -> CircleInfo:
    """Remove `did` from circle `name`: the next version, with a new key wrapped for the members
    left, so nothing shared with the circle from now on is readable to `did`.
    `SharingRefused` (circle_not_found, not_a_member)."""
    with write_transaction(db):
        conn = connection(db)
        circle = _circle(conn, name)
        if did not in circle.members:
            raise SharingRefused("not_a_member", f"{did} is not in circle {name!r}")
        left = tuple(member for member in circle.members if member != did)
        _new_version(db, signer, circle.id, circle.version + 1, left, now_ms, random)
        return _circle(conn, name)


def list_circles(db: SqliteDatabase) -> list[CircleInfo]:
    """Every circle, by name, with its current version and members."""
    with db.atomic():
        conn = connection(db)
        names = conn.execute("SELECT name FROM circle ORDER BY name").fetchall()
        return [_circle(conn, name) for (name,) in names]


def _check_name(name: object) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_CIRCLE_NAME
        or not name.isprintable()
        or name != name.strip()
        or "/" in name
    ):
        raise SharingRefused(
            "bad_name",
            f"a circle name is 1 to {MAX_CIRCLE_NAME} printable characters, no '/', no leading "
            f"or trailing spaces: {name!r:.80}",
        )


def _circle(conn: sqlite3.Connection, name: str) -> CircleInfo:
    row = conn.execute(
        "SELECT c.id, c.created_at_ms, v.version, v.record, v.created_at_ms FROM circle AS c"
        " JOIN circle_version AS v ON v.circle_id = c.id WHERE c.name = ?"
        " ORDER BY v.version DESC LIMIT 1",
        (name,),
    ).fetchone()
    if row is None:
        raise SharingRefused(
            "circle_not_found", f"no circle named {name!r}: `vivim-node circle list` shows them"
        )
    record = CircleKeyVersion.from_wire(bytes(row[3]))
    return CircleInfo(
        id=row[0],
        name=name,
        version=row[2],
        members=record.members,
        created_at_ms=row[1],
        updated_at_ms=row[4],
    )


def _new_version(
    db: SqliteDatabase,
    signer: LocalSigner,
    circle: str,
    version: int,
    members: Iterable[str],
    now_ms: int,
    random: Random,
) -> None:
    """Sign and store `version` of `circle` with a new key wrapped for each member who is still
    a friend (the others are left out)."""
    conn = connection(db)
    db_members: dict[str, bytes] = {}
    for did in members:
        found = _friend_key(db, did)
        if found is not None:
            db_members[did] = found
    record = CircleKeyVersion.create(
        signing_key=signer.signing_key,
        circle_id=circle,
        owner_did=signer.author,
        version=version,
        members=frozenset(db_members),
        issued_at_ms=now_ms,
    )
    key = random(KEY_LENGTH)
    conn.execute(
        "INSERT INTO circle_version (circle_id, version, seq, record, circle_key, created_at_ms)"
        " VALUES (?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM circle_version), ?, ?, ?)",
        (circle, version, record.to_wire(), key, now_ms),
    )
    context = KeyContext.circle(circle_id=circle, version=version)
    for did in record.members:
        wrapped = wrap_key(
            key,
            context=context,
            recipient_x25519_public_key=db_members[did],
            ephemeral_private_key=random(KEY_LENGTH),
        )
        conn.execute(
            "INSERT INTO circle_member_key (circle_id, version, member_did, encrypted_key,"
            " ephemeral_pub_key) VALUES (?, ?, ?, ?, ?)",
            (circle, version, did, wrapped.encrypted_key, wrapped.ephemeral_pub_key),
        )


def _friend_key(db: SqliteDatabase, did: str) -> bytes | None:
    """The X25519 key of friend `did` (an accepted connection, not blocked), or None."""
    found = peering.friend(db, did)
    return None if found is None else found.encryption_key


# --- grants ---------------------------------------------------------------------------------------


def share_acu(
    db: SqliteDatabase,
    signer: LocalSigner,
    acu_id: str,
    target_kind: TargetKind,
    target: str | None,
    now_ms: int,
    *,
    permissions: Permission = Permission.VIEW,
    expires_at_ms: int | None = None,
    random: Random = os.urandom,
) -> GrantInfo:
    """Grant `target` (a friend's DID, a circle's name, None for the network and global)
    `permissions` on our ACU `acu_id` (module docstring). Raises `AcuNotFound`, or
    `SharingRefused` (not_owner, not_a_friend, circle_not_found, bad_target, too_large)."""
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT author, content, type, source_time_ms, sharing_level FROM acu WHERE id = ?",
            (acu_id,),
        ).fetchone()
        if row is None:
            raise AcuNotFound(acu_id)
        author, content, acu_type, source_time_ms, level = row
        if author != signer.author:
            raise SharingRefused(
                "not_owner", f"ACU {acu_id} is {author}'s: only its author shares it"
            )
        circle: CircleInfo | None = None
        recipient_key: bytes | None = None
        if target_kind is TargetKind.DID:
            if target == signer.author:
                raise SharingRefused("bad_target", "sharing with yourself grants nothing")
            recipient_key = _friend_key(db, target) if target is not None else None
            if recipient_key is None or target is None:
                raise not_a_friend(str(target))
            grant_target: str | None = target
        elif target_kind is TargetKind.CIRCLE:
            if target is None:
                raise SharingRefused("bad_target", "a circle share names the circle")
            circle = _circle(conn, target)
            grant_target = circle.id
        else:
            if target is not None:
                raise SharingRefused("bad_target", f"a {target_kind.value} share names no target")
            grant_target = None
        grant = SharingGrant.create(
            signing_key=signer.signing_key,
            grantor_did=signer.author,
            acu_id=acu_id,
            target_kind=target_kind,
            target=grant_target,
            permissions=permissions,
            expires_at_ms=expires_at_ms,
            issued_at_ms=now_ms,
        )
        new_level = raise_level(SharingLevel(level), grant.level)
        raise_sharing_level(db, signer, acu_id, new_level, now_ms)
        if conn.execute("SELECT 1 FROM sharing_grant WHERE id = ?", (grant.id,)).fetchone():
            return _grant_info(conn, grant.id)  # the same grant again: nothing new
        columns: dict[str, object] = {}
        if target_kind is not TargetKind.GLOBAL:
            content_key = _content_key(
                conn,
                acu_id,
                acu_record(
                    author=author, content=content, acu_type=acu_type, source_time_ms=source_time_ms
                ),
                now_ms,
                random,
            )
            if recipient_key is not None:
                wrapped = wrap_key(
                    content_key,
                    context=KeyContext.content(acu_id=acu_id, grant_id=grant.id),
                    recipient_x25519_public_key=recipient_key,
                    ephemeral_private_key=random(KEY_LENGTH),
                )
                columns = {
                    "encrypted_key": wrapped.encrypted_key,
                    "ephemeral_pub_key": wrapped.ephemeral_pub_key,
                }
            elif circle is not None:
                circle_key = _circle_key(conn, circle.id, circle.version)
                under_circle = wrap_with_circle_key(
                    content_key,
                    circle_key,
                    acu_id=acu_id,
                    circle_id=circle.id,
                    circle_key_version=circle.version,
                )
                columns = {
                    "circle_version": circle.version,
                    "circle_encrypted_key": under_circle.encrypted_key,
                    "circle_nonce": under_circle.nonce,
                }
        names = ", ".join(columns)
        conn.execute(
            "INSERT INTO sharing_grant (id, seq, acu_id, grantor_did, target_kind, target, wire,"
            f" issued_at_ms, expires_at_ms{', ' + names if names else ''})"
            " VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM sharing_grant), ?, ?, ?, ?, ?, ?,"
            f" ?{', ?' * len(columns)})",
            (
                grant.id,
                acu_id,
                grant.grantor_did,
                target_kind.value,
                grant_target,
                grant.to_wire(),
                now_ms,
                expires_at_ms,
                *columns.values(),
            ),
        )
        if target_kind is TargetKind.DID:
            _feed(conn, [target], [grant.id])
        elif circle is not None:
            _feed(conn, circle.members, [grant.id])
        elif target_kind is TargetKind.NETWORK:
            _feed(conn, [None], [grant.id])
        return _grant_info(conn, grant.id)


def revoke_grant(db: SqliteDatabase, signer: LocalSigner, grant_id: str, now_ms: int) -> GrantInfo:
    """Revoke our grant `grant_id`: its target gets nothing new under it. Raises `Irrevocable`
    for a global grant, `SharingRefused` (grant_not_found, already_revoked)."""
    with write_transaction(db):
        conn = connection(db)
        grant = _grant(conn, grant_id)
        revocation = GrantRevocation.create(
            signing_key=signer.signing_key, grant=grant, revoked_at_ms=now_ms
        )
        if conn.execute(
            "SELECT 1 FROM grant_revocation WHERE grant_id = ?", (grant_id,)
        ).fetchone():
            raise SharingRefused("already_revoked", f"grant {grant_id} is revoked already")
        conn.execute(
            "INSERT INTO grant_revocation (id, grant_id, acu_id, wire, revoked_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (revocation.id, grant_id, grant.acu_id, revocation.to_wire(), now_ms),
        )
        recipients: list[str | None]
        if grant.target_kind is TargetKind.DID:
            recipients = [grant.target]
        elif grant.target_kind is TargetKind.CIRCLE:
            rows = conn.execute(
                "SELECT DISTINCT member_did FROM circle_member_key WHERE circle_id = ?"
                " ORDER BY member_did",
                (grant.target,),
            ).fetchall()
            recipients = [did for (did,) in rows]
        else:
            recipients = [None]
        _feed(conn, recipients, [grant_id], revocation_id=revocation.id)
        return _grant_info(conn, grant_id)


def get_grant(db: SqliteDatabase, grant_id: str) -> GrantInfo:
    """Our grant `grant_id`; `SharingRefused` (grant_not_found)."""
    with db.atomic():
        return _grant_info(connection(db), grant_id)


def list_grants(db: SqliteDatabase, acu_id: str | None = None) -> list[GrantInfo]:
    """Our grants (of `acu_id`, if given), oldest first."""
    with db.atomic():
        conn = connection(db)
        where, args = ("WHERE acu_id = ?", (acu_id,)) if acu_id is not None else ("", ())
        rows = conn.execute(f"SELECT id FROM sharing_grant {where} ORDER BY seq", args)
        return [_grant_info(conn, grant_id) for (grant_id,) in rows.fetchall()]


def access_for(db: SqliteDatabase, acu_id: str, requester_did: str, now_ms: int) -> Access:
    """What `requester_did` may do with ACU `acu_id` of this vault at `now_ms`
    (store.access.resolve_access over our grants, revocations, circles and friends)."""
    with db.atomic():
        conn = connection(db)
        row = conn.execute("SELECT author FROM acu WHERE id = ?", (acu_id,)).fetchone()
        if row is None:
            raise AcuNotFound(acu_id)
        return resolve_access(
            requester_did=requester_did,
            owner_did=row[0],
            acu_id=acu_id,
            grants=grants_of(conn, acu_id),
            revocations=revocations_of(conn, acu_id),
            circle_members=circle_members(conn),
            accepted_connections=frozenset(friend.did for friend in peering.friends(db)),
            now_ms=now_ms,
        )


def grants_of(conn: sqlite3.Connection, acu_id: str) -> list[SharingGrant]:
    rows = conn.execute("SELECT wire FROM sharing_grant WHERE acu_id = ? ORDER BY seq", (acu_id,))
    return [SharingGrant.from_wire(bytes(wire)) for (wire,) in rows.fetchall()]


def revocations_of(conn: sqlite3.Connection, acu_id: str) -> list[GrantRevocation]:
    rows = conn.execute("SELECT wire FROM grant_revocation WHERE acu_id = ?", (acu_id,))
    return [GrantRevocation.from_wire(bytes(wire)) for (wire,) in rows.fetchall()]


def circle_members(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """Each circle's current members."""
    rows = conn.execute(
        "SELECT v.circle_id, v.record FROM circle_version AS v WHERE v.version ="
        " (SELECT max(version) FROM circle_version WHERE circle_id = v.circle_id)"
    ).fetchall()
    return {cid: CircleKeyVersion.from_wire(bytes(record)).members for cid, record in rows}


def _content_key(
    conn: sqlite3.Connection, acu_id: str, record: bytes, now_ms: int, random: Random
) -> bytes:
    """The ACU's content key, drawn (with its ciphertext) at its first share, kept after."""
    row = conn.execute(
        "SELECT content_key FROM share_content WHERE acu_id = ?", (acu_id,)
    ).fetchone()
    if row is not None:
        return bytes(row[0])
    key = random(KEY_LENGTH)
    ciphertext = encrypt_content(key, acu_id, record)
    if len(ciphertext) > MAX_CIPHERTEXT_BYTES:
        raise SharingRefused(
            "too_large",
            f"ACU {acu_id} is {len(record)} bytes; a share holds at most "
            f"{MAX_CIPHERTEXT_BYTES - 16} bytes",
        )
    conn.execute(
        "INSERT INTO share_content (acu_id, content_key, ciphertext, created_at_ms)"
        " VALUES (?, ?, ?, ?)",
        (acu_id, key, ciphertext, now_ms),
    )
    return key


def _circle_key(conn: sqlite3.Connection, circle: str, version: int) -> bytes:
    row = conn.execute(
        "SELECT circle_key FROM circle_version WHERE circle_id = ? AND version = ?",
        (circle, version),
    ).fetchone()
    assert row is not None  # every version is stored with its key
    return bytes(row[0])


def _feed(
    conn: sqlite3.Connection,
    recipients: Iterable[str | None],
    grant_ids: Iterable[str],
    *,
    revocation_id: str | None = None,
) -> None:
    grants = list(grant_ids)
    conn.executemany(
        "INSERT INTO share_feed (recipient_did, grant_id, revocation_id) VALUES (?, ?, ?)",
        [(did, grant_id, revocation_id) for did in recipients for grant_id in grants],
    )


def _grant(conn: sqlite3.Connection, grant_id: str) -> SharingGrant:
    row = conn.execute("SELECT wire FROM sharing_grant WHERE id = ?", (grant_id,)).fetchone()
    if row is None:
        raise SharingRefused(
            "grant_not_found", f"no grant {grant_id} of ours: `vivim-node shares` lists them"
        )
    return SharingGrant.from_wire(bytes(row[0]))


def _grant_info(conn: sqlite3.Connection, grant_id: str) -> GrantInfo:
    grant = _grant(conn, grant_id)
    row = conn.execute(
        "SELECT g.circle_version, c.name, r.revoked_at_ms FROM sharing_grant AS g"
        " LEFT JOIN circle AS c ON g.target_kind = 'circle' AND c.id = g.target"
        " LEFT JOIN grant_revocation AS r ON r.grant_id = g.id WHERE g.id = ?",
        (grant_id,),
    ).fetchone()
    return GrantInfo(
        id=grant.id,
        acu_id=grant.acu_id,
        grantor_did=grant.grantor_did,
        grantor_device=grant.grantor_device,
        target_kind=grant.target_kind.value,
        target=grant.target,
        circle_name=row[1],
        circle_version=row[0],
        permissions=tuple(grant.permissions.to_wire()),
        issued_at_ms=grant.issued_at_ms,
        expires_at_ms=grant.expires_at_ms,
        revoked_at_ms=row[2],
    )
