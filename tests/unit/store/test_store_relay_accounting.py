"""A relay's accounting (migration 7): the bytes each recipient holds follow every deposit, ack
and removal, the quota is checked against them, acked ids stay refused as duplicates until they
would have expired, and a reader never lists what it deposited itself."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from test_store_relay import DAY, LIMITS, RELAY, T0, Person, envelope, registration

from protocols.envelope import Envelope
from protocols.mailbox_records import RelayRegistration
from store import migrations
from store.database import open_database
from store.migrations import migrate, schema_version
from store.relay import (
    RelayRefused,
    ack,
    deposit,
    foreign_ids,
    held_for,
    list_envelopes,
    recipients,
    register,
    registration_of,
    relay_status,
    remove_expired,
)
from store.sql import execute_sql
from store.vault_sql import connection

ALICE, BOB, CAROL = Person(1), Person(2), Person(3)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    database = open_database(tmp_path / "relay.db")
    yield database
    database.close()


def put(
    db: peewee.SqliteDatabase,
    mail: Envelope,
    sender: Person,
    *,
    depositor: str | None = None,
    now: int = T0,
) -> None:
    deposit(
        db,
        mail,
        sender_did=sender.did,
        depositor=sender.peer_id if depositor is None else depositor,
        now_ms=now,
        limits=LIMITS,
    )


def used(db: peewee.SqliteDatabase, did: str) -> int:
    """The used_bytes counter of `did`'s registration."""
    rows = {row[0]: row for row in recipients(db)}
    return rows[did][2]


def tombstones(db: peewee.SqliteDatabase) -> list[str]:
    return [row[0] for row in execute_sql(db, "SELECT id FROM relay_acked ORDER BY id")]


def refusal(db: peewee.SqliteDatabase, mail: Envelope, sender: Person, now: int = T0) -> str:
    before = (relay_status(db), recipients(db))
    with pytest.raises(RelayRefused) as caught:
        put(db, mail, sender, now=now)
    assert (relay_status(db), recipients(db)) == before  # a refusal changes nothing
    return caught.value.code


def test_used_bytes_follow_deposits_and_acks(db: peewee.SqliteDatabase) -> None:
    register(db, registration(ALICE), T0)
    assert recipients(db) == [(ALICE.did, 0, 0, 10_000)]
    mails = [envelope(ALICE, ALICE, payload=bytes([n]) * (10 + 50 * n)) for n in range(3)]
    total = 0
    for mail in mails:
        put(db, mail, ALICE)
        total += mail.size
        assert used(db, ALICE.did) == total
    assert recipients(db) == [(ALICE.did, 3, total, 10_000)]
    assert relay_status(db).bytes == total
    assert ack(db, ALICE.did, [mails[1].id]) == 1
    assert used(db, ALICE.did) == total - mails[1].size
    # Acking again, or an id never held, releases nothing more.
    assert ack(db, ALICE.did, [mails[1].id, "b" * 64]) == 0
    assert used(db, ALICE.did) == total - mails[1].size
    assert ack(db, ALICE.did, [mails[0].id, mails[2].id]) == 2
    assert recipients(db) == [(ALICE.did, 0, 0, 10_000)]


def test_the_quota_counts_held_bytes_and_an_ack_makes_room(db: peewee.SqliteDatabase) -> None:
    mails = [envelope(BOB, ALICE, payload=bytes([n]) * 200) for n in range(4)]
    size = mails[0].size
    assert {mail.size for mail in mails} == {size}
    register(db, registration(ALICE, allowed=(BOB.did,), quota=3 * size), T0)
    for mail in mails[:3]:
        put(db, mail, BOB)
    assert used(db, ALICE.did) == 3 * size  # exactly the quota: accepted
    assert refusal(db, mails[3], BOB) == "over_quota"
    ack(db, ALICE.did, [mails[0].id])
    put(db, mails[3], BOB)
    assert used(db, ALICE.did) == 3 * size
    assert held_for(db, ALICE.did) == 3


def test_an_acked_id_deposited_again_is_a_duplicate_until_its_tombstone_expires(
    db: peewee.SqliteDatabase,
) -> None:
    register(db, registration(ALICE), T0)
    mail = envelope(ALICE, ALICE, expires=T0 + DAY)
    put(db, mail, ALICE)
    ack(db, ALICE.did, [mail.id])
    assert tombstones(db) == [mail.id]
    assert refusal(db, mail, ALICE) == "duplicate"
    assert refusal(db, mail, ALICE, now=T0 + DAY - 1) == "duplicate"
    # Acking does not list or hold anything.
    assert list_envelopes(db, ALICE.did, None, 10, T0).ids == []
    assert held_for(db, ALICE.did) == 0
    # The tombstone goes once the envelope would have expired (and such a replay is expired).
    remove_expired(db, T0 + DAY - 1)
    assert tombstones(db) == [mail.id]
    remove_expired(db, T0 + DAY)
    assert tombstones(db) == []
    assert refusal(db, mail, ALICE, now=T0 + DAY) == "expired"


def test_an_ack_by_another_recipient_leaves_no_tombstone_and_releases_nothing(
    db: peewee.SqliteDatabase,
) -> None:
    register(db, registration(ALICE), T0)
    register(db, registration(BOB), T0)
    mail = envelope(ALICE, ALICE)
    put(db, mail, ALICE)
    assert ack(db, BOB.did, [mail.id]) == 0
    assert tombstones(db) == []
    assert used(db, ALICE.did) == mail.size
    assert used(db, BOB.did) == 0


def test_removing_expired_mail_releases_its_bytes(db: peewee.SqliteDatabase) -> None:
    register(db, registration(ALICE, allowed=(BOB.did,)), T0)
    short = envelope(BOB, ALICE, payload=b"s" * 100, expires=T0 + DAY)
    long = envelope(BOB, ALICE, payload=b"l" * 300, expires=T0 + 2 * DAY)
    put(db, short, BOB)
    put(db, long, BOB)
    assert used(db, ALICE.did) == short.size + long.size
    assert remove_expired(db, T0 + DAY - 1) == 0
    assert used(db, ALICE.did) == short.size + long.size
    assert remove_expired(db, T0 + DAY) == 1
    assert used(db, ALICE.did) == long.size
    assert list_envelopes(db, ALICE.did, None, 10, T0 + DAY).ids == [long.id]
    assert remove_expired(db, T0 + 2 * DAY) == 1
    assert recipients(db) == [(ALICE.did, 0, 0, 10_000)]
    # An expired envelope was not acked: no tombstone for it.
    assert tombstones(db) == []


def lasting(person: Person, days: int) -> RelayRegistration:
    return RelayRegistration.create(
        signing_key=person.device,
        recipient_did=person.did,
        relay=RELAY,
        quota_bytes=10_000,
        expires_at_ms=T0 + days * DAY,
        issued_at_ms=T0,
    )


def test_an_expired_registration_goes_with_its_mail_and_others_stay(
    db: peewee.SqliteDatabase,
) -> None:
    register(db, lasting(ALICE, 30), T0)
    register(db, lasting(BOB, 60), T0)
    # Mail that outlives Alice's registration (each within the relay's TTL), and Bob's.
    alice_mail = envelope(ALICE, ALICE, expires=T0 + 35 * DAY)
    bob_mail = envelope(BOB, BOB, expires=T0 + 40 * DAY)
    put(db, alice_mail, ALICE, now=T0 + 5 * DAY)
    put(db, bob_mail, BOB, now=T0 + 10 * DAY)
    last = T0 + 30 * DAY - 1
    assert registration_of(db, ALICE.did, last) is not None
    assert registration_of(db, ALICE.did, last + 1) is None  # expired, though still stored
    late = envelope(ALICE, ALICE, payload=b"late", expires=T0 + 31 * DAY)
    assert refusal(db, late, ALICE, now=last + 1) == "unregistered_recipient"
    assert remove_expired(db, last) == 0
    assert remove_expired(db, last + 1) == 1
    assert recipients(db) == [(BOB.did, 1, bob_mail.size, 10_000)]
    assert held_for(db, ALICE.did) == 0
    assert list_envelopes(db, BOB.did, None, 10, last + 1).ids == [bob_mail.id]


def test_a_registration_that_expires_before_its_mail_takes_the_mail_with_it(
    db: peewee.SqliteDatabase,
) -> None:
    register(db, lasting(ALICE, 1), T0)
    mail = envelope(ALICE, ALICE, expires=T0 + 5 * DAY)
    put(db, mail, ALICE)
    assert remove_expired(db, T0 + DAY) == 1
    assert recipients(db) == []
    assert relay_status(db) == relay_status(db).__class__(recipients=0, envelopes=0, bytes=0)
    # Registered again: the counter starts from what is held, nothing.
    register(db, registration(ALICE, issued=T0 + DAY), T0 + DAY)
    assert recipients(db) == [(ALICE.did, 0, 0, 10_000)]


def test_a_reader_does_not_list_what_it_deposited(db: peewee.SqliteDatabase) -> None:
    register(db, registration(ALICE, allowed=(BOB.did,)), T0)
    laptop, phone = "12D3KooWLaptop", "12D3KooWPhone"
    from_laptop = [envelope(ALICE, ALICE, payload=bytes([n])) for n in range(3)]
    from_phone = envelope(ALICE, ALICE, payload=b"phone")
    from_bob = envelope(BOB, ALICE, payload=b"bob")
    put(db, from_laptop[0], ALICE, depositor=laptop)
    put(db, from_phone, ALICE, depositor=phone)
    put(db, from_laptop[1], ALICE, depositor=laptop)
    put(db, from_bob, BOB)
    put(db, from_laptop[2], ALICE, depositor=laptop)
    assert list_envelopes(db, ALICE.did, None, 10, T0, reader=laptop).ids == [
        from_phone.id,
        from_bob.id,
    ]
    assert list_envelopes(db, ALICE.did, None, 10, T0, reader=phone).ids == [
        from_laptop[0].id,
        from_laptop[1].id,
        from_bob.id,
        from_laptop[2].id,
    ]
    # Paging with a reader: the cursor moves past what was shown.
    first = list_envelopes(db, ALICE.did, None, 1, T0, reader=laptop)
    assert first.ids == [from_phone.id]
    second = list_envelopes(db, ALICE.did, first.next_cursor, 1, T0, reader=laptop)
    assert second.ids == [from_bob.id]
    assert list_envelopes(db, ALICE.did, second.next_cursor, 1, T0, reader=laptop).ids == []
    # Without a reader, everything.
    assert len(list_envelopes(db, ALICE.did, None, 10, T0).ids) == 5


def test_a_cursor_that_is_not_the_relays_is_refused_as_malformed(
    db: peewee.SqliteDatabase,
) -> None:
    register(db, registration(ALICE), T0)
    with pytest.raises(RelayRefused) as caught:
        list_envelopes(db, ALICE.did, "not-a-number", 10, T0)
    assert caught.value.code == "malformed"


def test_foreign_ids_are_those_held_for_someone_else(db: peewee.SqliteDatabase) -> None:
    register(db, registration(ALICE), T0)
    register(db, registration(BOB), T0)
    alices = envelope(ALICE, ALICE)
    bobs = [envelope(BOB, BOB, payload=bytes([n])) for n in range(2)]
    put(db, alices, ALICE)
    for mail in bobs:
        put(db, mail, BOB)
    unknown = "c" * 64
    assert foreign_ids(db, ALICE.did, [alices.id, unknown]) == []
    assert sorted(foreign_ids(db, ALICE.did, [alices.id, bobs[0].id, bobs[1].id])) == sorted(
        [bobs[0].id, bobs[1].id]
    )
    assert foreign_ids(db, BOB.did, [alices.id]) == [alices.id]
    assert foreign_ids(db, CAROL.did, []) == []
    assert (
        held_for(db, ALICE.did) == 1 and held_for(db, BOB.did) == 2 and held_for(db, CAROL.did) == 0
    )


def test_recipients_lists_each_registration_with_its_mail_in_did_order(
    db: peewee.SqliteDatabase,
) -> None:
    people = [ALICE, BOB, CAROL]
    for person in people:
        register(db, registration(person, quota=5000 + 1000 * people.index(person)), T0)
    alice_mail = [envelope(ALICE, ALICE, payload=bytes([n])) for n in range(2)]
    for mail in alice_mail:
        put(db, mail, ALICE)
    carol_mail = envelope(CAROL, CAROL, payload=b"c" * 40)
    put(db, carol_mail, CAROL)
    expected = sorted(
        [
            (ALICE.did, 2, sum(m.size for m in alice_mail), 5000),
            (BOB.did, 0, 0, 6000),
            (CAROL.did, 1, carol_mail.size, 7000),
        ]
    )
    assert recipients(db) == expected


def test_registration_of_is_the_newest_current_registration(db: peewee.SqliteDatabase) -> None:
    assert registration_of(db, ALICE.did, T0) is None
    first = registration(ALICE, quota=1000, issued=T0)
    register(db, first, T0)
    assert registration_of(db, ALICE.did, T0) == first
    newer = registration(ALICE, quota=2000, issued=T0 + 10)
    register(db, newer, T0 + 10)
    assert registration_of(db, ALICE.did, T0 + 10) == newer
    assert recipients(db) == [(ALICE.did, 0, 0, 2000)]
    assert registration_of(db, ALICE.did, newer.expires_at_ms) is None
    assert registration_of(db, BOB.did, T0) is None


def test_a_new_registration_keeps_the_bytes_already_held(db: peewee.SqliteDatabase) -> None:
    register(db, registration(ALICE, quota=10_000), T0)
    mail = envelope(ALICE, ALICE, payload=b"x" * 500)
    put(db, mail, ALICE)
    # Renewed with a smaller quota than what is held: the mail stays and counts.
    register(db, registration(ALICE, quota=mail.size, issued=T0 + 1), T0 + 1)
    assert recipients(db) == [(ALICE.did, 1, mail.size, mail.size)]
    assert refusal(db, envelope(ALICE, ALICE, payload=b"y"), ALICE) == "over_quota"


def test_migration_7_counts_the_bytes_a_relay_held_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = peewee.SqliteDatabase(str(tmp_path / "old-relay.db"))
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:6])
    assert migrate(db) == 6
    register(db, registration(ALICE), T0)
    register(db, registration(BOB), T0)
    held = [envelope(ALICE, ALICE, payload=bytes([n]) * (n + 1) * 30) for n in range(3)]
    with db.atomic():
        connection(db).executemany(
            "INSERT INTO relay_envelope (id, recipient_did, size, expires_at_ms, deposited_by,"
            " deposited_at_ms, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (m.id, ALICE.did, m.size, m.expires_at_ms, ALICE.peer_id, T0, m.to_wire())
                for m in held
            ],
        )
    monkeypatch.undo()
    assert migrate(db) == migrations.SCHEMA_VERSION
    assert schema_version(db) >= 7
    assert recipients(db) == sorted(
        [(ALICE.did, 3, sum(m.size for m in held), 10_000), (BOB.did, 0, 0, 10_000)]
    )
    ack(db, ALICE.did, [held[0].id])
    assert used(db, ALICE.did) == held[1].size + held[2].size
    db.close()
