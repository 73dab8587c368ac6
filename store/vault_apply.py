"""Applying ops from elsewhere (a peer, a mailbox, a restore): verify, then apply idempotently.

For each op, in one transaction per call:

1. An op whose id is stored (or parked) already is a duplicate: nothing happens.
2. Its device must be a known device of its author (the `device` table, store.identity), and
   trusted, or the op at or before the device's cut (`DeviceNotTrusted`: protocols.trust). A
   device the vault does not know yet can introduce itself: its first op is a device create
   carrying its own certificate and the chain above it (store.trust_state), accepted if that
   chain makes it trusted. Applying a device or identity op recomputes the trust state.
3. `protocols.oplog.verify_op` against the device's chain head: `BadSignature`, `ClockDrift`,
   `ChainBreak`, or `SequenceGap` when ops of the device are missing before it. Then the payload
   rules (store.vault_payloads) and the device's clock: its stamps only go up along its chain
   (a device's clock is persisted and never goes back), else `ChainBreak`.
4. An op ahead of a gap whose signature and payload are good is parked in `pending_op`; it is
   applied, checked again against the chain, as soon as the gap fills (in this call or a later
   one).
5. Applying stores the op, folds its entity again (store.vault_fold), advances the device's chain
   head and merges the op's stamp into our clock (HLC receive).

Within a call, ops are taken in (device, seq) order, so a batch that holds a whole stretch of a
chain never parks. A refused op changes nothing and is reported with its typed error (a
`ProtocolError`, carrying the wire code). Anything else that goes wrong (the database) raises and
rolls the transaction back: an op is never stored without its effect, nor the reverse. Called
inside a transaction, the call joins it rather than opening a savepoint
(`store.database.joined_write_transaction`), so the caller's whole transaction is the unit.
"""

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from peewee import SqliteDatabase

from protocols.errors import ChainBreak, ProtocolError, SequenceGap, UnknownDevice
from protocols.oplog import OpKind, SyncOperation, verify_op
from protocols.trust import DeviceNotTrusted
from store.database import joined_write_transaction
from store.identity import DeviceRow, list_devices
from store.trust_state import TRUST_ENTITY_TYPES, certificates_of, load_trust, rotations_of
from store.vault_fold import fold_entity, fold_op, new_entity_rows, refold, write_folded
from store.vault_log import (
    OP_INSERT,
    ChainHead,
    load_clock,
    load_head,
    op_row,
    save_clock,
    save_head,
)
from store.vault_payloads import check_payload
from store.vault_sql import Row, chunks, connection, placeholders


@dataclass(frozen=True, kw_only=True, slots=True)
class RefusedOp:
    """An op that was not applied, and why (its `code` is the wire error code)."""

    op_id: str
    device: str
    seq: int
    error: ProtocolError


@dataclass(frozen=True, kw_only=True, slots=True)
class ApplyReport:
    """What `apply_ops` did with each op (ids).

    `applied` includes ops parked by an earlier call whose gap this call filled. `parked` are the
    ops of this call still waiting for a gap at its end.
    """

    applied: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    parked: tuple[str, ...] = ()
    refused: tuple[RefusedOp, ...] = ()


def apply_ops(
    db: SqliteDatabase,
    ops: Iterable[SyncOperation],
    now_ms: int,
    *,
    local_device: str,
    park: bool = True,
    checked: Mapping[str, ProtocolError | None] | None = None,
) -> ApplyReport:
    """Verify and apply `ops` in one transaction (module docstring).

    `local_device` is this node's peer id: its clock (`hlc_state`) takes in every applied op's
    stamp, so that what this device writes next is stamped after everything it has seen. With
    `park=False` an op ahead of a gap is refused (`SequenceGap`) instead of parked: sync asks
    for contiguous stretches, so a gap there means an op before it was refused, and nothing
    after a refused op of a device is applied or kept.

    `checked` (op id to error, or None) gives the verdicts of a checking process on what needs
    no state: decoding, the signature by the device's key, the payload rules
    (store.op_checks.check_wires). Those checks are then not repeated; an op with an error is
    refused with it, after the checks that need the vault (is its device known and trusted).
    """
    with joined_write_transaction(db):
        applier = _Applier(
            connection(db), lambda: list_devices(db), now_ms, local_device, park, checked
        )
        return applier.run(ops)


class _Applier:
    """One call of `apply_ops`: caches of chain heads and devices, and the report."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        load_devices: Callable[[], list[DeviceRow]],
        now_ms: int,
        local_device: str,
        park: bool = True,
        checked: Mapping[str, ProtocolError | None] | None = None,
    ) -> None:
        self._park = park
        self._checked = checked
        self._conn = conn
        self._now_ms = now_ms
        self._load_devices = load_devices
        self._devices = {device.peer_id: device for device in load_devices()}
        self._clock = load_clock(conn, local_device)
        self._clock_before = self._clock.last
        self._heads: dict[str, ChainHead] = {}
        self._advanced: set[str] = set()  # devices whose head moved
        self._pending_devices = {
            device for (device,) in conn.execute("SELECT DISTINCT device FROM pending_op")
        }
        self._known: set[str] = set()
        self._fresh: set[str] = set()  # entities of the batch with no stored op yet
        # Rows not inserted yet, per statement (_flush): the ops applied, and the rows of the
        # fresh entities they created.
        self._rows: dict[str, list[Row]] = {OP_INSERT: []}
        self._applied: list[str] = []
        self._duplicates: list[str] = []
        self._parked: list[str] = []
        self._refused: list[RefusedOp] = []

    def run(self, ops: Iterable[SyncOperation]) -> ApplyReport:
        batch: dict[str, SyncOperation] = {}
        for op in ops:
            if op.id in batch:
                self._duplicates.append(op.id)
            else:
                batch[op.id] = op
        # A device's stored ops are seqs 1 to its chain head (each is written at the head and
        # moves it, in one transaction), and an op's id covers its device and seq: an op past
        # the head is not stored, and is parked only if its device has parked ops. A catching-up
        # batch is all past the head, and so costs no lookup (~2 us an op, store level).
        self._known = self._stored_or_parked(
            [
                op_id
                for op_id, op in batch.items()
                if op.seq <= self._head(op.device).seq or op.device in self._pending_devices
            ]
        )
        entities = {op.entity_id for op in batch.values()}
        self._fresh = entities - self._entities_with_ops(entities)
        for op in sorted(batch.values(), key=lambda op: (op.device, op.seq, op.id)):
            if op.id in self._known:
                self._duplicates.append(op.id)
            else:
                self._take(op)
        self._flush()
        for device in sorted(self._advanced):
            save_head(self._conn, device, self._heads[device])
        if self._clock.last != self._clock_before:
            save_clock(self._conn, self._clock)
        applied = set(self._applied)
        refused = {refusal.op_id for refusal in self._refused}
        return ApplyReport(
            applied=tuple(self._applied),
            duplicates=tuple(self._duplicates),
            parked=tuple(i for i in self._parked if i not in applied and i not in refused),
            refused=tuple(self._refused),
        )

    def _take(self, op: SyncOperation) -> None:
        """Apply, park or refuse one op that is neither stored nor parked."""
        try:
            self._check(op)
            self._clock.receive(op.hlc, self._now_ms)
        except SequenceGap as err:
            if not self._park:
                self._refuse(op.id, op.device, op.seq, err)
                return
            self._conn.execute(
                "INSERT INTO pending_op (id, device, seq, wire, received_at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (op.id, op.device, op.seq, op.to_wire(), self._now_ms),
            )
            self._known.add(op.id)
            self._pending_devices.add(op.device)
            self._parked.append(op.id)
            return
        except ProtocolError as err:
            self._refuse(op.id, op.device, op.seq, err)
            return
        self._write(op)
        self._drain(op.device)

    def _check(self, op: SyncOperation) -> None:
        """Raise the first reason `op` cannot be applied now; `SequenceGap` only for an op that
        is good but early."""
        key = self._device_key(op)
        head = self._head(op.device)
        checked = self._checked is not None and op.id in self._checked
        if checked:
            assert self._checked is not None
            error = self._checked[op.id]
            if error is not None:
                raise error
        try:
            verify_op(
                op,
                device_public_key=key,
                expected_seq=head.seq + 1,
                expected_prev=head.op_id,
                now_ms=self._now_ms,
                signature_checked=checked,
            )
        except SequenceGap:
            if not checked:
                check_payload(op)
            raise
        if not checked:
            check_payload(op)
        if head.hlc_packed is not None and op.hlc.packed() <= head.hlc_packed:
            raise ChainBreak(
                f"op {op.device} #{op.seq} is stamped at or before the op before it: "
                "a device's clock never goes back"
            )

    def _device_key(self, op: SyncOperation) -> bytes:
        device = self._devices.get(op.device)
        if device is not None and device.did == op.author:
            if not device.accepts(op.seq):
                raise DeviceNotTrusted(
                    f"device {op.device} is {device.status} and its ops count up to seq "
                    f"{device.cut_seq or 0}; this op is seq {op.seq}"
                )
            return device.public_key
        if op.entity_type == "device" and op.kind is OpKind.CREATE and op.entity_id == op.device:
            return self._introduced_key(op)
        raise UnknownDevice(f"{op.device} is not a known device of {op.author}")

    def _introduced_key(self, op: SyncOperation) -> bytes:
        """The key of a device that introduces itself, if its certificate chain holds."""
        self._flush()
        try:
            check_payload(op)
            state = load_trust(
                self._conn,
                extra_certificates=certificates_of(op.payload),
                extra_rotations=rotations_of(op.payload),
            )
        except LookupError as err:
            raise UnknownDevice(f"{op.device}: {err}") from err
        trust = state.devices.get(op.device)
        if trust is None or state.did != op.author or not trust.status == "trusted":
            raise UnknownDevice(
                f"{op.device} introduces itself with a certificate that does not chain to the "
                f"identity key of {op.author}"
            )
        return trust.public_key

    def _head(self, device: str) -> ChainHead:
        head = self._heads.get(device)
        if head is None:
            head = self._heads[device] = load_head(self._conn, device)
        return head

    def _write(self, op: SyncOperation) -> None:
        """Store a checked op, fold its entity, advance its chain head.

        Op rows, and the rows of entities new to the vault, are inserted in bulk (`_flush`):
        before anything reads the tables back (a refold, the trust state) and at the end of the
        call."""
        self._rows[OP_INSERT].append(op_row(op, self._now_ms))
        if op.entity_id in self._fresh and op.entity_type not in TRUST_ENTITY_TYPES:
            # Its only op is this one (a catching-up device's common case): fold it as it is,
            # rather than read it back from the log; the same fold, so the same rows, and its
            # rows are new.
            self._fresh.discard(op.entity_id)
            folded = fold_entity(op.entity_type, op.entity_id, [fold_op(op)])
            statements = new_entity_rows(op.entity_type, folded)
            if statements is None:
                self._flush()
                write_folded(self._conn, op.entity_type, op.entity_id, folded, new=True)
            else:
                for statement, rows in statements:
                    self._rows.setdefault(statement, []).extend(rows)
        else:
            self._fresh.discard(op.entity_id)
            self._flush()
            refold(self._conn, op.entity_type, op.entity_id)
        if op.entity_type in TRUST_ENTITY_TYPES:
            self._devices = {device.peer_id: device for device in self._load_devices()}
        head = self._head(op.device)
        head.seq, head.op_id, head.hlc_packed = op.seq, op.id, op.hlc.packed()
        self._advanced.add(op.device)
        self._known.add(op.id)
        self._applied.append(op.id)

    def _drain(self, device: str) -> None:
        """Apply the parked ops of `device` that now follow its chain head, in order.

        Parked ops at a position already taken (a second op at one seq) are refused: the first
        valid one for each position wins.
        """
        while device in self._pending_devices:
            position = self._head(device).seq + 1
            rows = self._conn.execute(
                "SELECT id, seq, wire FROM pending_op WHERE device = ? AND seq <= ?"
                " ORDER BY seq, id",
                (device, position),
            ).fetchall()
            self._conn.execute(
                "DELETE FROM pending_op WHERE device = ? AND seq <= ?", (device, position)
            )
            next_op = None
            for op_id, seq, wire in rows:
                try:
                    op = SyncOperation.from_wire(bytes(wire))
                    if next_op is not None or op.seq != position:
                        raise ChainBreak(
                            f"device {device} already has an op at seq {op.seq}: "
                            "a second op at a taken position"
                        )
                    self._check(op)
                    self._clock.receive(op.hlc, self._now_ms)
                    next_op = op
                except ProtocolError as err:
                    self._refuse(op_id, device, seq, err)
            if next_op is None:
                if not self._conn.execute(
                    "SELECT 1 FROM pending_op WHERE device = ? LIMIT 1", (device,)
                ).fetchone():
                    self._pending_devices.discard(device)
                return
            self._write(next_op)

    def _refuse(self, op_id: str, device: str, seq: int, error: ProtocolError) -> None:
        self._refused.append(RefusedOp(op_id=op_id, device=device, seq=seq, error=error))

    def _flush(self) -> None:
        for statement, rows in self._rows.items():
            if rows:
                self._conn.executemany(statement, rows)
                rows.clear()

    def _entities_with_ops(self, entity_ids: set[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(sorted(entity_ids)):
            found.update(
                entity_id
                for (entity_id,) in self._conn.execute(
                    "SELECT DISTINCT entity_id FROM sync_operation"
                    f" WHERE entity_id IN ({placeholders(len(chunk))})",
                    chunk,
                )
            )
        return found

    def _stored_or_parked(self, op_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(op_ids):
            marks = placeholders(len(chunk))
            found.update(
                op_id
                for (op_id,) in self._conn.execute(
                    f"SELECT id FROM sync_operation WHERE id IN ({marks})"
                    f" UNION SELECT id FROM pending_op WHERE id IN ({marks})",
                    (*chunk, *chunk),
                )
            )
        return found
