"""The peer table: upsert semantics of `record_peer_seen`."""

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from store.database import open_database
from store.peers import PeerRow, list_peers, record_peer_seen

ADDR_A = "/ip4/192.0.2.1/tcp/4001"
ADDR_B = "/ip4/192.0.2.2/udp/4001/quic-v1"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    db = open_database(tmp_path / "vault.db")
    yield db
    db.close()


def test_no_peers_at_first(db: peewee.SqliteDatabase) -> None:
    assert list_peers(db) == []


def test_a_new_peer_is_inserted(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-a", [ADDR_A], 100, did="did:key:z6MkA")
    assert list_peers(db) == [
        PeerRow(peer_id="peer-a", did="did:key:z6MkA", addrs=(ADDR_A,), last_seen_ms=100)
    ]


def test_a_new_peer_without_did(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-a", [], 100)
    assert list_peers(db) == [PeerRow(peer_id="peer-a", did=None, addrs=(), last_seen_ms=100)]


def test_seeing_a_peer_again_replaces_addrs_and_time_and_keeps_did(
    db: peewee.SqliteDatabase,
) -> None:
    record_peer_seen(db, "peer-a", [ADDR_A], 100, did="did:key:z6MkA")
    record_peer_seen(db, "peer-a", [ADDR_B], 200)
    assert list_peers(db) == [
        PeerRow(peer_id="peer-a", did="did:key:z6MkA", addrs=(ADDR_B,), last_seen_ms=200)
    ]


def test_a_given_did_replaces_the_stored_one(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-a", [ADDR_A], 100)
    record_peer_seen(db, "peer-a", [ADDR_A], 150, did="did:key:z6MkA")
    record_peer_seen(db, "peer-a", [ADDR_A], 200, did="did:key:z6MkA2")
    assert [peer.did for peer in list_peers(db)] == ["did:key:z6MkA2"]


def test_an_empty_address_list_keeps_the_stored_one(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-a", [ADDR_A, ADDR_B], 100)
    record_peer_seen(db, "peer-a", [], 200)
    (peer,) = list_peers(db)
    assert peer.addrs == (ADDR_A, ADDR_B)
    assert peer.last_seen_ms == 200
    record_peer_seen(db, "peer-a", [ADDR_B], 300)
    assert list_peers(db)[0].addrs == (ADDR_B,)


def test_peers_are_listed_most_recently_seen_first(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-old", [], 100)
    record_peer_seen(db, "peer-new", [], 300)
    record_peer_seen(db, "peer-mid", [], 200)
    assert [peer.peer_id for peer in list_peers(db)] == ["peer-new", "peer-mid", "peer-old"]


def test_address_order_is_kept(db: peewee.SqliteDatabase) -> None:
    record_peer_seen(db, "peer-a", (ADDR_B, ADDR_A), 100)
    assert list_peers(db)[0].addrs == (ADDR_B, ADDR_A)
