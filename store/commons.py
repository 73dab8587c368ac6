"""The global commons: publishing, and keeping the publications received (migration 10).

- `publish` makes a `GlobalPublication` of an ACU or a conversation of the vault, in one
  transaction with what publishing means for the vault: every ACU it holds is raised to GLOBAL
  (an op each) and gets an irrevocable global `SharingGrant` (`store.sharing.share_acu`, once
  per ACU: a new version reuses the grant).
  Publishing a subject again is the next version, naming the latest one this node holds.
- `store_publications` is the apply path for publications from elsewhere (gossip or pull),
  which the caller has verified (`protocols.publication.verify_publication`): a new id is
  stored, a known one changes nothing (same id, same signed bytes), an id held with other bytes
  is refused (`PublicationImmutable`): nothing ever alters a stored publication.
- `delete_publication` always refuses: the API's answer to a delete. The table's triggers refuse
  UPDATE and DELETE whatever runs them.
- `publications_after` serves `/vivim/global/1.0.0`; `pull_cursor` / `advance_cursor` keep, per
  peer, how far we pulled.
"""

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from peewee import SqliteDatabase

from protocols.canonical import canonical_encode, decode_stored
from protocols.publication import GlobalPublication, SubjectKind
from protocols.sharing import TargetKind
from store.database import write_transaction
from store.devices import credentials_of
from store.errors import StoreError
from store.sharing import grants_of, share_acu
from store.trust_state import load_trust
from store.vault_log import LocalSigner
from store.vault_sql import connection

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
_COLUMNS: Final = (
    "seq, id, publisher_did, publisher_device, subject_kind, subject_id, version, previous_id,"
    " content_id, title, tags, license, published_at_ms, received_from, received_at_ms"
)


class SubjectNotFound(StoreError):
    """Neither an ACU nor a conversation of the vault has this id."""

    def __init__(self, subject_id: str) -> None:
        super().__init__(f"no ACU or conversation {subject_id} in the vault")
        self.subject_id = subject_id


class PublicationNotFound(StoreError):
    def __init__(self, publication_id: str) -> None:
        super().__init__(f"no global publication {publication_id} here")
        self.publication_id = publication_id


class PublicationImmutable(StoreError):
    """A publication is never deleted or altered; publish a new version instead."""

    code = "immutable"

    def __init__(self, publication_id: str, what: str) -> None:
        super().__init__(
            f"global publication {publication_id} cannot be {what}: what is published stays "
            "published (publish the subject again for a new version)"
        )
        self.publication_id = publication_id


@dataclass(frozen=True, kw_only=True, slots=True)
class PublicationRow:
    seq: int
    id: str
    publisher_did: str
    publisher_device: str
    subject_kind: str
    subject_id: str
    version: int
    previous_id: str | None
    content_id: str
    title: str
    tags: tuple[str, ...]
    license: str
    published_at_ms: int
    received_from: str | None  # None: published here
    received_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__} | {"tags": list(self.tags)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Published:
    publication: GlobalPublication
    grants: tuple[str, ...]  # the id of each ACU's global grant (store.sharing)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreReport:
    stored: tuple[str, ...]  # ids new here
    known: int  # already held, identical
    refused: tuple[tuple[str, str], ...]  # (id, why)


def publish(
    db: SqliteDatabase,
    signer: LocalSigner,
    subject_id: str,
    *,
    title: str = "",
    tags: Sequence[str] = (),
    license: str = "",
    now_ms: int,
) -> Published:
    """Publish an ACU or conversation of the vault globally (module docstring).

    Raises `SubjectNotFound`; `LocalProtocolError` for a title, tags or license the record
    cannot hold, or content over its bound.
    """
    with write_transaction(db):
        conn = connection(db)
        kind, content, acu_ids = _content(conn, subject_id)
        latest = conn.execute(
            "SELECT id, version FROM global_publication WHERE publisher_did = ? AND subject_id = ?"
            " ORDER BY version DESC, published_at_ms DESC, id DESC LIMIT 1",
            (signer.author, subject_id),
        ).fetchone()
        credentials = credentials_of(load_trust(conn), signer.device)
        publication = GlobalPublication.create(
            signing_key=signer.signing_key,
            publisher_did=signer.author,
            subject_kind=kind,
            subject_id=subject_id,
            version=1 if latest is None else int(latest[1]) + 1,
            previous_id=None if latest is None else str(latest[0]),
            content=canonical_encode(content),
            title=title,
            tags=tuple(tags),
            license=license,
            published_at_ms=now_ms,
            certificate=credentials.certificate,
            chain=credentials.chain,
            rotations=credentials.rotations,
        )
        grants: list[str] = []
        for acu_id in acu_ids:
            # store.sharing.share_acu raises the level to GLOBAL (an op) and records the signed,
            # irrevocable grant; an ACU published before keeps its one global grant.
            existing = [g.id for g in grants_of(conn, acu_id) if g.target_kind is TargetKind.GLOBAL]
            if existing:
                grants.append(existing[0])
                continue
            grants.append(share_acu(db, signer, acu_id, TargetKind.GLOBAL, None, now_ms).id)
        _insert(conn, publication, received_from=None, now_ms=now_ms)
    return Published(publication=publication, grants=tuple(grants))


def store_publications(
    db: SqliteDatabase,
    publications: Sequence[GlobalPublication],
    *,
    received_from: str,
    now_ms: int,
) -> StoreReport:
    """Keep verified publications from `received_from` (module docstring); one transaction."""
    stored: list[str] = []
    refused: list[tuple[str, str]] = []
    known = 0
    with write_transaction(db):
        conn = connection(db)
        for publication in publications:
            row = conn.execute(
                "SELECT wire FROM global_publication WHERE id = ?", (publication.id,)
            ).fetchone()
            if row is None:
                _insert(conn, publication, received_from=received_from, now_ms=now_ms)
                stored.append(publication.id)
            elif bytes(row[0]) == publication.to_wire():
                known += 1
            else:
                refused.append(
                    (publication.id, str(PublicationImmutable(publication.id, "altered")))
                )
    return StoreReport(stored=tuple(stored), known=known, refused=tuple(refused))


def delete_publication(db: SqliteDatabase, publication_id: str) -> None:
    """Always refuses: `PublicationNotFound`, else `PublicationImmutable`."""
    if get_publication(db, publication_id) is None:
        raise PublicationNotFound(publication_id)
    raise PublicationImmutable(publication_id, "deleted")


def has_publication(db: SqliteDatabase, publication_id: str) -> bool:
    row = (
        connection(db)
        .execute("SELECT 1 FROM global_publication WHERE id = ?", (publication_id,))
        .fetchone()
    )
    return row is not None


def list_publications(
    db: SqliteDatabase, limit: int = DEFAULT_LIMIT, before_seq: int | None = None
) -> list[PublicationRow]:
    """Publications held here, most recently stored first."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    sql = f"SELECT {_COLUMNS} FROM global_publication"
    params: tuple[object, ...] = ()
    if before_seq is not None:
        sql += " WHERE seq < ?"
        params = (before_seq,)
    rows = connection(db).execute(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
    return [_row(r) for r in rows]


def get_publication(
    db: SqliteDatabase, publication_id: str
) -> tuple[PublicationRow, GlobalPublication] | None:
    row = (
        connection(db)
        .execute(f"SELECT {_COLUMNS}, wire FROM global_publication WHERE id = ?", (publication_id,))
        .fetchone()
    )
    if row is None:
        return None
    return _row(row[:-1]), GlobalPublication.from_wire(bytes(row[-1]))


def decoded_content(publication: GlobalPublication) -> object:
    """The content of a stored publication (checked before it was stored)."""
    return decode_stored(publication.content)


def publications_after(db: SqliteDatabase, after: int, limit: int) -> list[tuple[int, bytes]]:
    """(seq, wire) of the publications stored after `after`, in order, at most `limit`."""
    rows = connection(db).execute(
        "SELECT seq, wire FROM global_publication WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    )
    return [(int(seq), bytes(wire)) for seq, wire in rows]


def last_seq(db: SqliteDatabase) -> int:
    row = connection(db).execute("SELECT coalesce(max(seq), 0) FROM global_publication").fetchone()
    return int(row[0])


def pull_cursor(db: SqliteDatabase, peer_id: str) -> int:
    """The last seq of `peer_id`'s we pulled (0: nothing yet)."""
    row = (
        connection(db)
        .execute("SELECT after_seq FROM global_cursor WHERE peer_id = ?", (peer_id,))
        .fetchone()
    )
    return 0 if row is None else int(row[0])


def advance_cursor(
    db: SqliteDatabase, peer_id: str, after_seq: int, pulled: int, now_ms: int
) -> None:
    """Record that we hold what `peer_id` stored up to `after_seq` (after storing it)."""
    with write_transaction(db):
        connection(db).execute(
            "INSERT INTO global_cursor (peer_id, after_seq, pulled, last_pull_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (peer_id) DO UPDATE SET"
            " after_seq = max(after_seq, excluded.after_seq),"
            " pulled = pulled + excluded.pulled, last_pull_ms = excluded.last_pull_ms",
            (peer_id, after_seq, pulled, now_ms),
        )


# --- internals ------------------------------------------------------------------------------------


_ACU_SELECT: Final = (
    "SELECT id, author, content, type, category, language, source_time_ms, conversation_id,"
    " message_id, position, provider, model FROM acu"
)
_ACU_KEYS: Final = (
    "id", "author", "content", "type", "category", "language", "source_time_ms",
    "conversation_id", "message_id", "position", "provider", "model",
)  # fmt: skip


def _content(
    conn: sqlite3.Connection, subject_id: str
) -> tuple[SubjectKind, dict[str, object], list[str]]:
    """What publishing `subject_id` puts in the content, and the ACUs it holds."""
    row = conn.execute(f"{_ACU_SELECT} WHERE id = ?", (subject_id,)).fetchone()
    if row is not None:
        return (
            SubjectKind.ACU,
            {"kind": "acu", "acu": dict(zip(_ACU_KEYS, row, strict=True))},
            [subject_id],
        )
    conversation = conn.execute(
        "SELECT id, owner, title, provider, model, source_id, created_at_ms, updated_at_ms"
        " FROM conversation WHERE id = ?",
        (subject_id,),
    ).fetchone()
    if conversation is None:
        raise SubjectNotFound(subject_id)
    keys = ("id", "owner", "title", "provider", "model", "source_id")
    messages = conn.execute(
        "SELECT id, position, role, content, created_at_ms, branch, parent_id FROM message"
        " WHERE conversation_id = ? ORDER BY position, branch != 'main', id",
        (subject_id,),
    ).fetchall()
    acus = conn.execute(
        f"{_ACU_SELECT} WHERE conversation_id = ? ORDER BY message_id, position, id",
        (subject_id,),
    ).fetchall()
    message_keys = ("id", "position", "role", "content", "created_at_ms", "branch", "parent_id")
    content: dict[str, object] = {
        "kind": "conversation",
        "conversation": dict(
            zip((*keys, "created_at_ms", "updated_at_ms"), conversation, strict=True)
        ),
        "messages": [dict(zip(message_keys, m, strict=True)) for m in messages],
        "acus": [dict(zip(_ACU_KEYS, a, strict=True)) for a in acus],
    }
    return SubjectKind.CONVERSATION, content, [str(a[0]) for a in acus]


def _insert(
    conn: sqlite3.Connection,
    publication: GlobalPublication,
    *,
    received_from: str | None,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO global_publication (id, publisher_did, publisher_device, subject_kind,"
        " subject_id, version, previous_id, content_id, title, tags, license, published_at_ms,"
        " received_from, received_at_ms, wire)"
        f" VALUES ({', '.join('?' * 15)})",
        (
            publication.id,
            publication.publisher_did,
            publication.publisher_device,
            publication.subject_kind.value,
            publication.subject_id,
            publication.version,
            publication.previous_id,
            publication.content_id,
            publication.title,
            json.dumps(list(publication.tags)),
            publication.license,
            publication.published_at_ms,
            received_from,
            now_ms,
            publication.to_wire(),
        ),
    )


def _row(row: Sequence[Any]) -> PublicationRow:
    (seq, id_, did, device, kind, subject, version, previous, cid, title, tags, lic, at, source,
     received) = row  # fmt: skip
    return PublicationRow(
        seq=int(seq),
        id=str(id_),
        publisher_did=str(did),
        publisher_device=str(device),
        subject_kind=str(kind),
        subject_id=str(subject),
        version=int(version),
        previous_id=None if previous is None else str(previous),
        content_id=str(cid),
        title=str(title),
        tags=tuple(json.loads(tags)),
        license=str(lic),
        published_at_ms=int(at),
        received_from=None if source is None else str(source),
        received_at_ms=int(received),
    )
