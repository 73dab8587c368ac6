"""A relay's store: deposits held until acknowledged or expired, every refusal with its reason
and nothing changed, nothing lost across a reopen."""

import os
from collections.abc import Iterator
from pathlib import Path

import nacl.public
import nacl.signing
import peewee
import pytest

from protocols.did import did_from_ed25519_public_key
from protocols.envelope import Envelope, Letter, open_envelope, seal
from protocols.mailbox_records import RelayRegistration
from protocols.peer_id import peer_id_from_ed25519_public_key
from store.database import open_database
from store.relay import (
    RelayLimits,
    RelayRefused,
    ack,
    deposit,
    fetch,
    list_envelopes,
    register,
    relay_status,
    remove_expired,
    unregister,
)

T0 = 1_700_000_000_000
DAY = 86_400_000
LIMITS = RelayLimits(max_envelope_bytes=4096)


class Person:
    def __init__(self, seed: int) -> None:
        self.identity = nacl.signing.SigningKey(bytes([seed]) * 32)
        self.did = did_from_ed25519_public_key(bytes(self.identity.verify_key))
        self.device = nacl.signing.SigningKey(bytes([seed + 100]) * 32)
        self.peer_id = peer_id_from_ed25519_public_key(bytes(self.device.verify_key))
        self.box = nacl.public.PrivateKey(bytes([seed + 50]) * 32)


RELAY = peer_id_from_ed25519_public_key(bytes(nacl.signing.SigningKey(bytes([9]) * 32).verify_key))


def registration(
    person: Person, *, allowed: tuple[str, ...] = (), quota: int = 10_000, issued: int = T0
) -> RelayRegistration:
    return RelayRegistration.create(
        signing_key=person.device,
        recipient_did=person.did,
        relay=RELAY,
        allowed_senders=allowed,
        quota_bytes=quota,
        expires_at_ms=T0 + 30 * DAY,
        issued_at_ms=issued,
    )


def envelope(
    sender: Person, recipient: Person, payload: bytes = b"ops", expires: int = T0 + DAY
) -> Envelope:
    letter = Letter.create(
        signing_key=sender.device,
        recipient_did=recipient.did,
        sender_did=sender.did,
        payload_type="sync.ops",
        payload=payload,
        created_at_ms=T0,
    )
    return seal(
        letter,
        recipient_did=recipient.did,
        recipient_x25519_public_key=bytes(recipient.box.public_key),
        expires_at_ms=expires,
        ephemeral_private_key=os.urandom(32),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    database = open_database(tmp_path / "relay.db")
    yield database
    database.close()


def test_mail_is_held_listed_fetched_and_gone_once_acknowledged(
    db: peewee.SqliteDatabase, tmp_path: Path
) -> None:
    alice = Person(1)
    register(db, registration(alice), T0)
    held = [envelope(alice, alice, payload=bytes([n])) for n in range(5)]
    for mail in held:
        deposit(db, mail, sender_did=alice.did, depositor=alice.peer_id, now_ms=T0, limits=LIMITS)
    db.close()
    db = open_database(tmp_path / "relay.db")  # a restart loses nothing
    first = list_envelopes(db, alice.did, None, 3, T0)
    second = list_envelopes(db, alice.did, first.next_cursor, 3, T0)
    assert first.ids + second.ids == [mail.id for mail in held]
    assert list_envelopes(db, alice.did, second.next_cursor, 3, T0).ids == []
    fetched = fetch(db, alice.did, [held[3].id, held[0].id])
    assert [m.id for m in fetched] == [held[3].id, held[0].id]
    letter = open_envelope(
        fetched[0], recipient_did=alice.did, recipient_x25519_private_key=bytes(alice.box)
    )
    assert letter.payload == bytes([3])
    assert ack(db, alice.did, [m.id for m in held]) == 5
    assert relay_status(db).envelopes == 0
    db.close()


def refused(db: peewee.SqliteDatabase, code: str, mail: Envelope, sender: Person) -> None:
    before = relay_status(db)
    with pytest.raises(RelayRefused) as caught:
        deposit(db, mail, sender_did=sender.did, depositor=sender.peer_id, now_ms=T0, limits=LIMITS)
    assert caught.value.code == code, caught.value
    assert relay_status(db) == before


def test_an_open_registration_takes_anyones_mail_until_it_closes(db: peewee.SqliteDatabase) -> None:
    alice, carol = Person(1), Person(3)
    opened = RelayRegistration.create(
        signing_key=alice.device,
        recipient_did=alice.did,
        relay=RELAY,
        quota_bytes=10_000,
        expires_at_ms=T0 + 30 * DAY,
        issued_at_ms=T0 - 1,
        open_until_ms=T0 + 1,
    )
    register(db, opened, T0)
    deposit(
        db,
        envelope(carol, alice),
        sender_did=carol.did,
        depositor=carol.peer_id,
        now_ms=T0,
        limits=LIMITS,
    )
    before = relay_status(db)
    with pytest.raises(RelayRefused) as caught:
        deposit(
            db,
            envelope(carol, alice, b"later"),
            sender_did=carol.did,
            depositor=carol.peer_id,
            now_ms=T0 + 1,
            limits=LIMITS,
        )
    assert caught.value.code == "sender_not_allowed"
    assert relay_status(db) == before


def test_each_refusal_says_why_and_changes_nothing(db: peewee.SqliteDatabase) -> None:
    alice, bob, carol = Person(1), Person(2), Person(3)
    refused(db, "unregistered_recipient", envelope(alice, alice), alice)
    register(db, registration(alice, allowed=(bob.did,), quota=3000), T0)
    refused(db, "sender_not_allowed", envelope(carol, alice), carol)
    refused(db, "too_large", envelope(bob, alice, payload=b"x" * 5000), bob)
    refused(db, "expired", envelope(bob, alice, expires=T0), bob)
    refused(db, "expired", envelope(bob, alice, expires=T0 + 31 * DAY), bob)
    replayed = envelope(bob, alice, payload=b"x" * 1500)
    deposit(db, replayed, sender_did=bob.did, depositor=bob.peer_id, now_ms=T0, limits=LIMITS)
    refused(db, "duplicate", replayed, bob)
    refused(db, "over_quota", envelope(bob, alice, payload=b"y" * 1500), bob)
    assert relay_status(db).envelopes == 1


def test_fetch_and_ack_see_only_the_recipients_own_mail(db: peewee.SqliteDatabase) -> None:
    alice, bob = Person(1), Person(2)
    register(db, registration(alice), T0)
    register(db, registration(bob), T0)
    mail = envelope(alice, alice)
    deposit(db, mail, sender_did=alice.did, depositor=alice.peer_id, now_ms=T0, limits=LIMITS)
    assert fetch(db, bob.did, [mail.id]) == []
    assert ack(db, bob.did, [mail.id]) == 0
    assert relay_status(db).envelopes == 1


def test_expired_mail_and_registrations_are_removed(db: peewee.SqliteDatabase) -> None:
    alice = Person(1)
    register(db, registration(alice), T0)
    deposit(
        db,
        envelope(alice, alice),
        sender_did=alice.did,
        depositor=alice.peer_id,
        now_ms=T0,
        limits=LIMITS,
    )
    assert list_envelopes(db, alice.did, None, 10, T0 + 2 * DAY).ids == []
    assert remove_expired(db, T0 + 2 * DAY) == 1
    assert remove_expired(db, T0 + 31 * DAY) == 0
    assert relay_status(db).recipients == 0


def test_an_older_registration_does_not_replace_a_newer_and_unregister_drops_the_mail(
    db: peewee.SqliteDatabase,
) -> None:
    alice = Person(1)
    register(db, registration(alice, issued=T0 + 5), T0 + 5)
    with pytest.raises(RelayRefused, match="newer"):
        register(db, registration(alice, issued=T0), T0 + 6)
    deposit(
        db,
        envelope(alice, alice),
        sender_did=alice.did,
        depositor=alice.peer_id,
        now_ms=T0,
        limits=LIMITS,
    )
    assert unregister(db, alice.did) == 1
    assert relay_status(db) == relay_status(db).__class__(recipients=0, envelopes=0, bytes=0)
