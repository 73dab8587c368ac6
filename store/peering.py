"""Friends (issue 7, peering): invites, connection requests, accepted connections, blocks.

What the other parts of the sharing mesh read (store/SHARING_DESIGN.md):

- `friend(db, did)` / `friends(db)`: accepted connections only, as `Friend` (the person's DID,
  X25519 encryption key, how much we trust them, their known devices, addresses and relays);
- `did_of_device(db, peer_id)`: which person a Noise-authenticated peer id speaks for, as learned
  from a certificate chain checked in a request or acceptance (identity, not friendship: ask
  `friend` whether the DID is a friend);
- `is_blocked(db, did)`.

Everything written here was checked before (signatures, chains, bindings: node.peering with
protocols.peering); this module keeps it and enforces what needs the table: a one-time token is
spent once, a blocked DID gets nothing stored, one pending request per DID, an acceptance must
name the request it answers. A write that is refused raises `PeeringRefused` and changes nothing.
"""

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from peewee import SqliteDatabase

from store.database import write_transaction
from store.errors import StoreError
from store.vault_sql import connection

# How much we trust a friend: local policy, never sent to them (an acceptance does not say it).
TRUST_LEVELS: Final = ("acquaintance", "trusted", "close")
# The level of a friend we asked (`friend add`) or accepted without saying (`friend accept`).
DEFAULT_TRUST: Final = "trusted"

# Refusal codes, the same as the peering protocol's error codes (protocols.peering.ErrorCode).
BLOCKED: Final = "blocked"
TOKEN_REFUSED: Final = "token_refused"
RATE_LIMITED: Final = "rate_limited"
ALREADY_CONNECTED: Final = "already_connected"
UNKNOWN_REQUEST: Final = "unknown_request"


class PeeringRefused(StoreError):
    """A peering write the store refuses; `code` is the protocol's error code. Nothing changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True, slots=True)
class Friend:
    """A person with an accepted connection."""

    did: str
    encryption_key: bytes  # their X25519 public key (from their checked EncryptionKeyBinding)
    trust: str  # one of TRUST_LEVELS
    devices: tuple[str, ...]  # peer ids of their devices we know (checked chains)
    addrs: tuple[str, ...]  # multiaddrs they gave (with /p2p/)
    relays: tuple[str, ...]  # their relays' multiaddrs (or peer ids), to mail them


@dataclass(frozen=True, kw_only=True, slots=True)
class Connection:
    """A connection row whole: pending (either direction) or accepted."""

    did: str
    direction: str  # "incoming" (they asked us) or "outgoing" (we asked them)
    state: str  # "pending" or "accepted"
    trust: str
    encryption_key: bytes
    encryption_binding: bytes  # wire of their EncryptionKeyBinding
    request_id: str
    request: bytes  # wire of the signed ConnectionRequest
    acceptance: bytes | None  # wire of the signed ConnectionAcceptance, once accepted
    devices: tuple[str, ...]
    addrs: tuple[str, ...]
    relays: tuple[str, ...]
    via_invite: bool  # the request carried a valid one-time token of ours (incoming only)
    message: str
    created_at_ms: int
    updated_at_ms: int

    def as_friend(self) -> Friend:
        return Friend(
            did=self.did,
            encryption_key=self.encryption_key,
            trust=self.trust,
            devices=self.devices,
            addrs=self.addrs,
            relays=self.relays,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestRow:
    """A checked connection request, to keep (either direction). For an incoming one, `did`,
    `devices`, `addrs`, `relays`, the key and binding are the sender's; for an outgoing one, the
    target's (from the invite)."""

    did: str
    request_id: str
    request: bytes
    encryption_key: bytes
    encryption_binding: bytes
    devices: tuple[str, ...] = ()
    addrs: tuple[str, ...] = ()
    relays: tuple[str, ...] = ()
    message: str = ""
    token: bytes | None = None  # incoming: our one-time token it carries, if any


def _json(values: Iterable[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _check_trust(trust: str) -> None:
    if trust not in TRUST_LEVELS:
        raise ValueError(f"trust must be one of {', '.join(TRUST_LEVELS)}, not {trust!r}")


# --- invites ----------------------------------------------------------------------------------


def create_invite(db: SqliteDatabase, token: bytes, created_at_ms: int, expires_at_ms: int) -> None:
    """Remember a one-time token handed out in an invite code; expired tokens are dropped."""
    with write_transaction(db):
        conn = connection(db)
        conn.execute("DELETE FROM peering_invite WHERE expires_at_ms <= ?", (created_at_ms,))
        conn.execute(
            "INSERT INTO peering_invite (token, created_at_ms, expires_at_ms) VALUES (?, ?, ?)",
            (token, created_at_ms, expires_at_ms),
        )


def invites_open_until(db: SqliteDatabase, now_ms: int) -> int | None:
    """When the last of our unspent, unexpired invite codes expires; None if none is out."""
    with db.atomic():
        (until,) = (
            connection(db)
            .execute(
                "SELECT max(expires_at_ms) FROM peering_invite"
                " WHERE spent_by IS NULL AND expires_at_ms > ?",
                (now_ms,),
            )
            .fetchone()
        )
    return None if until is None else int(until)


def _spend_token(conn: sqlite3.Connection, token: bytes, did: str, now_ms: int) -> None:
    row = conn.execute(
        "SELECT expires_at_ms, spent_by FROM peering_invite WHERE token = ?", (token,)
    ).fetchone()
    if row is None:
        raise PeeringRefused(TOKEN_REFUSED, "the invite token is unknown: ask for a new invite")
    if row[1] is not None:
        raise PeeringRefused(TOKEN_REFUSED, "the invite was used already: ask for a new invite")
    if int(row[0]) <= now_ms:
        raise PeeringRefused(TOKEN_REFUSED, "the invite has expired: ask for a new invite")
    conn.execute(
        "UPDATE peering_invite SET spent_by = ?, spent_at_ms = ? WHERE token = ?",
        (did, now_ms, token),
    )


def token_usable(db: SqliteDatabase, token: bytes, now_ms: int) -> bool:
    """Whether `token` is ours, unspent and unexpired (a request carrying it is solicited)."""
    with db.atomic():
        row = (
            connection(db)
            .execute(
                "SELECT 1 FROM peering_invite WHERE token = ? AND spent_by IS NULL"
                " AND expires_at_ms > ?",
                (token, now_ms),
            )
            .fetchone()
        )
    return row is not None


# --- requests and acceptances -----------------------------------------------------------------


def _add_devices(conn: sqlite3.Connection, did: str, devices: Sequence[str], now_ms: int) -> None:
    conn.executemany(
        "INSERT INTO peer_device (peer_id, did, learned_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (peer_id) DO UPDATE SET did = excluded.did",
        [(device, did, now_ms) for device in devices],
    )


def _blocked(conn: sqlite3.Connection, did: str) -> bool:
    return conn.execute("SELECT 1 FROM peer_block WHERE did = ?", (did,)).fetchone() is not None


def save_incoming_request(db: SqliteDatabase, request: RequestRow, now_ms: int) -> bool:
    """Keep a checked request someone sent us, pending until `accept`. Returns False (nothing
    changed) for a request already held (a retry, or the same letter from a second relay).

    Refuses (`PeeringRefused`): a blocked DID (`blocked`: the node drops it without an answer);
    a token not ours, spent or expired (`token_refused`); a second pending request from the DID
    (`rate_limited`); a DID we are connected with already (`already_connected`). A valid token is
    spent in the same transaction. A request from someone we asked ourselves replaces our
    outgoing request (both sides then hold theirs; accepting theirs connects us).
    """
    with write_transaction(db):
        conn = connection(db)
        if _blocked(conn, request.did):
            raise PeeringRefused(BLOCKED, f"{request.did} is blocked")
        row = conn.execute(
            "SELECT request_id, direction, state FROM peer_connection WHERE did = ?",
            (request.did,),
        ).fetchone()
        if row is not None and row[0] == request.request_id:
            return False
        if row is not None and row[2] == "accepted":
            raise PeeringRefused(ALREADY_CONNECTED, f"{request.did} is a friend already")
        if row is not None and row[1] == "incoming":
            raise PeeringRefused(
                RATE_LIMITED, f"a request from {request.did} is pending already: wait for an answer"
            )
        if request.token is not None:
            _spend_token(conn, request.token, request.did, now_ms)
        conn.execute("DELETE FROM peer_connection WHERE did = ?", (request.did,))
        _insert(conn, request, "incoming", DEFAULT_TRUST, now_ms)
    return True


def save_outgoing_request(db: SqliteDatabase, request: RequestRow, now_ms: int) -> None:
    """Keep a request we sent (`friend add`), pending until its acceptance arrives; replaces an
    earlier outgoing request to the same DID. Refuses a blocked DID (unblock first is not
    offered: block is final for now) and a DID that is a friend or asked us already."""
    with write_transaction(db):
        conn = connection(db)
        if _blocked(conn, request.did):
            raise PeeringRefused(BLOCKED, f"{request.did} is blocked")
        row = conn.execute(
            "SELECT direction, state FROM peer_connection WHERE did = ?", (request.did,)
        ).fetchone()
        if row is not None and row[1] == "accepted":
            raise PeeringRefused(ALREADY_CONNECTED, f"{request.did} is a friend already")
        if row is not None and row[0] == "incoming":
            raise PeeringRefused(
                RATE_LIMITED,
                f"{request.did} asked you already: run `vivim-node friend accept {request.did}`",
            )
        conn.execute("DELETE FROM peer_connection WHERE did = ?", (request.did,))
        _insert(conn, request, "outgoing", DEFAULT_TRUST, now_ms)


def _insert(
    conn: sqlite3.Connection, request: RequestRow, direction: str, trust: str, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO peer_connection (did, direction, state, trust, encryption_key,"
        " encryption_binding, request_id, request, acceptance, addrs, relays, via_invite,"
        " message, created_at_ms, updated_at_ms)"
        " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
        (
            request.did,
            direction,
            trust,
            request.encryption_key,
            request.encryption_binding,
            request.request_id,
            request.request,
            _json(request.addrs),
            _json(request.relays),
            int(direction == "incoming" and request.token is not None),
            request.message,
            now_ms,
            now_ms,
        ),
    )
    _add_devices(conn, request.did, request.devices, now_ms)


def accept(
    db: SqliteDatabase, did: str, request_id: str, acceptance: bytes, trust: str, now_ms: int
) -> Connection:
    """Accept the pending incoming request `request_id` from `did` with our signed
    `acceptance`: the connection now holds both records. Refuses (`unknown_request`) when no
    such request is pending, so a request answered meanwhile (blocked, replaced) is not."""
    _check_trust(trust)
    with write_transaction(db):
        conn = connection(db)
        updated = conn.execute(
            "UPDATE peer_connection SET state = 'accepted', acceptance = ?, trust = ?,"
            " updated_at_ms = ? WHERE did = ? AND request_id = ? AND direction = 'incoming'"
            " AND state = 'pending'",
            (acceptance, trust, now_ms, did, request_id),
        ).rowcount
        if updated != 1:
            raise PeeringRefused(UNKNOWN_REQUEST, f"no pending request from {did}")
        found = _connection(conn, did)
    assert found is not None
    return found


def save_acceptance(
    db: SqliteDatabase,
    *,
    did: str,
    request_id: str,
    acceptance: bytes,
    devices: Sequence[str],
    addrs: Sequence[str],
    relays: Sequence[str],
    now_ms: int,
) -> bool:
    """Keep a checked acceptance of our request `request_id` from `did`: the connection now
    holds both records, and what the acceptance says of them (devices, addresses, relays).
    Returns False (nothing changed) for an acceptance held already. Refuses a blocked DID and an
    acceptance of a request we do not have pending (`unknown_request`)."""
    with write_transaction(db):
        conn = connection(db)
        if _blocked(conn, did):
            raise PeeringRefused(BLOCKED, f"{did} is blocked")
        row = conn.execute(
            "SELECT request_id, direction, state, acceptance FROM peer_connection WHERE did = ?",
            (did,),
        ).fetchone()
        if row is None or row[0] != request_id or row[1] != "outgoing":
            raise PeeringRefused(UNKNOWN_REQUEST, f"no request of ours to {did} has that id")
        if row[2] == "accepted":
            return False
        conn.execute(
            "UPDATE peer_connection SET state = 'accepted', acceptance = ?, addrs = ?,"
            " relays = ?, updated_at_ms = ? WHERE did = ?",
            (acceptance, _json(addrs), _json(relays), now_ms, did),
        )
        _add_devices(conn, did, devices, now_ms)
    return True


def add_devices(db: SqliteDatabase, did: str, devices: Sequence[str], now_ms: int) -> None:
    """Remember more devices of a connection's DID (their chains were checked by the caller);
    nothing for a DID without a connection."""
    with write_transaction(db):
        conn = connection(db)
        if conn.execute("SELECT 1 FROM peer_connection WHERE did = ?", (did,)).fetchone():
            _add_devices(conn, did, devices, now_ms)


def block(db: SqliteDatabase, did: str, now_ms: int) -> bool:
    """Block `did`: its later requests and acceptances are dropped, and any connection or pending
    request with it is ended (with the devices it told us of). Returns False if it was blocked
    already."""
    with write_transaction(db):
        conn = connection(db)
        conn.execute("DELETE FROM peer_connection WHERE did = ?", (did,))
        return (
            conn.execute(
                "INSERT INTO peer_block (did, blocked_at_ms) VALUES (?, ?)"
                " ON CONFLICT (did) DO NOTHING",
                (did, now_ms),
            ).rowcount
            == 1
        )


def unblock(db: SqliteDatabase, did: str) -> bool:
    """Stop blocking `did`: its requests are taken again (it is not a friend again: a new
    request and acceptance make that). Returns False if it was not blocked."""
    with write_transaction(db):
        return connection(db).execute("DELETE FROM peer_block WHERE did = ?", (did,)).rowcount == 1


# --- reading ----------------------------------------------------------------------------------

_COLUMNS: Final = (
    "did, direction, state, trust, encryption_key, encryption_binding, request_id, request,"
    " acceptance, addrs, relays, via_invite, message, created_at_ms, updated_at_ms"
)


def _devices(conn: sqlite3.Connection, did: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT peer_id FROM peer_device WHERE did = ? ORDER BY learned_at_ms, peer_id", (did,)
    )
    return tuple(str(peer_id) for (peer_id,) in rows)


def _row(conn: sqlite3.Connection, row: Sequence[object]) -> Connection:
    did = str(row[0])
    acceptance = row[8]
    return Connection(
        did=did,
        direction=str(row[1]),
        state=str(row[2]),
        trust=str(row[3]),
        encryption_key=bytes(row[4]),  # type: ignore[call-overload]
        encryption_binding=bytes(row[5]),  # type: ignore[call-overload]
        request_id=str(row[6]),
        request=bytes(row[7]),  # type: ignore[call-overload]
        acceptance=None if acceptance is None else bytes(acceptance),  # type: ignore[call-overload]
        devices=_devices(conn, did),
        addrs=tuple(json.loads(str(row[9]))),
        relays=tuple(json.loads(str(row[10]))),
        via_invite=bool(row[11]),
        message=str(row[12]),
        created_at_ms=int(row[13]),  # type: ignore[call-overload]
        updated_at_ms=int(row[14]),  # type: ignore[call-overload]
    )


def _connection(conn: sqlite3.Connection, did: str) -> Connection | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM peer_connection WHERE did = ?", (did,)).fetchone()
    return None if row is None else _row(conn, row)


def connection_with(db: SqliteDatabase, did: str) -> Connection | None:
    """The connection row with `did` (pending or accepted), or None."""
    with db.atomic():
        return _connection(connection(db), did)


def connections(db: SqliteDatabase, *, state: str | None = None) -> list[Connection]:
    """Every connection row (of `state`, if given), oldest first."""
    with db.atomic():
        conn = connection(db)
        where, args = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM peer_connection {where} ORDER BY created_at_ms, did", args
        ).fetchall()
        return [_row(conn, row) for row in rows]


def friend(db: SqliteDatabase, did: str) -> Friend | None:
    """The accepted connection with `did`, or None (pending, blocked, unknown)."""
    found = connection_with(db, did)
    return found.as_friend() if found is not None and found.state == "accepted" else None


def friends(db: SqliteDatabase) -> list[Friend]:
    """Every accepted connection, oldest first."""
    return [found.as_friend() for found in connections(db, state="accepted")]


def did_of_device(db: SqliteDatabase, peer_id: str) -> str | None:
    """The DID device `peer_id` speaks for, as a checked chain showed, for a DID we hold a
    connection (pending or accepted) with; None if unknown."""
    with db.atomic():
        row = (
            connection(db)
            .execute("SELECT did FROM peer_device WHERE peer_id = ?", (peer_id,))
            .fetchone()
        )
    return None if row is None else str(row[0])


def is_blocked(db: SqliteDatabase, did: str) -> bool:
    with db.atomic():
        return _blocked(connection(db), did)


def blocked(db: SqliteDatabase) -> list[str]:
    """Every blocked DID, in the order they were blocked."""
    with db.atomic():
        rows = connection(db).execute("SELECT did FROM peer_block ORDER BY blocked_at_ms, did")
        return [str(did) for (did,) in rows]
