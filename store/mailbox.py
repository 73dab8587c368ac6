"""The mailbox as a sender and a recipient (issue 6); the relay's side is store.relay.

**Where to deposit.** The DID's relay list (`protocols.mailbox_records.RelayList`) is an op of
the vault, so it replicates with everything else: an identity update whose payload is
`{"relay_list": wire}`. The list in force is the highest version any trusted device wrote.

**Sending.** What cannot be delivered directly goes through the outbox. For now that is this
device's own ops while another device of the DID is offline: `take_ops_to_mail` reads the ops
past `mailbox_cursor` (how far they were mailed), the node seals them into letters and
`enqueue` stores one outbox row per envelope and relay *and* advances the cursor, in one
transaction: after a crash either both happened or neither, so every op is mailed once. A row
stays until its relay says stored (or duplicate: it held it already), retried with backoff.
Ops written while the DID has no relay are not mailed later (`skip_mailing`): mail is for
what happens while someone is away, and sync covers the rest when devices meet.

**Receiving.** `apply_letter` applies what a letter carries and records its envelope id in
`mailbox_received`, in one transaction, so an envelope seen again (from another relay, or after
a crash before the ack) is recognised (`received_ids`) and only acked: at-least-once delivery,
exactly-once effect. Ops apply through store.vault_apply, which verifies each one and parks
ops that arrive ahead of a gap.
"""

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

from peewee import SqliteDatabase

from protocols.canonical import canonical_decode, canonical_encode, decode_stored
from protocols.envelope import Envelope, open_envelope
from protocols.errors import EnvelopeUnreadable, MalformedInput, ProtocolError
from protocols.mailbox_records import RelayList, RelayRegistration
from protocols.oplog import OpKind, SyncOperation, op_from_checked_wire
from store.database import write_transaction
from store.op_checks import Verdict, check_wires
from store.sync_state import CheckedError
from store.trust_state import IDENTITY, load_trust
from store.vault_apply import ApplyReport, RefusedOp, apply_ops
from store.vault_log import LocalLog, LocalSigner
from store.vault_sql import chunks, connection, placeholders

# The payload type of a letter that carries sync ops (a CBOR array of op wires).
SYNC_OPS = "sync.ops"
# Ops per letter at most, by bytes of op wires: well inside a relay's default 1 MiB limit, and
# small enough that a refused or retried envelope is cheap.
LETTER_OPS_BYTES = 256 * 1024


def relay_list(db: SqliteDatabase) -> RelayList | None:
    """The DID's relay list in force, or None: of the lists written by devices trusted now,
    the highest version, ties broken by (issue time, device, signature) so that every replica
    picks the same one. A list written by a device since revoked no longer counts (a stolen
    device must not leave its relays behind); a device's list then falls back to an older one."""
    candidates: list[RelayList] = []
    with db.atomic():
        conn = connection(db)
        trust = load_trust(conn)
        for (wire,) in conn.execute(
            "SELECT wire FROM sync_operation WHERE entity_type = ? AND entity_id = ?"
            " AND kind = 'update'",
            (IDENTITY, trust.did),
        ):
            op = cast(Mapping[str, object], decode_stored(bytes(wire)))
            payload = cast(Mapping[str, object], op["payload"])
            if "relay_list" in payload and trust.is_trusted(cast(str, op["device"])):
                candidates.append(RelayList.from_wire(cast(bytes, payload["relay_list"])))
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.version, r.issued_at_ms, r.device, r.signature))


def publish_relay_list(
    db: SqliteDatabase, signer: LocalSigner, relays: RelayList, now_ms: int
) -> None:
    """Write `relays` (signed by this device, for our DID) into the vault, to replicate."""
    if relays.recipient_did != signer.author or relays.device != signer.device:
        raise ValueError("a relay list in the vault is our DID's, signed by this device")
    with write_transaction(db):
        log = LocalLog(connection(db), signer, now_ms)
        log.write(IDENTITY, signer.author, OpKind.UPDATE, {"relay_list": relays.to_wire()})
        log.close()


def save_registration(db: SqliteDatabase, registration: RelayRegistration, now_ms: int) -> None:
    """Remember what this device registered at a relay (the relay accepted it)."""
    with write_transaction(db):
        connection(db).execute(
            "INSERT INTO mailbox_registration (relay, registration, registered_at_ms)"
            " VALUES (?, ?, ?) ON CONFLICT (relay) DO UPDATE SET"
            " registration = excluded.registration, registered_at_ms = excluded.registered_at_ms",
            (registration.relay, registration.to_wire(), now_ms),
        )


def forget_registration(db: SqliteDatabase, relay: str) -> None:
    with write_transaction(db):
        connection(db).execute("DELETE FROM mailbox_registration WHERE relay = ?", (relay,))


def saved_registrations(db: SqliteDatabase) -> dict[str, RelayRegistration]:
    """What this device last registered at each relay, by relay peer id."""
    with db.atomic():
        rows = connection(db).execute("SELECT relay, registration FROM mailbox_registration")
        return {str(relay): RelayRegistration.from_wire(bytes(wire)) for relay, wire in rows}


# --- sending -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OpsToMail:
    """This device's ops not mailed yet, in seq order, and the seq of the last."""

    wires: list[bytes]
    last_seq: int


def _mailed_seq(conn: sqlite3.Connection, device: str) -> int:
    row = conn.execute(
        "SELECT mailed_seq FROM mailbox_cursor WHERE device = ?", (device,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def take_ops_to_mail(db: SqliteDatabase, device: str, max_bytes: int) -> OpsToMail | None:
    """The first `max_bytes` of `device`'s ops past the mailed cursor (at least one op), or
    None when every op was mailed."""
    with db.atomic():
        conn = connection(db)
        after = _mailed_seq(conn, device)
        wires: list[bytes] = []
        size = 0
        last = after
        for seq, wire in conn.execute(
            "SELECT seq, wire FROM sync_operation WHERE device = ? AND seq > ? ORDER BY seq",
            (device, after),
        ):
            if wires and size + len(wire) > max_bytes:
                break
            wires.append(bytes(wire))
            size += len(wire)
            last = int(seq)
    return OpsToMail(wires=wires, last_seq=last) if wires else None


def skip_mailing(db: SqliteDatabase, device: str) -> None:
    """Mark every op of `device` as mailed without mailing it (no relay to mail to, or every
    device is online and syncs it directly)."""
    with write_transaction(db):
        conn = connection(db)
        (head,) = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM sync_operation WHERE device = ?", (device,)
        ).fetchone()
        _advance(conn, device, int(head))


def _advance(conn: sqlite3.Connection, device: str, seq: int) -> None:
    conn.execute(
        "INSERT INTO mailbox_cursor (device, mailed_seq) VALUES (?, ?) ON CONFLICT (device)"
        " DO UPDATE SET mailed_seq = max(mailed_seq, excluded.mailed_seq)",
        (device, seq),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """One sealed envelope, for one relay."""

    envelope_id: str
    relay: str
    recipient_did: str
    payload_type: str
    envelope: bytes  # wire
    expires_at_ms: int


def enqueue(
    db: SqliteDatabase,
    outgoing: Sequence[Outgoing],
    now_ms: int,
    *,
    mailed: tuple[str, int] | None = None,
) -> None:
    """Put `outgoing` in the outbox, due now; with `mailed` (device, seq), advance that
    device's mailed cursor in the same transaction."""
    with write_transaction(db):
        conn = connection(db)
        conn.executemany(
            "INSERT OR IGNORE INTO mailbox_outbox (envelope_id, relay, recipient_did,"
            " payload_type, envelope, expires_at_ms, created_at_ms, next_attempt_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    item.envelope_id,
                    item.relay,
                    item.recipient_did,
                    item.payload_type,
                    item.envelope,
                    item.expires_at_ms,
                    now_ms,
                    now_ms,
                )
                for item in outgoing
            ],
        )
        if mailed is not None:
            _advance(conn, *mailed)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxItem:
    row_id: int
    envelope_id: str
    relay: str
    envelope: bytes
    attempts: int


def due_outbox(db: SqliteDatabase, now_ms: int, limit: int) -> list[OutboxItem]:
    """Rows due for a (re)try, oldest first; expired ones are dropped first (the relay would
    refuse them, and nobody can read them after their expiry anyway)."""
    with write_transaction(db):
        conn = connection(db)
        conn.execute("DELETE FROM mailbox_outbox WHERE expires_at_ms <= ?", (now_ms,))
        rows = conn.execute(
            "SELECT id, envelope_id, relay, envelope, attempts FROM mailbox_outbox"
            " WHERE next_attempt_ms <= ? ORDER BY id LIMIT ?",
            (now_ms, limit),
        ).fetchall()
    return [
        OutboxItem(row_id=r[0], envelope_id=r[1], relay=r[2], envelope=bytes(r[3]), attempts=r[4])
        for r in rows
    ]


def next_outbox_due(db: SqliteDatabase) -> int | None:
    """When the next outbox row is due (ms), or None for an empty outbox."""
    with db.atomic():
        (due,) = (
            connection(db).execute("SELECT min(next_attempt_ms) FROM mailbox_outbox").fetchone()
        )
    return None if due is None else int(due)


def outbox_delivered(db: SqliteDatabase, row_ids: Sequence[int]) -> None:
    with write_transaction(db):
        conn = connection(db)
        for chunk in chunks(list(row_ids)):
            conn.execute(
                f"DELETE FROM mailbox_outbox WHERE id IN ({placeholders(len(chunk))})", chunk
            )


def outbox_retry(db: SqliteDatabase, row_id: int, error: str, next_attempt_ms: int) -> None:
    with write_transaction(db):
        connection(db).execute(
            "UPDATE mailbox_outbox SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_ms = ? WHERE id = ?",
            (error[:500], next_attempt_ms, row_id),
        )


# --- receiving -----------------------------------------------------------------------------------


def received_ids(db: SqliteDatabase, envelope_ids: Sequence[str]) -> set[str]:
    """Which of `envelope_ids` were received (and applied) already."""
    found: set[str] = set()
    with db.atomic():
        conn = connection(db)
        for chunk in chunks(list(envelope_ids)):
            found.update(
                row[0]
                for row in conn.execute(
                    f"SELECT envelope_id FROM mailbox_received"
                    f" WHERE envelope_id IN ({placeholders(len(chunk))})",
                    chunk,
                )
            )
    return found


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenedLetter:
    """An envelope taken from a relay, opened and checked (`open_letters`): who sent it, what
    it is, the ops it carries with a checking verdict for each, and the outcome that
    `mailbox status` counts ("applied", or why the letter was dropped)."""

    envelope_id: str
    relay: str
    outcome: str
    sender_did: str = ""
    sender_device: str = ""
    payload_type: str = ""
    op_wires: tuple[bytes, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    # A letter of another type than sync.ops keeps its payload, for the handler the node
    # registered for its type (node/mailbox_inbox.py, `Inbox.register_handler`).
    payload: bytes = b""


def open_letters(
    envelopes: Sequence[Envelope], relay: str, did: str, private_key: bytes, now_ms: int
) -> list[OpenedLetter]:
    """Open and check `envelopes` for `did`: everything that needs no vault (the seal, the
    letter's signature, that sync ops come from our own DID, each op's decoding, signature and
    payload rules). Pure CPU, picklable in and out: the node runs it in its checking process,
    one page ahead of the writer (node/mailbox.py)."""
    opened: list[OpenedLetter] = []
    for envelope in envelopes:
        if envelope.is_expired(now_ms):
            opened.append(OpenedLetter(envelope_id=envelope.id, relay=relay, outcome="expired"))
            continue
        try:
            letter = open_envelope(
                envelope, recipient_did=did, recipient_x25519_private_key=private_key
            )
        except EnvelopeUnreadable as err:
            opened.append(
                OpenedLetter(envelope_id=envelope.id, relay=relay, outcome=f"unreadable: {err}")
            )
            continue
        facts = OpenedLetter(
            envelope_id=envelope.id,
            relay=relay,
            outcome="applied",
            sender_did=letter.sender_did,
            sender_device=letter.sender_device,
            payload_type=letter.payload_type,
        )
        if letter.payload_type != SYNC_OPS:
            opened.append(replace(facts, outcome="unknown payload type", payload=letter.payload))
        elif letter.sender_did != did:
            opened.append(replace(facts, outcome="sync ops from another identity"))
        else:
            try:
                wires = decode_sync_ops(letter.payload)
                checked = check_wires(wires)
            except MalformedInput as err:
                opened.append(replace(facts, outcome=f"malformed: {err}"))
                continue
            opened.append(replace(facts, op_wires=tuple(wires), verdicts=tuple(checked.verdicts)))
    return opened


def decode_sync_ops(payload: bytes) -> list[bytes]:
    """The op wires a sync.ops letter carries; `MalformedInput` for anything else."""
    value = canonical_decode(payload)
    if not isinstance(value, list) or not all(isinstance(item, bytes) for item in value):
        raise MalformedInput("a sync.ops letter carries an array of op wires")
    return cast(list[bytes], value)


def encode_sync_ops(wires: Sequence[bytes]) -> bytes:
    return canonical_encode(list(wires))


@dataclass(frozen=True, kw_only=True, slots=True)
class LettersApplied:
    applied_ops: int
    duplicate_ops: int
    parked_ops: int
    refused: tuple[RefusedOp, ...]
    letters: int


def apply_letters(
    db: SqliteDatabase, letters: Sequence[OpenedLetter], now_ms: int, *, local_device: str
) -> LettersApplied:
    """Apply the ops of opened letters with their verdicts and record each letter as received
    (with its outcome), in one transaction. Ops apply with parking: an op that arrives ahead of
    a gap waits for it (letters from relays come in any order)."""
    ops: list[SyncOperation] = []
    checked: dict[str, ProtocolError | None] = {}
    for letter in letters:
        for wire, verdict in zip(letter.op_wires, letter.verdicts, strict=True):
            op = op_from_checked_wire(wire)
            ops.append(op)
            checked[op.id] = None if verdict is None else CheckedError(*verdict)
    with write_transaction(db):
        report: ApplyReport = apply_ops(
            db, ops, now_ms, local_device=local_device, park=True, checked=checked
        )
        connection(db).executemany(
            "INSERT OR IGNORE INTO mailbox_received (envelope_id, relay, sender_did,"
            " sender_device, payload_type, outcome, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    letter.envelope_id,
                    letter.relay,
                    letter.sender_did,
                    letter.sender_device,
                    letter.payload_type,
                    letter.outcome[:300],
                    now_ms,
                )
                for letter in letters
            ],
        )
    return LettersApplied(
        applied_ops=len(report.applied),
        duplicate_ops=len(report.duplicates),
        parked_ops=len(report.parked),
        refused=report.refused,
        letters=len(letters),
    )


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxRelay:
    relay: str
    pending: int
    bytes: int
    attempts: int
    last_error: str | None
    next_attempt_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class MailboxStatus:
    relays: RelayList | None
    outbox: list[OutboxRelay]
    received: int
    received_by_outcome: dict[str, int]
    mailed_seq: int


def mailbox_status(db: SqliteDatabase, device: str) -> MailboxStatus:
    relays = relay_list(db)
    with db.atomic():
        conn = connection(db)
        outbox = [
            OutboxRelay(
                relay=r[0],
                pending=r[1],
                bytes=r[2],
                attempts=r[3],
                last_error=r[4],
                next_attempt_ms=r[5],
            )
            for r in conn.execute(
                "SELECT relay, count(*), sum(length(envelope)), max(attempts),"
                " (SELECT last_error FROM mailbox_outbox o2 WHERE o2.relay = o.relay"
                "  AND last_error IS NOT NULL ORDER BY o2.id DESC LIMIT 1),"
                " min(next_attempt_ms) FROM mailbox_outbox o GROUP BY relay ORDER BY relay"
            )
        ]
        by_outcome = {
            str(outcome): int(count)
            for outcome, count in conn.execute(
                "SELECT CASE WHEN outcome LIKE 'unreadable%' THEN 'unreadable'"
                " WHEN outcome LIKE 'malformed%' THEN 'malformed' ELSE outcome END,"
                " count(*) FROM mailbox_received GROUP BY 1"
            )
        }
        mailed = _mailed_seq(conn, device)
    return MailboxStatus(
        relays=relays,
        outbox=outbox,
        received=sum(by_outcome.values()),
        received_by_outcome=by_outcome,
        mailed_seq=mailed,
    )
