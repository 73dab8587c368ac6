"""A relay's mailbox store: registrations it accepted, envelopes held for them (issue 6).

Every function runs in one transaction and decides from the vault-independent facts the caller
hands it (who deposited, as a DID the node checked; the time; the relay's limits), so a refusal
changes nothing and says why with the wire code of protocols.mailbox (`RelayRefused.code`).

What the relay checks here, in this order, on a deposit: the recipient registered and its
registration has not expired; the depositor is allowed (the recipient itself, or a DID its
registration lists); the envelope is within the size limit; it has not expired and does not
outlive the relay's TTL; its id is new; the recipient's quota holds it. Per-sender rates are
the node's (they are about time windows, not stored state).

Listing pages through a recipient's envelopes in arrival order; the cursor is the arrival
sequence number, opaque to the client. Acknowledging deletes. Expired envelopes are removed by
`remove_expired`, which the node runs periodically.
"""

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from peewee import SqliteDatabase

from protocols.envelope import Envelope
from protocols.mailbox_records import RelayRegistration
from store.database import write_transaction
from store.errors import StoreError
from store.vault_sql import chunks, connection, placeholders

# A relay keeps mail at most this long whatever the envelope asks (the default TTL).
MAX_TTL_MS = 30 * 24 * 3600 * 1000


class RelayRefused(StoreError):
    """A request the relay refuses; `code` is the protocol's refusal code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayLimits:
    max_envelope_bytes: int
    max_ttl_ms: int = MAX_TTL_MS


def register(db: SqliteDatabase, registration: RelayRegistration, now_ms: int) -> None:
    """Hold mail for the registration's recipient (the caller verified the record, that its
    device is a certified device of the recipient and that it names this relay). A newer
    registration replaces an older one."""
    if registration.is_expired(now_ms):
        raise RelayRefused("expired", "the registration has expired: sign a new one")
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT registration FROM relay_registration WHERE recipient_did = ?",
            (registration.recipient_did,),
        ).fetchone()
        if row is not None:
            held = RelayRegistration.from_wire(bytes(row[0]))
            if held.issued_at_ms > registration.issued_at_ms:
                raise RelayRefused("duplicate", "a newer registration is held already")
        conn.execute(
            "INSERT INTO relay_registration (recipient_did, registration, quota_bytes,"
            " expires_at_ms, registered_at_ms) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (recipient_did) DO UPDATE SET registration = excluded.registration,"
            " quota_bytes = excluded.quota_bytes, expires_at_ms = excluded.expires_at_ms,"
            " registered_at_ms = excluded.registered_at_ms",
            (
                registration.recipient_did,
                registration.to_wire(),
                registration.quota_bytes,
                registration.expires_at_ms,
                now_ms,
            ),
        )


def unregister(db: SqliteDatabase, recipient_did: str) -> int:
    """Stop holding mail for `recipient_did`: its registration and envelopes go. Returns how
    many envelopes were dropped."""
    with write_transaction(db):
        conn = connection(db)
        dropped = conn.execute(
            "DELETE FROM relay_envelope WHERE recipient_did = ?", (recipient_did,)
        ).rowcount
        conn.execute("DELETE FROM relay_registration WHERE recipient_did = ?", (recipient_did,))
        conn.execute("DELETE FROM relay_rotation WHERE did = ?", (recipient_did,))
        return int(dropped)


def deposit(
    db: SqliteDatabase,
    envelope: Envelope,
    *,
    sender_did: str,
    depositor: str,
    now_ms: int,
    limits: RelayLimits,
) -> None:
    """Hold `envelope` (module docstring for the checks); `RelayRefused` changes nothing."""
    with write_transaction(db):
        conn = connection(db)
        row = conn.execute(
            "SELECT registration, quota_bytes, expires_at_ms, used_bytes FROM relay_registration"
            " WHERE recipient_did = ?",
            (envelope.recipient_did,),
        ).fetchone()
        if row is None or row[2] <= now_ms:
            raise RelayRefused(
                "unregistered_recipient",
                f"{envelope.recipient_did} has no current registration with this relay",
            )
        registration = RelayRegistration.from_wire(bytes(row[0]))
        if not registration.allows_sender(sender_did, now_ms):
            raise RelayRefused(
                "sender_not_allowed",
                f"{envelope.recipient_did} does not accept mail from {sender_did}",
            )
        if envelope.size > limits.max_envelope_bytes:
            raise RelayRefused(
                "too_large",
                f"the envelope is {envelope.size} bytes; this relay holds at most "
                f"{limits.max_envelope_bytes}",
            )
        if envelope.expires_at_ms <= now_ms:
            raise RelayRefused("expired", "the envelope has expired already")
        if envelope.expires_at_ms > now_ms + limits.max_ttl_ms:
            raise RelayRefused(
                "expired", f"the envelope asks to be kept longer than {limits.max_ttl_ms} ms"
            )
        if conn.execute(
            "SELECT 1 FROM relay_envelope WHERE id = ? UNION ALL SELECT 1 FROM relay_acked"
            " WHERE id = ?",
            (envelope.id, envelope.id),
        ).fetchone():
            raise RelayRefused(
                "duplicate", f"envelope {envelope.id} is held already, or was delivered"
            )
        used = row[3]
        if used + envelope.size > row[1]:
            raise RelayRefused(
                "over_quota",
                f"{envelope.recipient_did} has {used} of {row[1]} bytes in use here",
            )
        conn.execute(
            "INSERT INTO relay_envelope (id, recipient_did, size, expires_at_ms, deposited_by,"
            " deposited_at_ms, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                envelope.id,
                envelope.recipient_did,
                envelope.size,
                envelope.expires_at_ms,
                depositor,
                now_ms,
                envelope.to_wire(),
            ),
        )
        conn.execute(
            "UPDATE relay_registration SET used_bytes = used_bytes + ? WHERE recipient_did = ?",
            (envelope.size, envelope.recipient_did),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class EnvelopePage:
    ids: list[str]
    next_cursor: str | None


def list_envelopes(
    db: SqliteDatabase,
    recipient_did: str,
    after: str | None,
    limit: int,
    now_ms: int,
    *,
    reader: str = "",
) -> EnvelopePage:
    """The ids of `recipient_did`'s unexpired envelopes after the cursor, in arrival order,
    but for those `reader` (a device's peer id) deposited itself: a device mails its own ops
    to the other devices of its DID through the DID's one mailbox, and must not take them
    back out (it would ack them, and the devices they are for would never see them)."""
    try:
        start = 0 if after is None else int(after)
    except ValueError as err:
        raise RelayRefused("malformed", f"not a cursor of this relay: {after!r:.40}") from err
    with db.atomic():
        rows = (
            connection(db)
            .execute(
                "SELECT seq, id FROM relay_envelope WHERE recipient_did = ? AND seq > ?"
                " AND expires_at_ms > ? AND deposited_by != ? ORDER BY seq LIMIT ?",
                (recipient_did, start, now_ms, reader, limit),
            )
            .fetchall()
        )
    if not rows:
        return EnvelopePage(ids=[], next_cursor=None)
    return EnvelopePage(ids=[r[1] for r in rows], next_cursor=str(rows[-1][0]))


def registration_of(
    db: SqliteDatabase, recipient_did: str, now_ms: int
) -> RelayRegistration | None:
    """The current registration of `recipient_did`, or None (none, or expired)."""
    with db.atomic():
        row = (
            connection(db)
            .execute(
                "SELECT registration FROM relay_registration"
                " WHERE recipient_did = ? AND expires_at_ms > ?",
                (recipient_did, now_ms),
            )
            .fetchone()
        )
    return None if row is None else RelayRegistration.from_wire(bytes(row[0]))


def foreign_ids(db: SqliteDatabase, recipient_did: str, ids: Sequence[str]) -> list[str]:
    """Those of `ids` held for someone other than `recipient_did`: a device asking to fetch
    or ack them is refused (and learns nothing else about them)."""
    foreign: list[str] = []
    with db.atomic():
        conn = connection(db)
        for chunk in chunks(list(ids)):
            foreign += [
                str(row[0])
                for row in conn.execute(
                    f"SELECT id FROM relay_envelope WHERE id IN ({placeholders(len(chunk))})"
                    f" AND recipient_did != ?",
                    (*chunk, recipient_did),
                )
            ]
    return foreign


def fetch(db: SqliteDatabase, recipient_did: str, ids: Sequence[str]) -> list[Envelope]:
    """The envelopes among `ids` held for `recipient_did`, in the order asked."""
    found: dict[str, bytes] = {}
    with db.atomic():
        conn = connection(db)
        for chunk in chunks(list(ids)):
            for envelope_id, wire in conn.execute(
                f"SELECT id, envelope FROM relay_envelope WHERE recipient_did = ?"
                f" AND id IN ({placeholders(len(chunk))})",
                (recipient_did, *chunk),
            ):
                found[envelope_id] = bytes(wire)
    return [Envelope.from_wire(found[i]) for i in ids if i in found]


def ack(db: SqliteDatabase, recipient_did: str, ids: Sequence[str]) -> int:
    """Delete the envelopes among `ids` held for `recipient_did`; how many went."""
    deleted = 0
    with write_transaction(db):
        conn = connection(db)
        for chunk in chunks(list(ids)):
            where = f"recipient_did = ? AND id IN ({placeholders(len(chunk))})"
            (size,) = conn.execute(
                f"SELECT coalesce(sum(size), 0) FROM relay_envelope WHERE {where}",
                (recipient_did, *chunk),
            ).fetchone()
            conn.execute(
                f"INSERT OR IGNORE INTO relay_acked (id, expires_at_ms)"
                f" SELECT id, expires_at_ms FROM relay_envelope WHERE {where}",
                (recipient_did, *chunk),
            )
            deleted += conn.execute(
                f"DELETE FROM relay_envelope WHERE {where}", (recipient_did, *chunk)
            ).rowcount
            _release(conn, recipient_did, size)
    return deleted


def _release(conn: sqlite3.Connection, recipient_did: str, size: int) -> None:
    conn.execute(
        "UPDATE relay_registration SET used_bytes = max(used_bytes - ?, 0) WHERE recipient_did = ?",
        (size, recipient_did),
    )


def remove_expired(db: SqliteDatabase, now_ms: int) -> int:
    """Drop expired envelopes and registrations; how many envelopes went."""
    with write_transaction(db):
        conn = connection(db)
        freed = conn.execute(
            "SELECT recipient_did, sum(size) FROM relay_envelope WHERE expires_at_ms <= ?"
            " GROUP BY recipient_did",
            (now_ms,),
        ).fetchall()
        dropped = conn.execute(
            "DELETE FROM relay_envelope WHERE expires_at_ms <= ?", (now_ms,)
        ).rowcount
        for recipient_did, size in freed:
            _release(conn, recipient_did, size)
        conn.execute("DELETE FROM relay_acked WHERE expires_at_ms <= ?", (now_ms,))
        # An expired registration takes its mail with it (unregister).
        expired = [
            did
            for (did,) in conn.execute(
                "SELECT recipient_did FROM relay_registration WHERE expires_at_ms <= ?", (now_ms,)
            )
        ]
        for did in expired:
            dropped += conn.execute(
                "DELETE FROM relay_envelope WHERE recipient_did = ?", (did,)
            ).rowcount
            conn.execute("DELETE FROM relay_registration WHERE recipient_did = ?", (did,))
            conn.execute("DELETE FROM relay_rotation WHERE did = ?", (did,))
        return int(dropped)


def held_for(db: SqliteDatabase, recipient_did: str) -> int:
    """How many envelopes are held for `recipient_did`."""
    with db.atomic():
        (count,) = (
            connection(db)
            .execute(
                "SELECT count(*) FROM relay_envelope WHERE recipient_did = ?", (recipient_did,)
            )
            .fetchone()
        )
    return int(count)


def known_rotations(db: SqliteDatabase, did: str) -> list[bytes]:
    """The identity key rotations of `did` this relay has seen counted (wire bytes)."""
    with db.atomic():
        rows = connection(db).execute("SELECT rotation FROM relay_rotation WHERE did = ?", (did,))
        return [bytes(row[0]) for row in rows]


def remember_rotations(db: SqliteDatabase, did: str, rotations: Sequence[bytes]) -> None:
    """Keep `did`'s rotations, if `did` is registered here (strangers leave nothing behind)."""
    with write_transaction(db):
        conn = connection(db)
        if conn.execute(
            "SELECT 1 FROM relay_registration WHERE recipient_did = ?", (did,)
        ).fetchone():
            conn.executemany(
                "INSERT OR IGNORE INTO relay_rotation (did, rotation) VALUES (?, ?)",
                [(did, rotation) for rotation in rotations],
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayStatus:
    recipients: int
    envelopes: int
    bytes: int


def recipients(db: SqliteDatabase) -> list[tuple[str, int, int, int]]:
    """Per registered recipient: DID, envelopes held, bytes held, quota."""
    with db.atomic():
        return [
            (str(r[0]), int(r[1]), int(r[2]), int(r[3]))
            for r in connection(db).execute(
                "SELECT r.recipient_did, count(e.id), r.used_bytes, r.quota_bytes"
                " FROM relay_registration r LEFT JOIN relay_envelope e"
                " ON e.recipient_did = r.recipient_did GROUP BY r.recipient_did"
                " ORDER BY r.recipient_did"
            )
        ]


def relay_status(db: SqliteDatabase) -> RelayStatus:
    with db.atomic():
        conn = connection(db)
        (recipients,) = conn.execute("SELECT count(*) FROM relay_registration").fetchone()
        envelopes, size = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM relay_envelope"
        ).fetchone()
    return RelayStatus(recipients=recipients, envelopes=envelopes, bytes=size)
