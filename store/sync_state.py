"""What sync needs from the vault: who may sync, the heads, the ops a peer lacks, and applying a
batch together with the bookkeeping of the peer it came from.

The "may see" rule of the op log lives here: the devices of the vault's own DID that are
trusted see the whole vault; any other peer sees nothing of it, because ops carry plaintext. What
friends may see (the sharing issue) is synced apart, as encrypted share items over
/vivim/share/1.0.0, with the rule of `store.access.resolve_access` (store/share_delivery.py). A
revoked device, or one a revocation cascaded to, is refused like a stranger: it receives nothing
new.

`ops_after` streams: it reads one device's stretch at a time with the (device, seq) index and
stops at the batch's bounds, so a peer catching up on a large history never makes this side hold
more than one batch.
"""

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from peewee import SqliteDatabase

from protocols.errors import MalformedInput, ProtocolError, RemoteProtocolError
from protocols.oplog import SyncOperation, op_from_checked_wire
from store.database import joined_write_transaction, write_transaction
from store.op_checks import Verdict
from store.trust_state import vault_did
from store.vault_apply import ApplyReport, RefusedOp, apply_ops
from store.vault_sql import connection


def heads(db: SqliteDatabase) -> dict[str, int]:
    """Per device, the highest contiguous seq this vault holds (its cursor)."""
    with db.atomic():
        return _heads(connection(db))


def _heads(conn: sqlite3.Connection) -> dict[str, int]:
    return {d: int(s) for d, s in conn.execute("SELECT device, last_seq FROM device_log")}


def may_sync(db: SqliteDatabase, peer_id: str) -> bool:
    """Whether `peer_id` may pull from this vault (and be pulled from): a trusted device of the
    vault's DID."""
    with db.atomic():
        conn = connection(db)
        row = conn.execute(
            "SELECT status FROM device WHERE peer_id = ? AND did = ?", (peer_id, vault_did(conn))
        ).fetchone()
    return row is not None and row[0] == "trusted"


@dataclass(frozen=True, kw_only=True, slots=True)
class OpsPage:
    ops: list[bytes]
    done: bool  # nothing more after these for the cursor asked


def ops_after(
    db: SqliteDatabase, cursor: Mapping[str, int], max_ops: int, max_bytes: int
) -> OpsPage:
    """The ops this vault holds past `cursor`, device by device in seq order, at most `max_ops`
    and `max_bytes` (one op larger than `max_bytes` goes alone)."""
    ops: list[bytes] = []
    size = 0
    with db.atomic():
        conn = connection(db)
        for device, head in sorted(_heads(conn).items()):
            after = cursor.get(device, 0)
            while head > after:
                rows = conn.execute(
                    "SELECT seq, wire FROM sync_operation WHERE device = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (device, after, min(max_ops - len(ops), 500)),
                ).fetchall()
                if not rows:
                    break
                for seq, wire in rows:
                    if ops and size + len(wire) > max_bytes:
                        return OpsPage(ops=ops, done=False)
                    ops.append(bytes(wire))
                    size += len(wire)
                    after = int(seq)
                    if len(ops) >= max_ops:
                        # Full: maybe nothing is left, but saying so would cost a look; the
                        # client's next pull finds out (an empty, done page).
                        return OpsPage(ops=ops, done=False)
    return OpsPage(ops=ops, done=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchResult:
    applied: int
    duplicates: int
    refused: tuple[RefusedOp, ...]
    heads: dict[str, int]  # ours, after the batch


def apply_batch(
    db: SqliteDatabase,
    ops: Sequence[SyncOperation],
    *,
    peer_id: str,
    peer_heads: Mapping[str, int],
    now_ms: int,
    local_device: str,
    checked: Mapping[str, ProtocolError | None] | None = None,
) -> BatchResult:
    """Apply a batch from `peer_id` and record it, in one transaction: the ops, our chain heads
    (the cursor) and the peer's row advance together or not at all (inside a caller's
    transaction, as part of it: `joined_write_transaction`). Nothing is parked: after a refused
    op, the rest of its device's ops in the batch are refused too (`SequenceGap`)."""
    with joined_write_transaction(db):
        report: ApplyReport = apply_ops(
            db, ops, now_ms, local_device=local_device, park=False, checked=checked
        )
        conn = connection(db)
        conn.execute(
            "INSERT INTO sync_cursor (peer_id, peer_heads, ops_received, last_attempt_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (peer_id) DO UPDATE SET"
            " peer_heads = excluded.peer_heads,"
            " ops_received = sync_cursor.ops_received + excluded.ops_received,"
            " last_attempt_ms = excluded.last_attempt_ms",
            (peer_id, _json(peer_heads), len(report.applied), now_ms),
        )
        return BatchResult(
            applied=len(report.applied),
            duplicates=len(report.duplicates),
            refused=report.refused,
            heads=_heads(conn),
        )


def record_outcome(db: SqliteDatabase, peer_id: str, now_ms: int, error: str | None) -> None:
    """How a sync with `peer_id` ended: a success resets its failure count."""
    with write_transaction(db):
        conn = connection(db)
        conn.execute(
            "INSERT INTO sync_cursor (peer_id, last_attempt_ms) VALUES (?, ?)"
            " ON CONFLICT (peer_id) DO NOTHING",
            (peer_id, now_ms),
        )
        if error is None:
            conn.execute(
                "UPDATE sync_cursor SET last_attempt_ms = ?, last_success_ms = ?,"
                " consecutive_failures = 0, last_error = NULL WHERE peer_id = ?",
                (now_ms, now_ms, peer_id),
            )
        else:
            conn.execute(
                "UPDATE sync_cursor SET last_attempt_ms = ?,"
                " consecutive_failures = consecutive_failures + 1, last_error = ?"
                " WHERE peer_id = ?",
                (now_ms, error[:1000], peer_id),
            )


def record_peer_heads(db: SqliteDatabase, peer_id: str, peer_heads: Mapping[str, int]) -> None:
    """What a peer said it holds (a gossip announcement), for lag display."""
    with write_transaction(db):
        connection(db).execute(
            "INSERT INTO sync_cursor (peer_id, peer_heads) VALUES (?, ?)"
            " ON CONFLICT (peer_id) DO UPDATE SET peer_heads = excluded.peer_heads",
            (peer_id, _json(peer_heads)),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerSync:
    peer_id: str
    peer_heads: dict[str, int]
    lag: dict[str, int]  # per device, ops the peer reported that we lack
    ops_received: int
    last_attempt_ms: int | None
    last_success_ms: int | None
    consecutive_failures: int
    last_error: str | None


def sync_status(db: SqliteDatabase) -> tuple[dict[str, int], list[PeerSync]]:
    """Our heads, and per peer what it last reported and how syncing with it goes."""
    with db.atomic():
        conn = connection(db)
        ours = _heads(conn)
        peers = []
        for row in conn.execute(
            "SELECT peer_id, peer_heads, ops_received, last_attempt_ms, last_success_ms,"
            " consecutive_failures, last_error FROM sync_cursor ORDER BY peer_id"
        ):
            theirs = cast(dict[str, int], json.loads(row[1]))
            peers.append(
                PeerSync(
                    peer_id=row[0],
                    peer_heads=theirs,
                    lag={d: s - ours.get(d, 0) for d, s in theirs.items() if s > ours.get(d, 0)},
                    ops_received=row[2],
                    last_attempt_ms=row[3],
                    last_success_ms=row[4],
                    consecutive_failures=row[5],
                    last_error=row[6],
                )
            )
    return ours, peers


def apply_checked_batch(
    db: SqliteDatabase,
    wires: Sequence[bytes],
    verdicts: Sequence[Verdict],
    *,
    peer_id: str,
    peer_heads: Mapping[str, int],
    now_ms: int,
    local_device: str,
) -> BatchResult:
    """`apply_batch` of ops `store.op_checks.check_wires` already checked: rebuilt without
    decoding checks, and applied with the verdicts (an op with an error is refused with it)."""
    ops = [op_from_checked_wire(wire) for wire in wires]
    checked = {
        op.id: None if verdict is None else CheckedError(verdict[0], verdict[1])
        for op, verdict in zip(ops, verdicts, strict=True)
    }
    return apply_batch(
        db,
        ops,
        peer_id=peer_id,
        peer_heads=peer_heads,
        now_ms=now_ms,
        local_device=local_device,
        checked=checked,
    )


class CheckedError(RemoteProtocolError):
    """An op a checking process refused, with the code and message it gave."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_ops(wires: Sequence[bytes]) -> list[SyncOperation]:
    """Decode a batch's ops; `MalformedInput` names the first that does not decode."""
    ops = []
    for position, wire in enumerate(wires):
        try:
            ops.append(SyncOperation.from_wire(wire))
        except MalformedInput as err:
            raise MalformedInput(f"op {position} of the batch does not decode: {err}") from err
    return ops


def _json(heads: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted(heads.items())), separators=(",", ":"))


def device_addresses(db: SqliteDatabase, exclude: str) -> dict[str, tuple[str, ...]]:
    """Where the vault's other trusted devices were last seen (peer id to multiaddrs): the
    peers a node keeps connections to, besides its bootstrap list."""
    found: dict[str, tuple[str, ...]] = {}
    with db.atomic():
        conn = connection(db)
        did = vault_did(conn)
        for peer_id, addrs in conn.execute(
            "SELECT p.peer_id, p.addrs FROM peer AS p JOIN device AS d ON d.peer_id = p.peer_id"
            " WHERE d.did = ? AND d.status = 'trusted' AND p.peer_id != ? ORDER BY p.peer_id",
            (did, exclude),
        ):
            parsed = tuple(str(a) for a in json.loads(addrs))
            if parsed:
                found[peer_id] = parsed
    return found
