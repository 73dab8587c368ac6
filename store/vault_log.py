"""The op log's bookkeeping: chain heads, the persisted clock, and appending our own ops.

Every function here runs inside the caller's write transaction, so an op, the rows it changes,
its device's chain head (`device_log`) and the clock it was stamped with (`hlc_state`) are
committed together or not at all.
"""

import sqlite3
from dataclasses import dataclass, field

import nacl.signing

from protocols.did import ed25519_public_key_from_did
from protocols.hlc import HybridClock, Timestamp
from protocols.oplog import OpKind, SyncOperation
from protocols.peer_id import peer_id_from_ed25519_public_key
from store.vault_fold import refold
from store.vault_sql import OP_COLUMNS, Row, insert_sql

OP_INSERT = insert_sql("sync_operation", OP_COLUMNS)


@dataclass(frozen=True, kw_only=True)
class LocalSigner:
    """Who writes on this device: the author's DID, this device's peer id and its key.

    The device key signs the ops (the device acts for the DID through its certificate); an ACU's
    author signature is its create op's signature (store/VAULT_DESIGN.md section 4).
    Raises `ValueError` if `signing_key` is not the key of `device` or `author` is not a DID.
    """

    author: str
    device: str
    signing_key: nacl.signing.SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        ed25519_public_key_from_did(self.author)
        derived = peer_id_from_ed25519_public_key(bytes(self.signing_key.verify_key))
        if derived != self.device:
            raise ValueError(f"the signing key is the key of {derived}, not of {self.device}")


@dataclass(slots=True)
class ChainHead:
    """The last op applied from one device: seq 0 and no op for a device not seen yet."""

    seq: int = 0
    op_id: str | None = None
    hlc_packed: int | None = None


def load_head(conn: sqlite3.Connection, device: str) -> ChainHead:
    row = conn.execute(
        "SELECT d.last_seq, d.last_op_id, o.hlc_packed FROM device_log AS d"
        " LEFT JOIN sync_operation AS o ON o.id = d.last_op_id WHERE d.device = ?",
        (device,),
    ).fetchone()
    if row is None:
        return ChainHead()
    return ChainHead(seq=row[0], op_id=row[1], hlc_packed=row[2])


def save_head(conn: sqlite3.Connection, device: str, head: ChainHead) -> None:
    conn.execute(
        "INSERT INTO device_log (device, last_seq, last_op_id) VALUES (?, ?, ?)"
        " ON CONFLICT (device) DO UPDATE SET last_seq = excluded.last_seq,"
        " last_op_id = excluded.last_op_id",
        (device, head.seq, head.op_id),
    )


def load_clock(conn: sqlite3.Connection, node: str) -> HybridClock:
    """The persisted clock of `node`, so that its next stamp is above every earlier one."""
    row = conn.execute("SELECT last_packed FROM hlc_state WHERE node = ?", (node,)).fetchone()
    last = None if row is None else Timestamp.from_packed(row[0], node)
    return HybridClock(node, last=last)


def save_clock(conn: sqlite3.Connection, clock: HybridClock) -> None:
    if clock.last is None:
        return
    conn.execute(
        "INSERT INTO hlc_state (node, last_packed) VALUES (?, ?)"
        " ON CONFLICT (node) DO UPDATE SET last_packed = excluded.last_packed",
        (clock.node, clock.last.packed()),
    )


def op_row(op: SyncOperation, received_at_ms: int) -> Row:
    """`op` as a sync_operation row (OP_COLUMNS order)."""
    return (
        op.id,
        op.device,
        op.seq,
        op.hlc.packed(),
        op.entity_type,
        op.entity_id,
        op.kind.value,
        op.to_wire(),
        received_at_ms,
    )


class LocalLog:
    """Signs and queues ops of the local device, then writes them (`flush`) and its head and
    clock (`close`), inside the caller's transaction.

    Each op gets the next seq of the device's chain and a fresh tick of its clock: a clock that
    would overflow raises `CounterOverflow`, and the caller's transaction rolls back.
    """

    def __init__(self, conn: sqlite3.Connection, signer: LocalSigner, now_ms: int) -> None:
        self._conn = conn
        self._signer = signer
        self._now_ms = now_ms
        self._head = load_head(conn, signer.device)
        self._clock = load_clock(conn, signer.device)
        self._rows: list[Row] = []
        self.written = 0

    def append(
        self, entity_type: str, entity_id: str, kind: OpKind, payload: dict[str, object]
    ) -> SyncOperation:
        """Sign the next op of this device and queue it for `flush`."""
        signer = self._signer
        head = self._head
        op = SyncOperation.sign(
            signing_key=signer.signing_key,
            author=signer.author,
            device=signer.device,
            seq=head.seq + 1,
            prev=head.op_id,
            hlc=self._clock.tick(self._now_ms),
            entity_type=entity_type,
            entity_id=entity_id,
            kind=kind,
            payload=payload,
        )
        head.seq, head.op_id, head.hlc_packed = op.seq, op.id, op.hlc.packed()
        self._rows.append(op_row(op, self._now_ms))
        self.written += 1
        return op

    def write(
        self, entity_type: str, entity_id: str, kind: OpKind, payload: dict[str, object]
    ) -> SyncOperation:
        """Sign and store one op and fold its entity again: the general path, for changes to
        entities that may already have ops (the import inserts new entities in bulk instead)."""
        op = self.append(entity_type, entity_id, kind, payload)
        self.flush()
        refold(self._conn, entity_type, entity_id)
        return op

    def flush(self) -> None:
        """Insert the queued ops."""
        if self._rows:
            self._conn.executemany(OP_INSERT, self._rows)
            self._rows.clear()

    def close(self) -> None:
        """Insert the queued ops and advance the device's chain head and clock."""
        self.flush()
        if self.written:
            save_head(self._conn, self._signer.device, self._head)
            save_clock(self._conn, self._clock)
