"""The mailbox on a person's own node (store.mailbox): the relay list replicated as an identity
op, each own op mailed once through the outbox, letters applied and recorded in one transaction
so that mail seen again changes nothing, and what `mailbox status` shows."""

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nacl.public
import peewee
import pytest
from test_store_devices import join, new_vault
from test_store_vault_support import T0, Owner, conversation, count, stored_ops

from protocols.canonical import canonical_encode
from protocols.envelope import Envelope, Letter, seal
from protocols.errors import MalformedInput
from protocols.hlc import Timestamp
from protocols.mailbox_records import RelayList
from protocols.oplog import OpKind, SyncOperation
from protocols.peer_id import peer_id_from_ed25519_public_key
from store.devices import Credentials, introduce, revoke
from store.identity import save_device
from store.mailbox import (
    SYNC_OPS,
    MailboxStatus,
    OpenedLetter,
    OutboxRelay,
    Outgoing,
    apply_letters,
    decode_sync_ops,
    due_outbox,
    encode_sync_ops,
    enqueue,
    mailbox_status,
    next_outbox_due,
    open_letters,
    outbox_delivered,
    outbox_retry,
    publish_relay_list,
    received_ids,
    relay_list,
    skip_mailing,
    take_ops_to_mail,
)
from store.sql import execute_sql
from store.vault import import_conversation
from store.vault_apply import ApplyReport, apply_ops

NOW = T0 + 3_600_000
DAY = 86_400_000
BOX = nacl.public.PrivateKey(bytes([77]) * 32)  # the DID's X25519 key, for sealing letters
RELAY_A = peer_id_from_ed25519_public_key(bytes([1]) * 32)
RELAY_B = peer_id_from_ed25519_public_key(bytes([2]) * 32)
ADDRS = ("/ip4/127.0.0.1/tcp/4001",)


@pytest.fixture
def owner() -> Owner:
    return Owner(count=3)


@pytest.fixture
def vaults(tmp_path: Path, owner: Owner) -> Iterator[list[peewee.SqliteDatabase]]:
    """Device 0's vault (the first device) and device 1's (approved by device 0); device 2
    never joins."""
    dbs = [new_vault(tmp_path / f"vault-{n}.db", owner) for n in range(2)]
    first = owner.devices[0]
    save_device(dbs[0], first.row)
    introduce(
        dbs[0],
        first.signer,
        Credentials(certificate=first.row.certificate, chain=(), rotations=()),
        T0,
    )
    join(dbs, owner, 1, by=0)
    yield dbs
    for db in dbs:
        db.close()


def relays_of(owner: Owner, device: int, *relays: str, version: int) -> RelayList:
    return RelayList.create(
        signing_key=owner.devices[device].key,
        recipient_did=owner.did,
        relays=tuple((relay, ADDRS) for relay in relays),
        version=version,
        issued_at_ms=T0 + version,
    )


def own_ops(db: peewee.SqliteDatabase, device: str) -> list[SyncOperation]:
    return [op for op in stored_ops(db) if op.device == device]


def deliver(
    source: peewee.SqliteDatabase, target: peewee.SqliteDatabase, owner: Owner, target_device: int
) -> None:
    """Apply every op of `source` to `target` (what sync would do)."""
    report = apply_ops_report(target, stored_ops(source), owner, target_device)
    assert report.refused == (), report.refused


def apply_ops_report(
    db: peewee.SqliteDatabase, ops: list[SyncOperation], owner: Owner, device: int
) -> ApplyReport:
    return apply_ops(db, ops, NOW, local_device=owner.devices[device].peer_id)


# --- the relay list ------------------------------------------------------------------------------


def test_the_highest_version_of_the_relay_list_is_in_force(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db, signer = vaults[0], owner.devices[0].signer
    assert relay_list(db) is None
    first = relays_of(owner, 0, RELAY_A, version=1)
    publish_relay_list(db, signer, first, NOW)
    assert relay_list(db) == first
    third = relays_of(owner, 0, RELAY_A, RELAY_B, version=3)
    publish_relay_list(db, signer, third, NOW + 1)
    # A lower version written later does not replace a higher one.
    publish_relay_list(db, signer, relays_of(owner, 0, RELAY_B, version=2), NOW + 2)
    assert relay_list(db) == third
    # An empty list withdraws every relay, at a higher version.
    empty = relays_of(owner, 0, version=4)
    publish_relay_list(db, signer, empty, NOW + 3)
    found = relay_list(db)
    assert found == empty and found is not None and found.relays == ()
    lists = [op for op in stored_ops(db) if "relay_list" in op.payload]
    versions = [RelayList.from_wire(op.payload["relay_list"]).version for op in lists]
    assert versions == [1, 3, 2, 4]


def test_the_relay_list_replicates_to_another_device_of_the_did(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    published = relays_of(owner, 0, RELAY_A, RELAY_B, version=1)
    publish_relay_list(laptop, owner.devices[0].signer, published, NOW)
    assert relay_list(phone) is None
    deliver(laptop, phone, owner, 1)
    assert relay_list(phone) == published
    # And back: the phone's newer list wins on the laptop.
    newer = relays_of(owner, 1, RELAY_B, version=2)
    publish_relay_list(phone, owner.devices[1].signer, newer, NOW + 10)
    deliver(phone, laptop, owner, 0)
    assert relay_list(laptop) == newer
    assert mailbox_status(laptop, owner.devices[0].peer_id).relays == newer


def test_two_lists_of_one_version_resolve_to_the_same_one_everywhere(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    deliver(laptop, phone, owner, 1)
    # Written apart, both as version 2: every replica must pick the same one.
    publish_relay_list(
        laptop, owner.devices[0].signer, relays_of(owner, 0, RELAY_A, version=2), NOW
    )
    publish_relay_list(phone, owner.devices[1].signer, relays_of(owner, 1, RELAY_B, version=2), NOW)
    deliver(laptop, phone, owner, 1)
    deliver(phone, laptop, owner, 0)
    assert relay_list(laptop) == relay_list(phone)
    assert relay_list(laptop) is not None


def test_a_list_written_by_a_device_since_revoked_no_longer_counts(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    ours = relays_of(owner, 0, RELAY_A, version=1)
    publish_relay_list(laptop, owner.devices[0].signer, ours, NOW)
    deliver(laptop, phone, owner, 1)
    stolen = relays_of(owner, 1, RELAY_B, version=99)
    publish_relay_list(phone, owner.devices[1].signer, stolen, NOW + 1)
    deliver(phone, laptop, owner, 0)
    assert relay_list(laptop) == stolen
    revoke(laptop, owner.devices[0].signer, owner.devices[1].peer_id, NOW + 2)
    assert relay_list(laptop) == ours


def test_only_our_own_signed_list_is_published(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, _ = vaults
    with pytest.raises(ValueError):
        publish_relay_list(
            laptop, owner.devices[0].signer, relays_of(owner, 1, RELAY_A, version=1), NOW
        )
    assert relay_list(laptop) is None


def next_op(
    owner: Owner,
    device: int,
    after: SyncOperation,
    payload: dict[str, object],
    **fields: object,
) -> SyncOperation:
    """The op of `device` following `after`, hand-signed (not through the store's checks)."""
    values: dict[str, object] = {
        "signing_key": owner.devices[device].key,
        "author": owner.did,
        "device": owner.devices[device].peer_id,
        "seq": after.seq + 1,
        "prev": after.id,
        "hlc": Timestamp(
            wall_ms=NOW - 1000, counter=after.hlc.counter + 1, node=owner.devices[device].peer_id
        ),
        "entity_type": "identity",
        "entity_id": owner.did,
        "kind": OpKind.UPDATE,
        "payload": payload,
    }
    values.update(fields)
    return SyncOperation.sign(**values)  # type: ignore[arg-type]


def refused_list_op(
    vaults: list[peewee.SqliteDatabase], owner: Owner, relays: RelayList, **fields: object
) -> str:
    """Apply device 0's ops and then a relay-list op carrying `relays` to device 1's vault;
    return the refusal's message."""
    laptop, phone = vaults
    ops = own_ops(laptop, owner.devices[0].peer_id)
    op = next_op(owner, 0, ops[-1], {"relay_list": relays.to_wire()}, **fields)
    report = apply_ops_report(phone, [*ops, op], owner, 1)
    assert report.applied == tuple(o.id for o in ops)
    assert [r.op_id for r in report.refused] == [op.id]
    error = report.refused[0].error
    assert isinstance(error, MalformedInput)
    assert relay_list(phone) is None
    return str(error)


def test_a_relay_list_signed_by_another_device_than_the_ops_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    # Device 1's list (its signature holds) in an op of device 0.
    message = refused_list_op(vaults, owner, relays_of(owner, 1, RELAY_A, version=1))
    assert "signed by the op's device" in message


def test_a_relay_list_for_another_did_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    stranger = Owner(count=1, seed=9)
    foreign = RelayList.create(
        signing_key=owner.devices[0].key,
        recipient_did=stranger.did,
        relays=((RELAY_A, ADDRS),),
        version=1,
        issued_at_ms=T0,
    )
    message = refused_list_op(vaults, owner, foreign)
    assert "author's" in message


def test_a_relay_list_whose_signature_does_not_hold_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    good = relays_of(owner, 0, RELAY_A, version=1)
    forged = RelayList(
        recipient_did=good.recipient_did,
        relays=((RELAY_B, ADDRS),),  # not what was signed
        version=good.version,
        issued_at_ms=good.issued_at_ms,
        device=good.device,
        signature=good.signature,
    )
    assert "does not verify" in refused_list_op(vaults, owner, forged)


def test_a_relay_list_op_for_another_entity_or_with_more_fields_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    good = relays_of(owner, 0, RELAY_A, version=1)
    stranger = Owner(count=1, seed=9)
    assert "entity" in refused_list_op(vaults, owner, good, entity_id=stranger.did)
    laptop, phone = vaults
    ops = own_ops(laptop, owner.devices[0].peer_id)
    op = next_op(owner, 0, ops[-1], {"relay_list": good.to_wire(), "rotation": b"x"})
    report = apply_ops_report(phone, [*ops, op], owner, 1)
    assert [r.error.code for r in report.refused] == ["malformed"]
    op = next_op(owner, 0, ops[-1], {"relay_list": "not bytes"})
    report = apply_ops_report(phone, [op], owner, 1)
    assert [r.error.code for r in report.refused] == ["malformed"]
    assert relay_list(phone) is None


# --- sending -------------------------------------------------------------------------------------


def outgoing(envelope_id: str, relay: str, *, expires: int = NOW + DAY, size: int = 10) -> Outgoing:
    return Outgoing(
        envelope_id=envelope_id,
        relay=relay,
        recipient_did="did:key:z6MkRecipient",
        payload_type=SYNC_OPS,
        envelope=bytes(size),
        expires_at_ms=expires,
    )


def mailed_seq(db: peewee.SqliteDatabase, device: str) -> int:
    return mailbox_status(db, device).mailed_seq


def test_each_own_op_is_taken_to_mail_once_in_seq_order(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db, device = vaults[0], owner.devices[0].peer_id
    import_conversation(db, owner.devices[0].signer, conversation(1), T0)
    wires = [op.to_wire() for op in sorted(own_ops(db, device), key=lambda op: op.seq)]
    assert len(wires) > 4
    everything = take_ops_to_mail(db, device, 1 << 20)
    assert everything is not None
    assert everything.wires == wires and everything.last_seq == len(wires)
    # Taking does not advance the cursor: only enqueue does.
    assert take_ops_to_mail(db, device, 1 << 20) == everything
    # A byte bound: as many whole ops as fit, and never none.
    two = take_ops_to_mail(db, device, len(wires[0]) + len(wires[1]))
    assert two is not None and two.wires == wires[:2] and two.last_seq == 2
    one = take_ops_to_mail(db, device, 1)
    assert one is not None and one.wires == wires[:1] and one.last_seq == 1
    enqueue(db, [outgoing("e1", RELAY_A)], NOW, mailed=(device, two.last_seq))
    assert mailed_seq(db, device) == 2
    rest = take_ops_to_mail(db, device, 1 << 20)
    assert rest is not None and rest.wires == wires[2:] and rest.last_seq == len(wires)
    enqueue(db, [outgoing("e2", RELAY_A)], NOW, mailed=(device, rest.last_seq))
    assert take_ops_to_mail(db, device, 1 << 20) is None
    # Another device's ops are not this device's to mail.
    assert take_ops_to_mail(db, owner.devices[1].peer_id, 1 << 20) is None


def test_the_mailed_cursor_never_goes_back(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db, device = vaults[0], owner.devices[0].peer_id
    import_conversation(db, owner.devices[0].signer, conversation(1), T0)
    total = len(own_ops(db, device))
    enqueue(db, [], NOW, mailed=(device, 4))
    enqueue(db, [outgoing("e1", RELAY_A)], NOW, mailed=(device, 2))  # a stale batch
    assert mailed_seq(db, device) == 4
    batch = take_ops_to_mail(db, device, 1 << 20)
    assert batch is not None and len(batch.wires) == total - 4
    # skip_mailing does not go back either, and enqueue without `mailed` leaves it alone.
    enqueue(db, [outgoing("e2", RELAY_A)], NOW, mailed=(device, total))
    skip_mailing(db, owner.devices[1].peer_id)  # a device with no ops here: cursor 0
    enqueue(db, [outgoing("e3", RELAY_A)], NOW)
    assert mailed_seq(db, device) == total
    assert mailed_seq(db, owner.devices[1].peer_id) == 0


def test_skip_mailing_marks_every_op_as_mailed_and_later_ops_are_mailed(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db, device = vaults[0], owner.devices[0].peer_id
    import_conversation(db, owner.devices[0].signer, conversation(1), T0)
    before = len(own_ops(db, device))
    skip_mailing(db, device)
    assert mailed_seq(db, device) == before
    assert take_ops_to_mail(db, device, 1 << 20) is None
    skip_mailing(db, device)  # again: nothing changes
    assert mailed_seq(db, device) == before
    import_conversation(db, owner.devices[0].signer, conversation(2), T0 + 1)
    later = sorted(own_ops(db, device), key=lambda op: op.seq)[before:]
    assert later
    batch = take_ops_to_mail(db, device, 1 << 20)
    assert batch is not None
    assert batch.wires == [op.to_wire() for op in later] and batch.last_seq == later[-1].seq
    # Nothing was enqueued by skipping.
    assert due_outbox(db, NOW, 100) == []


def test_the_outbox_gives_due_rows_oldest_first_and_drops_expired_ones(
    vaults: list[peewee.SqliteDatabase],
) -> None:
    db = vaults[0]
    assert next_outbox_due(db) is None
    enqueue(db, [outgoing("e1", RELAY_A), outgoing("e1", RELAY_B)], NOW)
    enqueue(db, [outgoing("e2", RELAY_A, expires=NOW + 10)], NOW + 1)
    enqueue(db, [outgoing("e3", RELAY_B)], NOW + 2)
    # The same envelope for the same relay again is one row.
    enqueue(db, [outgoing("e1", RELAY_A)], NOW + 3)
    assert next_outbox_due(db) == NOW
    # Rows enqueued later are not due yet at NOW.
    assert [(i.envelope_id, i.relay) for i in due_outbox(db, NOW, 10)] == [
        ("e1", RELAY_A),
        ("e1", RELAY_B),
    ]
    due = due_outbox(db, NOW + 2, 10)
    assert [(i.envelope_id, i.relay) for i in due] == [
        ("e1", RELAY_A),
        ("e1", RELAY_B),
        ("e2", RELAY_A),
        ("e3", RELAY_B),
    ]
    assert all(item.attempts == 0 for item in due)
    assert due[0].envelope == bytes(10)
    # The limit takes the oldest.
    assert [i.row_id for i in due_outbox(db, NOW + 2, 2)] == [due[0].row_id, due[1].row_id]
    # At e2's expiry it is dropped, for good.
    assert [i.envelope_id for i in due_outbox(db, NOW + 10, 10)] == ["e1", "e1", "e3"]
    assert count(db, "mailbox_outbox") == 3
    assert [i.envelope_id for i in due_outbox(db, NOW + 2, 10)] == ["e1", "e1", "e3"]


def test_a_retried_row_waits_and_a_delivered_row_goes(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db = vaults[0]
    enqueue(db, [outgoing("e1", RELAY_A), outgoing("e2", RELAY_A), outgoing("e3", RELAY_B)], NOW)
    first, second, third = due_outbox(db, NOW, 10)
    outbox_retry(db, first.row_id, "relay unreachable", NOW + 5000)
    outbox_retry(db, third.row_id, "over_quota: full " + "x" * 1000, NOW + 2000)
    assert [i.envelope_id for i in due_outbox(db, NOW + 1999, 10)] == ["e2"]
    assert next_outbox_due(db) == NOW
    outbox_delivered(db, [second.row_id])
    assert next_outbox_due(db) == NOW + 2000
    assert [i.envelope_id for i in due_outbox(db, NOW + 5000, 10)] == ["e1", "e3"]
    outbox_retry(db, first.row_id, "relay unreachable again", NOW + 9000)
    again = {i.envelope_id: i for i in due_outbox(db, NOW + 9000, 10)}
    assert again["e1"].attempts == 2 and again["e3"].attempts == 1
    status = mailbox_status(db, owner.devices[0].peer_id).outbox
    assert status == [
        OutboxRelay(
            relay=relay,
            pending=1,
            bytes=10,
            attempts=attempts,
            last_error=error,
            next_attempt_ms=due,
        )
        for relay, attempts, error, due in sorted(
            [
                (RELAY_A, 2, "relay unreachable again", NOW + 9000),
                (RELAY_B, 1, ("over_quota: full " + "x" * 1000)[:500], NOW + 2000),
            ]
        )
    ]
    outbox_delivered(db, [first.row_id, third.row_id, 12345])
    assert next_outbox_due(db) is None
    assert due_outbox(db, NOW + DAY - 1, 10) == []
    assert mailbox_status(db, owner.devices[0].peer_id).outbox == []


# --- receiving -----------------------------------------------------------------------------------


def sealed(owner: Owner, device: int, ops: list[SyncOperation]) -> Envelope:
    letter = Letter.create(
        signing_key=owner.devices[device].key,
        recipient_did=owner.did,
        sender_did=owner.did,
        payload_type=SYNC_OPS,
        payload=encode_sync_ops([op.to_wire() for op in ops]),
        created_at_ms=NOW,
    )
    return seal(
        letter,
        recipient_did=owner.did,
        recipient_x25519_public_key=bytes(BOX.public_key),
        expires_at_ms=NOW + DAY,
        ephemeral_private_key=os.urandom(32),
    )


def opened(owner: Owner, envelope: Envelope, relay: str = RELAY_A) -> OpenedLetter:
    """What the node makes of an envelope (in its checking process): `open_letters`."""
    (letter,) = open_letters([envelope], relay, owner.did, bytes(BOX), NOW)
    return letter


def dropped(envelope_id: str, relay: str, outcome: str) -> OpenedLetter:
    return OpenedLetter(envelope_id=envelope_id, relay=relay, outcome=outcome)


def test_a_letter_applies_its_ops_once_and_is_recorded_as_received(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = own_ops(laptop, owner.devices[0].peer_id)
    mail = sealed(owner, 0, ops)
    assert received_ids(phone, [mail.id]) == set()
    result = apply_letters(phone, [opened(owner, mail)], NOW, local_device=owner.devices[1].peer_id)
    assert (result.applied_ops, result.duplicate_ops, result.parked_ops, result.refused) == (
        len(ops),
        0,
        0,
        (),
    )
    assert result.letters == 1
    assert own_ops(phone, owner.devices[0].peer_id) == ops
    assert received_ids(phone, [mail.id, "other"]) == {mail.id}
    # The same letter again (from another relay, or after a crash before the ack).
    before = count(phone, "sync_operation")
    again = apply_letters(
        phone, [opened(owner, mail, RELAY_B)], NOW + 1, local_device=owner.devices[1].peer_id
    )
    assert (again.applied_ops, again.duplicate_ops, again.letters) == (0, len(ops), 1)
    assert count(phone, "sync_operation") == before
    row = execute_sql(
        phone,
        "SELECT relay, sender_did, sender_device, payload_type, outcome,"
        " received_at_ms FROM mailbox_received",
    ).fetchall()
    assert row == [(RELAY_A, owner.did, owner.devices[0].peer_id, SYNC_OPS, "applied", NOW)]
    status = mailbox_status(phone, owner.devices[1].peer_id)
    assert status.received == 1 and status.received_by_outcome == {"applied": 1}


def test_letters_out_of_order_park_until_the_gap_is_filled(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = sorted(own_ops(laptop, owner.devices[0].peer_id), key=lambda op: op.seq)
    early, late = sealed(owner, 0, ops[:3]), sealed(owner, 0, ops[3:])
    local = owner.devices[1].peer_id
    first = apply_letters(phone, [opened(owner, late)], NOW, local_device=local)
    assert (first.applied_ops, first.parked_ops) == (0, len(ops) - 3)
    assert received_ids(phone, [early.id, late.id]) == {late.id}
    second = apply_letters(phone, [opened(owner, early)], NOW, local_device=local)
    assert (second.applied_ops, second.parked_ops) == (len(ops), 0)
    assert own_ops(phone, owner.devices[0].peer_id) == ops
    assert count(phone, "pending_op") == 0


def test_several_letters_in_one_call_and_a_refused_op(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = sorted(own_ops(laptop, owner.devices[0].peer_id), key=lambda op: op.seq)
    # An op of a device the phone has never heard of (device 2 was never certified).
    stray = SyncOperation.sign(
        signing_key=owner.devices[2].key,
        author=owner.did,
        device=owner.devices[2].peer_id,
        seq=1,
        prev=None,
        hlc=Timestamp(wall_ms=NOW - 1000, counter=0, node=owner.devices[2].peer_id),
        entity_type="identity",
        entity_id=owner.did,
        kind=OpKind.UPDATE,
        payload={"relay_list": relays_of(owner, 2, RELAY_A, version=1).to_wire()},
    )
    letters = [
        opened(owner, sealed(owner, 0, ops[:2])),
        opened(owner, sealed(owner, 2, [stray])),
        opened(owner, sealed(owner, 0, ops[2:])),
    ]
    result = apply_letters(phone, letters, NOW, local_device=owner.devices[1].peer_id)
    assert (result.applied_ops, len(result.refused), result.letters) == (len(ops), 1, 3)
    assert result.refused[0].device == owner.devices[2].peer_id
    assert relay_list(phone) is None
    assert received_ids(phone, [letter.envelope_id for letter in letters]) == {
        letter.envelope_id for letter in letters
    }


def test_a_letter_that_cannot_be_recorded_applies_nothing(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = own_ops(laptop, owner.devices[0].peer_id)
    letter = opened(owner, sealed(owner, 0, ops))
    before = count(phone, "sync_operation")
    # Not a value SQLite can bind: recording the letter fails after its ops were applied.
    broken = replace(letter, sender_did=object())  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        apply_letters(phone, [broken], NOW, local_device="x")
    # One transaction: the ops did not stay applied without the letter being recorded.
    assert count(phone, "sync_operation") == before
    assert received_ids(phone, [letter.envelope_id]) == set()


def test_letters_that_cannot_be_applied_are_recorded_with_why(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = own_ops(laptop, owner.devices[0].peer_id)
    stranger = Owner(count=1, seed=9)
    other_box = nacl.public.PrivateKey.generate()

    def letter(
        signing_key: nacl.signing.SigningKey,
        sender: str,
        kind: str,
        payload: bytes,
        to_key: bytes = bytes(BOX.public_key),
        expires: int = NOW + DAY,
    ) -> Envelope:
        return seal(
            Letter.create(
                signing_key=signing_key,
                recipient_did=owner.did,
                sender_did=sender,
                payload_type=kind,
                payload=payload,
                created_at_ms=NOW,
            ),
            recipient_did=owner.did,
            recipient_x25519_public_key=to_key,
            expires_at_ms=expires,
            ephemeral_private_key=os.urandom(32),
        )

    key = owner.devices[0].key
    wires = encode_sync_ops([op.to_wire() for op in ops])
    envelopes = [
        letter(key, owner.did, "friend.request", b"hello"),
        letter(stranger.devices[0].key, stranger.did, SYNC_OPS, wires),
        letter(key, owner.did, SYNC_OPS, b"not cbor"),
        letter(key, owner.did, SYNC_OPS, wires, to_key=bytes(other_box.public_key)),
        letter(key, owner.did, SYNC_OPS, wires, expires=NOW),
    ]
    letters = open_letters(envelopes, RELAY_A, owner.did, bytes(BOX), NOW)
    outcomes = [letter.outcome.split(":")[0] for letter in letters]
    assert outcomes == [
        "unknown payload type",
        "sync ops from another identity",
        "malformed",
        "unreadable",
        "expired",
    ]
    assert all(letter.op_wires == () for letter in letters)
    result = apply_letters(phone, letters, NOW, local_device=owner.devices[1].peer_id)
    assert (result.applied_ops, result.letters) == (0, 5)
    assert received_ids(phone, [e.id for e in envelopes]) == {e.id for e in envelopes}
    # Recorded once: the same envelope later (another relay) is not recorded over it.
    apply_letters(phone, [dropped(envelopes[0].id, RELAY_B, "expired")], NOW, local_device="x")
    assert phone.execute_sql(
        "SELECT relay, outcome FROM mailbox_received WHERE envelope_id = ?", (envelopes[0].id,)
    ).fetchall() == [(RELAY_A, "unknown payload type")]
    status = mailbox_status(phone, owner.devices[1].peer_id)
    assert status.received_by_outcome == {
        "unknown payload type": 1,
        "sync ops from another identity": 1,
        "malformed": 1,
        "unreadable": 1,
        "expired": 1,
    }


def test_an_op_with_a_bad_verdict_is_refused_with_it(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0)
    ops = sorted(own_ops(laptop, owner.devices[0].peer_id), key=lambda op: op.seq)
    forged = replace(ops[-1], signature=bytes(64))
    letter = opened(owner, sealed(owner, 0, [*ops[:-1], forged]))
    assert letter.verdicts[-1] is not None and letter.verdicts[-1][0] == "bad_signature"
    result = apply_letters(phone, [letter], NOW, local_device=owner.devices[1].peer_id)
    assert result.applied_ops == len(ops) - 1
    assert [r.error.code for r in result.refused] == ["bad_signature"]


def test_the_status_shows_relays_outbox_received_and_the_mailed_cursor(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    db, device = vaults[0], owner.devices[0].peer_id
    assert mailbox_status(db, device) == MailboxStatus(
        relays=None, outbox=[], received=0, received_by_outcome={}, mailed_seq=0
    )
    relays = relays_of(owner, 0, RELAY_A, version=1)
    publish_relay_list(db, owner.devices[0].signer, relays, NOW)
    enqueue(
        db,
        [outgoing("e1", RELAY_A, size=100), outgoing("e2", RELAY_A, size=50)],
        NOW,
        mailed=(device, 2),
    )
    apply_letters(db, [dropped("env-x", RELAY_A, "unreadable: bad")], NOW, local_device=device)
    import_conversation(vaults[1], owner.devices[1].signer, conversation(1), T0)
    mail = sealed(owner, 1, own_ops(vaults[1], owner.devices[1].peer_id))
    deliver(vaults[1], db, owner, 0)  # the ops arrived by sync first: the letter only duplicates
    apply_letters(db, [opened(owner, mail)], NOW, local_device=device)
    apply_letters(db, [dropped("env-y", RELAY_B, "expired")], NOW, local_device=device)
    assert mailbox_status(db, device) == MailboxStatus(
        relays=relays,
        outbox=[
            OutboxRelay(
                relay=RELAY_A,
                pending=2,
                bytes=150,
                attempts=0,
                last_error=None,
                next_attempt_ms=NOW,
            )
        ],
        received=3,
        received_by_outcome={"applied": 1, "expired": 1, "unreadable": 1},
        mailed_seq=2,
    )


# --- the sync.ops payload ------------------------------------------------------------------------


def test_sync_ops_payloads_round_trip(vaults: list[peewee.SqliteDatabase], owner: Owner) -> None:
    wires = [op.to_wire() for op in stored_ops(vaults[0])]
    assert decode_sync_ops(encode_sync_ops(wires)) == wires
    assert decode_sync_ops(encode_sync_ops([])) == []
    assert decode_sync_ops(encode_sync_ops([b"", b"\x00"])) == [b"", b"\x00"]
    assert encode_sync_ops(wires) == canonical_encode(wires)


@pytest.mark.parametrize(
    "payload",
    [
        canonical_encode({"ops": [b"a"]}),
        canonical_encode(b"a"),
        canonical_encode([b"a", 1]),
        canonical_encode([b"a", "text"]),
        canonical_encode([[b"a"]]),
        canonical_encode([b"a"]) + b"\x00",  # trailing bytes
        b"\xff\x00 not cbor",
        b"",
    ],
)
def test_a_sync_ops_payload_that_is_not_an_array_of_op_wires_is_malformed(
    payload: bytes,
) -> None:
    with pytest.raises(MalformedInput):
        decode_sync_ops(payload)
