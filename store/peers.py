"""Peers this node has seen: blocking functions the node runs on its database threads.

Rows cross the layer boundary as frozen dataclasses, never as peewee model instances.
"""

import json
from dataclasses import dataclass

from peewee import EXCLUDED, Case, SqliteDatabase, fn

from store.database import write_transaction
from store.models import Peer


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerRow:
    """A peer as last seen."""

    peer_id: str
    did: str | None
    addrs: tuple[str, ...]  # multiaddr strings
    last_seen_ms: int


def record_peer_seen(
    db: SqliteDatabase,
    peer_id: str,
    addrs: list[str] | tuple[str, ...],
    seen_at_ms: int,
    did: str | None = None,
) -> None:
    """Insert or update a peer: `last_seen_ms` replaces the stored one; a non-empty `addrs`
    replaces the stored addresses. An empty `addrs` (a disconnect, or an inbound peer not yet
    identified) and a `did` of None keep what is stored: a sighting that learned nothing must not
    make us forget how to reach the peer or who it is.
    """
    with write_transaction(db):
        Peer.insert(
            peer_id=peer_id,
            did=did,
            addrs=json.dumps(list(addrs), separators=(",", ":")),
            last_seen_ms=seen_at_ms,
        ).on_conflict(
            conflict_target=[Peer.peer_id],
            update={
                Peer.addrs: Case(None, [(EXCLUDED.addrs == "[]", Peer.addrs)], EXCLUDED.addrs),
                Peer.last_seen_ms: EXCLUDED.last_seen_ms,
                Peer.did: fn.COALESCE(EXCLUDED.did, Peer.did),
            },
        ).execute(db)


def list_peers(db: SqliteDatabase) -> list[PeerRow]:
    """Every peer seen, most recently seen first (the order worth dialing them in)."""
    query = Peer.select().order_by(Peer.last_seen_ms.desc(), Peer.peer_id).dicts()
    return [
        PeerRow(
            peer_id=row["peer_id"],
            did=row["did"],
            addrs=tuple(json.loads(row["addrs"])),
            last_seen_ms=row["last_seen_ms"],
        )
        for row in query.execute(db)
    ]
