"""store.peering: invites spent once, one pending request per DID, accept and acceptance
naming the request, blocks, and the read functions the sharing mesh builds on."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from store.database import open_database
from store.peering import (
    DEFAULT_TRUST,
    Friend,
    PeeringRefused,
    RequestRow,
    accept,
    add_devices,
    block,
    blocked,
    connection_with,
    connections,
    create_invite,
    did_of_device,
    friend,
    friends,
    is_blocked,
    save_acceptance,
    save_incoming_request,
    save_outgoing_request,
    token_usable,
    unblock,
)

BOB = "did:key:z6MkBob"
CAROL = "did:key:z6MkCarol"
TOKEN = bytes(range(16))
KEY = b"\x07" * 32


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    db = open_database(tmp_path / "vault.db")
    yield db
    db.close()


def request(did: str = BOB, request_id: str = "req-1", token: bytes | None = None) -> RequestRow:
    return RequestRow(
        did=did,
        request_id=request_id,
        request=b"request wire " + request_id.encode(),
        encryption_key=KEY,
        encryption_binding=b"binding",
        devices=("12D3KooBobPhone",),
        addrs=("/ip4/127.0.0.1/tcp/1/p2p/12D3KooBobPhone",),
        relays=("/ip4/127.0.0.1/tcp/2/p2p/12D3KooRelay",),
        message="hi",
        token=token,
    )


def refusal(err: pytest.ExceptionInfo[PeeringRefused]) -> str:
    return err.value.code


def test_nothing_at_first(db: peewee.SqliteDatabase) -> None:
    assert friends(db) == []
    assert friend(db, BOB) is None
    assert did_of_device(db, "12D3KooBobPhone") is None
    assert not is_blocked(db, BOB)
    assert connections(db) == []


def test_an_incoming_request_is_pending_not_a_friend(db: peewee.SqliteDatabase) -> None:
    assert save_incoming_request(db, request(), 100)
    found = connection_with(db, BOB)
    assert found is not None
    assert (found.direction, found.state, found.trust) == ("incoming", "pending", DEFAULT_TRUST)
    assert found.acceptance is None
    assert not found.via_invite
    assert friend(db, BOB) is None
    assert did_of_device(db, "12D3KooBobPhone") == BOB


def test_the_same_request_again_changes_nothing(db: peewee.SqliteDatabase) -> None:
    assert save_incoming_request(db, request(token=None), 100)
    assert not save_incoming_request(db, request(), 200)
    found = connection_with(db, BOB)
    assert found is not None and found.updated_at_ms == 100


def test_a_second_request_from_a_pending_did_is_rate_limited(db: peewee.SqliteDatabase) -> None:
    save_incoming_request(db, request(), 100)
    with pytest.raises(PeeringRefused) as err:
        save_incoming_request(db, request(request_id="req-2"), 200)
    assert refusal(err) == "rate_limited"


def test_a_token_is_spent_by_the_first_request(db: peewee.SqliteDatabase) -> None:
    create_invite(db, TOKEN, 0, 1000)
    assert token_usable(db, TOKEN, 10)
    assert save_incoming_request(db, request(token=TOKEN), 10)
    found = connection_with(db, BOB)
    assert found is not None and found.via_invite
    assert not token_usable(db, TOKEN, 10)
    # a retry of the same request is still a duplicate, not a replay
    assert not save_incoming_request(db, request(token=TOKEN), 20)
    with pytest.raises(PeeringRefused) as err:
        save_incoming_request(db, request(CAROL, "req-c", token=TOKEN), 30)
    assert refusal(err) == "token_refused"
    assert connection_with(db, CAROL) is None


@pytest.mark.parametrize(
    ("token", "now"),
    [(b"\x01" * 16, 10), (TOKEN, 1000), (TOKEN, 5000)],
    ids=["unknown", "at expiry", "expired"],
)
def test_a_bad_token_is_refused_and_nothing_stored(
    db: peewee.SqliteDatabase, token: bytes, now: int
) -> None:
    create_invite(db, TOKEN, 0, 1000)
    with pytest.raises(PeeringRefused) as err:
        save_incoming_request(db, request(token=token), now)
    assert refusal(err) == "token_refused"
    assert connection_with(db, BOB) is None
    assert did_of_device(db, "12D3KooBobPhone") is None


def test_accept_holds_both_records(db: peewee.SqliteDatabase) -> None:
    save_incoming_request(db, request(), 100)
    accepted = accept(db, BOB, "req-1", b"acceptance wire", "close", 200)
    assert accepted.state == "accepted"
    assert accepted.request == b"request wire req-1"
    assert accepted.acceptance == b"acceptance wire"
    assert friends(db) == [
        Friend(
            did=BOB,
            encryption_key=KEY,
            trust="close",
            devices=("12D3KooBobPhone",),
            addrs=("/ip4/127.0.0.1/tcp/1/p2p/12D3KooBobPhone",),
            relays=("/ip4/127.0.0.1/tcp/2/p2p/12D3KooRelay",),
        )
    ]
    assert friend(db, BOB) == friends(db)[0]


def test_accept_refuses_an_unknown_request_and_a_bad_trust(db: peewee.SqliteDatabase) -> None:
    with pytest.raises(PeeringRefused) as err:
        accept(db, BOB, "req-1", b"a", "trusted", 200)
    assert refusal(err) == "unknown_request"
    save_incoming_request(db, request(), 100)
    with pytest.raises(PeeringRefused):
        accept(db, BOB, "req-other", b"a", "trusted", 200)
    with pytest.raises(ValueError, match="trust"):
        accept(db, BOB, "req-1", b"a", "bestie", 200)
    found = connection_with(db, BOB)
    assert found is not None and found.state == "pending"


def test_an_accepted_friend_cannot_request_again(db: peewee.SqliteDatabase) -> None:
    save_incoming_request(db, request(), 100)
    accept(db, BOB, "req-1", b"a", "trusted", 200)
    with pytest.raises(PeeringRefused) as err:
        save_incoming_request(db, request(request_id="req-2"), 300)
    assert refusal(err) == "already_connected"


def test_an_outgoing_request_becomes_a_friend_by_its_acceptance(db: peewee.SqliteDatabase) -> None:
    save_outgoing_request(db, request(), 100)
    found = connection_with(db, BOB)
    assert found is not None and (found.direction, found.state) == ("outgoing", "pending")
    with pytest.raises(PeeringRefused) as err:
        save_acceptance(
            db,
            did=BOB,
            request_id="req-x",
            acceptance=b"a",
            devices=(),
            addrs=(),
            relays=(),
            now_ms=1,
        )
    assert refusal(err) == "unknown_request"
    assert save_acceptance(
        db,
        did=BOB,
        request_id="req-1",
        acceptance=b"acc",
        devices=("12D3KooBobLaptop",),
        addrs=("/ip4/127.0.0.1/tcp/9/p2p/12D3KooBobLaptop",),
        relays=(),
        now_ms=200,
    )
    got = friend(db, BOB)
    assert got is not None
    assert got.devices == ("12D3KooBobPhone", "12D3KooBobLaptop")
    assert got.addrs == ("/ip4/127.0.0.1/tcp/9/p2p/12D3KooBobLaptop",)
    assert not save_acceptance(
        db,
        did=BOB,
        request_id="req-1",
        acceptance=b"acc",
        devices=(),
        addrs=(),
        relays=(),
        now_ms=300,
    )


def test_their_request_replaces_our_outgoing_one(db: peewee.SqliteDatabase) -> None:
    save_outgoing_request(db, request(request_id="ours"), 100)
    assert save_incoming_request(db, request(request_id="theirs"), 200)
    found = connection_with(db, BOB)
    assert found is not None and (found.direction, found.request_id) == ("incoming", "theirs")
    with pytest.raises(PeeringRefused) as err:
        save_outgoing_request(db, request(request_id="again"), 300)
    assert refusal(err) == "rate_limited"


def test_block_ends_the_connection_and_refuses_later_requests(db: peewee.SqliteDatabase) -> None:
    save_incoming_request(db, request(), 100)
    accept(db, BOB, "req-1", b"a", "trusted", 200)
    assert block(db, BOB, 300)
    assert not block(db, BOB, 400)
    assert is_blocked(db, BOB)
    assert blocked(db) == [BOB]
    assert friends(db) == []
    assert did_of_device(db, "12D3KooBobPhone") is None
    for write in (
        lambda: save_incoming_request(db, request(request_id="req-2"), 500),
        lambda: save_outgoing_request(db, request(request_id="req-3"), 500),
        lambda: save_acceptance(
            db,
            did=BOB,
            request_id="req-1",
            acceptance=b"a",
            devices=(),
            addrs=(),
            relays=(),
            now_ms=1,
        ),
    ):
        with pytest.raises(PeeringRefused) as err:
            write()
        assert refusal(err) == "blocked"
    assert connections(db) == []


def test_unblock_takes_requests_again_but_makes_no_friend(db: peewee.SqliteDatabase) -> None:
    save_incoming_request(db, request(), 100)
    accept(db, BOB, "req-1", b"a", "trusted", 200)
    block(db, BOB, 300)
    assert unblock(db, BOB)
    assert not unblock(db, BOB)  # not blocked any more
    assert not is_blocked(db, BOB)
    assert blocked(db) == []
    assert friends(db) == []  # the connection block ended stays ended
    save_incoming_request(db, request(request_id="req-2"), 400)
    assert did_of_device(db, "12D3KooBobPhone") == BOB


def test_a_blocked_did_does_not_spend_a_token(db: peewee.SqliteDatabase) -> None:
    create_invite(db, TOKEN, 0, 1000)
    block(db, BOB, 1)
    with pytest.raises(PeeringRefused):
        save_incoming_request(db, request(token=TOKEN), 10)
    assert token_usable(db, TOKEN, 10)


def test_add_devices_only_for_a_known_did(db: peewee.SqliteDatabase) -> None:
    add_devices(db, BOB, ["12D3KooStray"], 1)
    assert did_of_device(db, "12D3KooStray") is None
    save_incoming_request(db, request(), 100)
    add_devices(db, BOB, ["12D3KooBobTablet"], 200)
    assert did_of_device(db, "12D3KooBobTablet") == BOB
