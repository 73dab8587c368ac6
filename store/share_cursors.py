"""Where share delivery stands (node/share_delivery.py): per friend device, how far we pulled its
share feed; per friend, how far our feed for them went to their relays while they were away.

Both are positions in a grantor's `share_feed` (store.share_delivery), integers that only grow;
a cursor never moves back (a late writer with an older position changes nothing). Items are
accepted idempotently, so a cursor that lags (a crash after accepting, before moving it) costs
only items pulled or mailed twice.
"""

from peewee import SqliteDatabase

from store.database import write_transaction
from store.vault_sql import connection


def pull_cursor(db: SqliteDatabase, peer_id: str) -> int:
    """How far we pulled `peer_id`'s share feed (0: never)."""
    with db.atomic():
        row = (
            connection(db)
            .execute("SELECT after FROM share_pull_cursor WHERE peer_id = ?", (peer_id,))
            .fetchone()
        )
    return 0 if row is None else int(row[0])


def advance_pull_cursor(db: SqliteDatabase, peer_id: str, after: int, now_ms: int) -> None:
    with write_transaction(db):
        connection(db).execute(
            "INSERT INTO share_pull_cursor (peer_id, after, pulled_at_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (peer_id) DO UPDATE SET after = max(after, excluded.after),"
            " pulled_at_ms = excluded.pulled_at_ms",
            (peer_id, after, now_ms),
        )


def mailed_cursor(db: SqliteDatabase, recipient_did: str) -> int:
    """How far `recipient_did`'s feed was deposited at their relays (0: never)."""
    with db.atomic():
        row = (
            connection(db)
            .execute("SELECT after FROM share_mailed WHERE recipient_did = ?", (recipient_did,))
            .fetchone()
        )
    return 0 if row is None else int(row[0])


def advance_mailed_cursor(db: SqliteDatabase, recipient_did: str, after: int, now_ms: int) -> None:
    with write_transaction(db):
        connection(db).execute(
            "INSERT INTO share_mailed (recipient_did, after, mailed_at_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (recipient_did) DO UPDATE SET after = max(after, excluded.after),"
            " mailed_at_ms = excluded.mailed_at_ms",
            (recipient_did, after, now_ms),
        )


def feed_head(db: SqliteDatabase) -> int:
    """The newest position of our share feed (0: nothing shared yet): whether anything was
    shared since a friend was last told."""
    with db.atomic():
        (head,) = connection(db).execute("SELECT coalesce(max(seq), 0) FROM share_feed").fetchone()
    return int(head)
