"""The sharing store: circles, grants, revocations, access, share items and accepting them.

Alice shares from her vault; Bob and Carol are her friends (accepted connections made through
store.peering), Dave is not. Each person has a vault of their own with their identity saved.
"""

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nacl.public
import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation

from protocols.cid import content_id
from protocols.errors import MalformedInput
from protocols.share_bundle import BundleRefused, ShareBundle
from protocols.share_crypto import KeyContext, wrap_key
from protocols.sharing import GrantRevocation, Irrevocable, Permission, SharingGrant, TargetKind
from protocols.vault_records import SharingLevel
from store import peering, share_cursors
from store.access import AccessRule
from store.errors import AcuNotFound
from store.identity import IdentityRow, save_identity
from store.migration_v9_sharing import IRREVOCABLE
from store.share_delivery import (
    accept_bundle,
    accept_item,
    accept_revocation,
    bundles_for,
    list_received,
    share_items_for,
)
from store.sharing import (
    SharingRefused,
    access_for,
    add_circle_member,
    create_circle,
    list_circles,
    list_grants,
    remove_circle_member,
    revoke_grant,
    share_acu,
)
from store.sql import execute_sql
from store.vault import get_acu, import_conversation, list_acus


class Person:
    """An owner with one device, an X25519 key and a vault of their own."""

    def __init__(self, seed: int, path: Path) -> None:
        self.owner = Owner(count=1, seed=seed)
        self.did = self.owner.did
        self.signer = self.owner.devices[0].signer
        self.x25519 = nacl.public.PrivateKey(bytes([seed + 100]) * 32)
        self.db = self.owner.open_vault(path)
        save_identity(
            self.db,
            IdentityRow(
                did=self.did,
                signing_public_key=bytes(self.owner.identity_key.verify_key),
                encryption_public_key=bytes(self.x25519.public_key),
                encryption_key_binding=b"binding",
                created_at_ms=T0 - 2000,
            ),
        )

    @property
    def public_key(self) -> bytes:
        return bytes(self.x25519.public_key)

    @property
    def private_key(self) -> bytes:
        return bytes(self.x25519)

    def befriend(self, other: "Person") -> None:
        request_id = content_id({"request": [self.did, other.did]})
        request = peering.RequestRow(
            did=other.did,
            request_id=request_id,
            request=b"request",
            encryption_key=other.public_key,
            encryption_binding=b"binding",
            devices=(other.signer.device,),
        )
        peering.save_incoming_request(self.db, request, T0)
        peering.accept(self.db, other.did, request_id, b"acceptance", "trusted", T0)


@pytest.fixture
def people(tmp_path: Path) -> Iterator[dict[str, Person]]:
    found = {
        name: Person(seed, tmp_path / f"{name}.db")
        for seed, name in enumerate(("alice", "bob", "carol", "dave"), start=1)
    }
    alice = found["alice"]
    for name in ("bob", "carol"):
        alice.befriend(found[name])
        found[name].befriend(alice)
    import_conversation(alice.db, alice.signer, conversation(1), T0)
    yield found
    for person in found.values():
        person.db.close()


def acus(person: Person) -> list[str]:
    return [row.id for row in reversed(list_acus(person.db, limit=100).items)]


def rows(db: peewee.SqliteDatabase, table: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in execute_sql(db, f"SELECT * FROM {table} ORDER BY 1")]


SHARING_TABLES = (
    "circle",
    "circle_version",
    "circle_member_key",
    "share_content",
    "sharing_grant",
    "grant_revocation",
    "share_feed",
    "received_share",
    "received_revocation",
    "received_circle_key",
)


def snapshot(db: peewee.SqliteDatabase) -> dict[str, list[tuple[object, ...]]]:
    return {table: rows(db, table) for table in (*SHARING_TABLES, "acu", "sync_operation")}


def pull(grantor: Person, recipient: Person, now_ms: int = T0 + 10) -> list[str | None]:
    """Everything `recipient` may pull from `grantor`, accepted by the recipient."""
    items, more = share_items_for(grantor.db, recipient.did, 0, now_ms=now_ms, limit=1000)
    assert not more
    return [
        accept_item(
            recipient.db, item.to_wire(), encryption_key=recipient.private_key, now_ms=now_ms
        )
        for item in items
    ]


def received(person: Person, now_ms: int = T0 + 10) -> dict[str, str]:
    return {row.acu_id: row.content for row in list_received(person.db, now_ms=now_ms)}


# --- circles --------------------------------------------------------------------------------------


def test_circle_versions_follow_membership(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    created = create_circle(alice.db, alice.signer, "team", T0)
    assert (created.version, created.members) == (1, ())
    add_circle_member(alice.db, alice.signer, "team", bob.did, T0 + 1)
    both = add_circle_member(alice.db, alice.signer, "team", carol.did, T0 + 2)
    assert both.version == 3
    assert set(both.members) == {bob.did, carol.did}
    after = remove_circle_member(alice.db, alice.signer, "team", carol.did, T0 + 3)
    assert (after.version, after.members) == (4, (bob.did,))
    assert list_circles(alice.db) == [after]
    keys = [bytes(k) for (k,) in execute_sql(alice.db, "SELECT circle_key FROM circle_version")]
    assert len(set(keys)) == 4  # a new key for every version
    wrapped = execute_sql(
        alice.db, "SELECT member_did FROM circle_member_key WHERE version = 4"
    ).fetchall()
    assert wrapped == [(bob.did,)]


@pytest.mark.parametrize(
    ("action", "name", "who", "code"),
    [
        ("create", "team", None, "circle_exists"),
        ("create", "", None, "bad_name"),
        ("create", " padded", None, "bad_name"),
        ("create", "x" * 65, None, "bad_name"),
        ("create", "tab\there", None, "bad_name"),
        ("add", "nobody", "bob", "circle_not_found"),
        ("add", "team", "dave", "not_a_friend"),
        ("add", "team", "bob", "already_member"),
        ("remove", "team", "carol", "not_a_member"),
        ("remove", "nobody", "bob", "circle_not_found"),
    ],
)
def test_circle_refusals_change_nothing(
    people: dict[str, Person], action: str, name: str, who: str | None, code: str
) -> None:
    alice = people["alice"]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", people["bob"].did, T0)
    before = snapshot(alice.db)
    with pytest.raises(SharingRefused) as refused:
        if action == "create":
            create_circle(alice.db, alice.signer, name, T0 + 1)
        elif action == "add":
            assert who is not None
            add_circle_member(alice.db, alice.signer, name, people[who].did, T0 + 1)
        else:
            assert who is not None
            remove_circle_member(alice.db, alice.signer, name, people[who].did, T0 + 1)
    assert refused.value.code == code
    assert snapshot(alice.db) == before


def test_not_a_friend_message_says_what_to_do(people: dict[str, Person]) -> None:
    alice, dave = people["alice"], people["dave"]
    acu = acus(alice)[0]
    with pytest.raises(SharingRefused, match="is not a friend: run `vivim-node friend add"):
        share_acu(alice.db, alice.signer, acu, TargetKind.DID, dave.did, T0)


def test_a_blocked_friend_cannot_be_named(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    peering.block(alice.db, bob.did, T0)
    create_circle(alice.db, alice.signer, "team", T0)
    with pytest.raises(SharingRefused, match="not a friend"):
        add_circle_member(alice.db, alice.signer, "team", bob.did, T0)
    with pytest.raises(SharingRefused, match="not a friend"):
        share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)


# --- grants ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "level"),
    [
        (TargetKind.DID, SharingLevel.CIRCLES),
        (TargetKind.CIRCLE, SharingLevel.CIRCLES),
        (TargetKind.NETWORK, SharingLevel.NETWORK),
        (TargetKind.GLOBAL, SharingLevel.GLOBAL),
    ],
)
def test_share_raises_the_level_and_signs_a_grant(
    people: dict[str, Person], kind: TargetKind, level: SharingLevel
) -> None:
    alice, bob = people["alice"], people["bob"]
    create_circle(alice.db, alice.signer, "team", T0)
    acu = acus(alice)[0]
    target = {TargetKind.DID: bob.did, TargetKind.CIRCLE: "team"}.get(kind)
    info = share_acu(
        alice.db,
        alice.signer,
        acu,
        kind,
        target,
        T0 + 1,
        permissions=Permission.REMIX,
    )
    assert info.permissions == ("remix", "view")
    assert info.grantor_device == alice.signer.device
    found = get_acu(alice.db, acu)
    assert found is not None and found.sharing_level is level
    (wire,) = execute_sql(alice.db, "SELECT wire FROM sharing_grant").fetchone()
    grant = SharingGrant.from_wire(bytes(wire))
    grant.verify()
    assert grant.id == info.id
    contents = rows(alice.db, "share_content")
    assert len(contents) == (0 if kind is TargetKind.GLOBAL else 1)


def test_the_content_key_is_drawn_once_per_acu(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    acu = acus(alice)[0]
    share_acu(alice.db, alice.signer, acu, TargetKind.DID, bob.did, T0)
    first = rows(alice.db, "share_content")
    share_acu(alice.db, alice.signer, acu, TargetKind.DID, carol.did, T0 + 1)
    assert rows(alice.db, "share_content") == first
    assert len(list_grants(alice.db, acu)) == 2


def test_sharing_never_lowers_the_level(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    acu = acus(alice)[0]
    share_acu(alice.db, alice.signer, acu, TargetKind.NETWORK, None, T0)
    share_acu(alice.db, alice.signer, acu, TargetKind.DID, bob.did, T0 + 1)
    found = get_acu(alice.db, acu)
    assert found is not None and found.sharing_level is SharingLevel.NETWORK


@pytest.mark.parametrize(
    ("kind", "target", "error"),
    [
        (TargetKind.DID, "dave", "not_a_friend"),
        (TargetKind.DID, "alice", "bad_target"),
        (TargetKind.CIRCLE, "nobody", "circle_not_found"),
        (TargetKind.CIRCLE, None, "bad_target"),
        (TargetKind.NETWORK, "bob", "bad_target"),
        (TargetKind.GLOBAL, "bob", "bad_target"),
    ],
)
def test_share_refusals_change_nothing(
    people: dict[str, Person], kind: TargetKind, target: str | None, error: str
) -> None:
    alice = people["alice"]
    acu = acus(alice)[0]
    name = people[target].did if target in people else target
    before = snapshot(alice.db)
    with pytest.raises(SharingRefused) as refused:
        share_acu(alice.db, alice.signer, acu, kind, name, T0)
    assert refused.value.code == error
    assert snapshot(alice.db) == before


def test_share_of_an_unknown_acu(people: dict[str, Person]) -> None:
    alice = people["alice"]
    with pytest.raises(AcuNotFound):
        share_acu(alice.db, alice.signer, content_id("nothing"), TargetKind.NETWORK, None, T0)


def test_revoke_then_revoke_again(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    grant = share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)
    revoked = revoke_grant(alice.db, alice.signer, grant.id, T0 + 5)
    assert revoked.revoked_at_ms == T0 + 5
    before = snapshot(alice.db)
    with pytest.raises(SharingRefused, match="revoked already"):
        revoke_grant(alice.db, alice.signer, grant.id, T0 + 6)
    with pytest.raises(SharingRefused) as unknown:
        revoke_grant(alice.db, alice.signer, content_id("no grant"), T0 + 6)
    assert unknown.value.code == "grant_not_found"
    assert snapshot(alice.db) == before


def test_a_global_grant_is_irrevocable(people: dict[str, Person]) -> None:
    alice = people["alice"]
    grant = share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.GLOBAL, None, T0)
    before = snapshot(alice.db)
    with pytest.raises(Irrevocable):
        revoke_grant(alice.db, alice.signer, grant.id, T0 + 1)
    assert snapshot(alice.db) == before


# --- triggers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE sharing_grant SET expires_at_ms = 1",
        "DELETE FROM sharing_grant",
        "UPDATE grant_revocation SET revoked_at_ms = 1",
        "DELETE FROM grant_revocation",
        "UPDATE circle_version SET created_at_ms = 1",
        "DELETE FROM circle_member_key",
        "INSERT OR REPLACE INTO sharing_grant SELECT * FROM sharing_grant",
    ],
)
def test_grants_and_revocations_are_append_only(people: dict[str, Person], statement: str) -> None:
    alice, bob = people["alice"], people["bob"]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", bob.did, T0)
    grant = share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)
    revoke_grant(alice.db, alice.signer, grant.id, T0 + 1)
    before = snapshot(alice.db)
    with pytest.raises(peewee.IntegrityError, match="append-only"):
        execute_sql(alice.db, statement)
    assert snapshot(alice.db) == before


def test_the_trigger_refuses_a_global_revocation_in_raw_sql(people: dict[str, Person]) -> None:
    alice = people["alice"]
    acu = acus(alice)[0]
    grant = share_acu(alice.db, alice.signer, acu, TargetKind.GLOBAL, None, T0)
    before = snapshot(alice.db)
    raw = sqlite3.connect(alice.db.database)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=IRREVOCABLE):
            raw.execute(
                "INSERT INTO grant_revocation (id, grant_id, acu_id, wire, revoked_at_ms)"
                " VALUES (?, ?, ?, x'00', 1)",
                (content_id("revocation"), grant.id, acu),
            )
    finally:
        raw.close()
    assert snapshot(alice.db) == before
    assert IRREVOCABLE.startswith("IRREVOCABLE")


def test_received_shares_are_append_only(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)
    pull(alice, bob)
    for statement in ("UPDATE received_share SET content = 'x'", "DELETE FROM received_share"):
        with pytest.raises(peewee.IntegrityError, match="append-only"):
            execute_sql(bob.db, statement)


# --- access ---------------------------------------------------------------------------------------


def test_access_for_reads_the_tables(people: dict[str, Person]) -> None:
    alice, bob, carol, dave = (people[n] for n in ("alice", "bob", "carol", "dave"))
    first, second, third = acus(alice)[:3]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", carol.did, T0)
    direct = share_acu(alice.db, alice.signer, first, TargetKind.DID, bob.did, T0)
    share_acu(alice.db, alice.signer, first, TargetKind.CIRCLE, "team", T0)
    share_acu(alice.db, alice.signer, second, TargetKind.NETWORK, None, T0)
    share_acu(alice.db, alice.signer, third, TargetKind.GLOBAL, None, T0)
    table = [
        (first, alice, AccessRule.OWNER),
        (first, bob, AccessRule.DIRECT),
        (first, carol, AccessRule.CIRCLE),
        (first, dave, AccessRule.DENIED),
        (second, bob, AccessRule.NETWORK),
        (second, dave, AccessRule.DENIED),
        (third, dave, AccessRule.GLOBAL),
    ]
    for acu, who, rule in table:
        assert access_for(alice.db, acu, who.did, T0 + 1).rule is rule, (acu, who.did)
    revoke_grant(alice.db, alice.signer, direct.id, T0 + 2)
    assert access_for(alice.db, first, bob.did, T0 + 3).rule is AccessRule.DENIED
    remove_circle_member(alice.db, alice.signer, "team", carol.did, T0 + 4)
    assert access_for(alice.db, first, carol.did, T0 + 5).rule is AccessRule.DENIED
    with pytest.raises(AcuNotFound):
        access_for(alice.db, content_id("nothing"), bob.did, T0)


# --- share items and accepting them ---------------------------------------------------------------


@pytest.mark.parametrize("kind", [TargetKind.DID, TargetKind.CIRCLE, TargetKind.NETWORK])
def test_a_share_reaches_its_recipient_decrypted(
    people: dict[str, Person], kind: TargetKind
) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", bob.did, T0)
    acu = acus(alice)[0]
    target = {TargetKind.DID: bob.did, TargetKind.CIRCLE: "team"}.get(kind)
    grant = share_acu(
        alice.db, alice.signer, acu, kind, target, T0, permissions=Permission.ANNOTATE
    )
    assert pull(alice, bob) == [grant.id]
    source = get_acu(alice.db, acu)
    assert source is not None
    assert received(bob) == {acu: source.content}
    (row,) = list_received(bob.db, now_ms=T0 + 10)
    assert row.permissions == ("annotate", "view")
    assert row.author == alice.did
    # Idempotent: pulled again, nothing new.
    before = snapshot(bob.db)
    assert pull(alice, bob) == [grant.id]
    assert snapshot(bob.db) == before
    # A stranger gets nothing, not even that the ACU exists.
    assert share_items_for(alice.db, dave.did, 0, now_ms=T0) == ([], False)


def test_a_friend_without_a_grant_gets_nothing(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)
    assert share_items_for(alice.db, carol.did, 0, now_ms=T0) == ([], False)


def test_circle_removal_makes_later_shares_unreadable(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    first, second = acus(alice)[:2]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", bob.did, T0)
    add_circle_member(alice.db, alice.signer, "team", carol.did, T0)
    share_acu(alice.db, alice.signer, first, TargetKind.CIRCLE, "team", T0 + 1)
    pull(alice, bob)
    pull(alice, carol)
    assert set(received(carol)) == {first}
    remove_circle_member(alice.db, alice.signer, "team", carol.did, T0 + 2)
    share_acu(alice.db, alice.signer, second, TargetKind.CIRCLE, "team", T0 + 3)
    pull(alice, bob)
    pull(alice, carol)
    assert set(received(bob)) == {first, second}
    assert set(received(carol)) == {first}  # what was received stays; nothing new
    # Even handed the bundle made for Bob, Carol cannot open it: the new key is not hers.
    bundle = bundles_for(alice.db, bob.did, now_ms=T0 + 4)[-1]
    before = snapshot(carol.db)
    with pytest.raises(BundleRefused) as refused:
        accept_bundle(carol.db, bundle, encryption_key=carol.private_key, now_ms=T0 + 4)
    assert refused.value.code == "not_for_us"
    assert snapshot(carol.db) == before


def test_a_member_added_later_reads_the_circles_earlier_shares(
    people: dict[str, Person],
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    create_circle(alice.db, alice.signer, "team", T0)
    add_circle_member(alice.db, alice.signer, "team", bob.did, T0)
    acu = acus(alice)[0]
    share_acu(alice.db, alice.signer, acu, TargetKind.CIRCLE, "team", T0 + 1)
    direct = acus(alice)[1]
    share_acu(alice.db, alice.signer, direct, TargetKind.DID, carol.did, T0 + 1)
    items, _ = share_items_for(alice.db, carol.did, 0, now_ms=T0 + 2)
    cursor = items[-1].position
    add_circle_member(alice.db, alice.signer, "team", carol.did, T0 + 3)
    later, more = share_items_for(alice.db, carol.did, cursor, now_ms=T0 + 4)
    assert not more and len(later) == 1 and later[0].position > cursor
    for item in later:
        accept_item(carol.db, item.to_wire(), encryption_key=carol.private_key, now_ms=T0 + 4)
    assert acu in received(carol)


def test_revocation_travels_and_stops_new_bundles(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    acu = acus(alice)[0]
    grant = share_acu(alice.db, alice.signer, acu, TargetKind.DID, bob.did, T0)
    pull(alice, bob)
    revoke_grant(alice.db, alice.signer, grant.id, T0 + 1)
    assert bundles_for(alice.db, bob.did, now_ms=T0 + 2) == []
    assert pull(alice, bob, T0 + 2) == [grant.id]  # the revocation
    (row,) = list_received(bob.db, now_ms=T0 + 2)
    assert row.revoked and row.permissions == ()
    assert row.content  # what was received stays readable
    before = snapshot(bob.db)
    assert pull(alice, bob, T0 + 3) == [None]  # held already
    assert snapshot(bob.db) == before


def test_cursor_pages(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    for acu in acus(alice)[:5]:
        share_acu(alice.db, alice.signer, acu, TargetKind.DID, bob.did, T0)
    first, more = share_items_for(alice.db, bob.did, 0, now_ms=T0, limit=2)
    assert more and len(first) == 2
    rest, more = share_items_for(alice.db, bob.did, first[-1].position, now_ms=T0, limit=10)
    assert not more and len(rest) == 3
    positions = [item.position for item in (*first, *rest)]
    assert positions == sorted(set(positions))


# --- tampered bundles -----------------------------------------------------------------------------


def _direct_bundle(people: dict[str, Person]) -> ShareBundle:
    alice, bob = people["alice"], people["bob"]
    share_acu(alice.db, alice.signer, acus(alice)[0], TargetKind.DID, bob.did, T0)
    (bundle,) = bundles_for(alice.db, bob.did, now_ms=T0)
    return bundle


def _forged_grant(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    grant = SharingGrant.from_wire(bundle.grant)
    forged = replace(grant, permissions=grant.permissions | Permission.RESHARE)
    return replace(bundle, grant=forged.to_wire())


def _other_ciphertext(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    alice, bob = people["alice"], people["bob"]
    share_acu(alice.db, alice.signer, acus(alice)[1], TargetKind.DID, bob.did, T0)
    other = bundles_for(alice.db, bob.did, now_ms=T0)[-1]
    return replace(bundle, ciphertext=other.ciphertext)


def _rewrapped_for_dave(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    # A grant signed by Alice's device key, but by someone holding it for another DID.
    grant = SharingGrant.from_wire(bundle.grant)
    signer = people["alice"].signer
    other = SharingGrant.create(
        signing_key=signer.signing_key,
        grantor_did=grant.grantor_did,
        acu_id=grant.acu_id,
        target_kind=TargetKind.DID,
        target=people["dave"].did,
        issued_at_ms=T0,
    )
    return replace(bundle, grant=other.to_wire())


def _garbage_key(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    wrapped = wrap_key(
        bytes(32),
        context=KeyContext.content(
            acu_id=SharingGrant.from_wire(bundle.grant).acu_id,
            grant_id=SharingGrant.from_wire(bundle.grant).id,
        ),
        recipient_x25519_public_key=people["bob"].public_key,
        ephemeral_private_key=bytes([7]) * 32,
    )
    return replace(bundle, wrapped_key=wrapped.to_wire())


def _no_credentials(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    dave = people["dave"].owner.devices[0].row
    return replace(bundle, certificate=dave.certificate)


def _flipped_ciphertext(people: dict[str, Person], bundle: ShareBundle) -> ShareBundle:
    return replace(bundle, ciphertext=bytes([bundle.ciphertext[0] ^ 1]) + bundle.ciphertext[1:])


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (_forged_grant, "forged"),
        (_other_ciphertext, "unreadable"),
        (_rewrapped_for_dave, "not_for_us"),
        (_garbage_key, "unreadable"),
        (_no_credentials, "untrusted_device"),
        (_flipped_ciphertext, "unreadable"),
    ],
)
def test_a_bad_bundle_is_refused_and_changes_nothing(
    people: dict[str, Person], tamper: object, code: str
) -> None:
    bob = people["bob"]
    bundle = _direct_bundle(people)
    assert callable(tamper)
    bad = tamper(people, bundle)
    before = snapshot(bob.db)
    with pytest.raises(BundleRefused) as refused:
        accept_bundle(bob.db, bad, encryption_key=bob.private_key, now_ms=T0 + 1)
    assert refused.value.code == code
    assert snapshot(bob.db) == before


def test_the_wrong_recipient_cannot_open_it(people: dict[str, Person]) -> None:
    alice, carol = people["alice"], people["carol"]
    bundle = _direct_bundle(people)
    before = snapshot(carol.db)
    with pytest.raises(BundleRefused) as refused:
        accept_bundle(carol.db, bundle, encryption_key=carol.private_key, now_ms=T0)
    assert refused.value.code == "not_for_us"
    assert snapshot(carol.db) == before
    assert share_items_for(alice.db, carol.did, 0, now_ms=T0) == ([], False)


def test_a_bundle_from_a_stranger_or_a_blocked_friend_is_refused(
    people: dict[str, Person],
) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    bundle = _direct_bundle(people)
    peering.block(bob.db, alice.did, T0)
    with pytest.raises(BundleRefused) as refused:
        accept_bundle(bob.db, bundle, encryption_key=bob.private_key, now_ms=T0)
    assert refused.value.code == "blocked"
    assert rows(bob.db, "received_share") == []
    with pytest.raises(BundleRefused) as stranger:
        accept_bundle(dave.db, bundle, encryption_key=dave.private_key, now_ms=T0)
    assert stranger.value.code == "not_for_us"


def test_an_expired_grant_is_refused(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    acu = acus(alice)[0]
    share_acu(alice.db, alice.signer, acu, TargetKind.DID, bob.did, T0, expires_at_ms=T0 + 5)
    (bundle,) = bundles_for(alice.db, bob.did, now_ms=T0)
    assert bundles_for(alice.db, bob.did, now_ms=T0 + 5) == []
    with pytest.raises(BundleRefused) as refused:
        accept_bundle(bob.db, bundle, encryption_key=bob.private_key, now_ms=T0 + 5)
    assert refused.value.code == "expired"


def test_a_revocation_not_by_the_grantor_or_forged_is_refused(
    people: dict[str, Person],
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    bundle = _direct_bundle(people)
    accept_bundle(bob.db, bundle, encryption_key=bob.private_key, now_ms=T0)
    grant = SharingGrant.from_wire(bundle.grant)
    by_carol = GrantRevocation.create(
        signing_key=carol.signer.signing_key, grant=grant, revoked_at_ms=T0
    )
    before = snapshot(bob.db)
    with pytest.raises(BundleRefused) as untrusted:
        accept_revocation(bob.db, by_carol, now_ms=T0)
    assert untrusted.value.code == "untrusted_device"
    forged = replace(
        GrantRevocation.create(signing_key=alice.signer.signing_key, grant=grant, revoked_at_ms=T0),
        revoked_at_ms=T0 + 1,
    )
    with pytest.raises(BundleRefused, match="signature"):
        accept_revocation(bob.db, forged, now_ms=T0)
    assert snapshot(bob.db) == before


def test_garbage_items_are_refused(people: dict[str, Person]) -> None:
    bob = people["bob"]
    for item in (b"", b"\xa0", ShareBundle.__name__.encode()):
        with pytest.raises(BundleRefused) as refused:
            accept_item(bob.db, item, encryption_key=bob.private_key, now_ms=T0)
        assert refused.value.code == "malformed"
    with pytest.raises(MalformedInput):
        ShareBundle.from_wire(b"\xa0")


# --- delivery cursors (store.share_cursors) -------------------------------------------------------


def test_delivery_cursors_start_at_zero_and_never_move_back(people: dict[str, Person]) -> None:
    db = people["dave"].db
    assert share_cursors.pull_cursor(db, "peer") == 0
    assert share_cursors.mailed_cursor(db, "did:key:z") == 0
    share_cursors.advance_pull_cursor(db, "peer", 7, 1)
    share_cursors.advance_pull_cursor(db, "peer", 3, 2)  # a late writer changes nothing
    share_cursors.advance_mailed_cursor(db, "did:key:z", 5, 1)
    share_cursors.advance_mailed_cursor(db, "did:key:z", 2, 2)
    assert share_cursors.pull_cursor(db, "peer") == 7
    assert share_cursors.mailed_cursor(db, "did:key:z") == 5
    assert share_cursors.pull_cursor(db, "other") == 0
    assert share_cursors.feed_head(db) == 0


def test_the_feed_head_moves_with_each_share(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    before = share_cursors.feed_head(alice.db)
    first, second = acus(alice)[:2]
    share_acu(alice.db, alice.signer, first, TargetKind.DID, bob.did, T0)
    after_one = share_cursors.feed_head(alice.db)
    share_acu(alice.db, alice.signer, second, TargetKind.NETWORK, None, T0)
    assert before < after_one < share_cursors.feed_head(alice.db)
