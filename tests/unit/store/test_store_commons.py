"""The global commons' store: publishing (level, grant, versions), the apply path for received
publications, and the append-only table (triggers refuse UPDATE and DELETE in raw SQL)."""

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest
from test_store_vault_support import T0, Owner, conversation

from protocols.identity_records import EncryptionKeyBinding
from protocols.publication import GlobalPublication, SubjectKind, verify_publication
from protocols.sharing import Irrevocable, TargetKind
from protocols.vault_records import SharingLevel
from store.commons import (
    PublicationImmutable,
    PublicationNotFound,
    SubjectNotFound,
    advance_cursor,
    decoded_content,
    delete_publication,
    get_publication,
    list_publications,
    publications_after,
    publish,
    pull_cursor,
    store_publications,
)
from store.identity import IdentityRow, save_identity
from store.sharing import list_grants, revoke_grant
from store.sql import execute_sql
from store.vault import get_acu, import_conversation, list_acus, list_conversations


@pytest.fixture
def owner() -> Owner:
    return Owner(count=1)


def open_vault(owner: Owner, path: Path) -> peewee.SqliteDatabase:
    db = owner.open_vault(path)
    binding = EncryptionKeyBinding.create(
        signing_key=owner.identity_key,
        did=owner.did,
        encryption_public_key=bytes(32),
        key_version=1,
        issued_at_ms=T0 - 2000,
    )
    save_identity(
        db,
        IdentityRow(
            did=owner.did,
            signing_public_key=bytes(owner.identity_key.verify_key),
            encryption_public_key=bytes(32),
            encryption_key_binding=binding.to_wire(),
            created_at_ms=T0 - 2000,
        ),
    )
    return db


@pytest.fixture
def db(tmp_path: Path, owner: Owner) -> Iterator[peewee.SqliteDatabase]:
    db = open_vault(owner, tmp_path / "vault.db")
    import_conversation(db, owner.devices[0].signer, conversation(1), T0)
    yield db
    db.close()


@pytest.fixture
def other(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    """A stranger's vault (another DID)."""
    db = open_vault(Owner(count=1, seed=7), tmp_path / "stranger.db")
    yield db
    db.close()


def an_acu(db: peewee.SqliteDatabase) -> str:
    return list_acus(db).items[-1].id


def test_publish_an_acu_raises_its_level_grants_and_signs(
    db: peewee.SqliteDatabase, owner: Owner
) -> None:
    acu = an_acu(db)
    published = publish(
        db, owner.devices[0].signer, acu, title="T", tags=["b", "a"], license="MIT", now_ms=T0 + 1
    )
    publication = published.publication
    verify_publication(publication)
    assert (publication.subject_kind, publication.version, publication.previous_id) == (
        SubjectKind.ACU,
        1,
        None,
    )
    assert publication.tags == ("a", "b")
    row = get_acu(db, acu)
    assert row is not None
    assert row.sharing_level is SharingLevel.GLOBAL
    [grant] = list_grants(db, acu)
    assert published.grants == (grant.id,)
    assert grant.target_kind == TargetKind.GLOBAL.value
    with pytest.raises(Irrevocable):
        revoke_grant(db, owner.devices[0].signer, grant.id, T0 + 2)
    held = get_publication(db, publication.id)
    assert held is not None
    assert held[1] == publication
    assert held[0].received_from is None
    content = decoded_content(publication)
    assert isinstance(content, dict)
    assert content["acu"]["id"] == acu  # type: ignore[index]


def test_publish_a_conversation_carries_messages_and_acus(
    db: peewee.SqliteDatabase, owner: Owner
) -> None:
    conversation_id = list_conversations(db).items[0].id
    published = publish(db, owner.devices[0].signer, conversation_id, now_ms=T0 + 1)
    verify_publication(published.publication)
    content = decoded_content(published.publication)
    assert isinstance(content, dict)
    assert len(content["messages"]) == 6
    assert len(content["acus"]) == len(published.grants) == len(list_acus(db).items)
    assert all(a.sharing_level is SharingLevel.GLOBAL for a in list_acus(db).items)


def test_publishing_again_is_the_next_version(db: peewee.SqliteDatabase, owner: Owner) -> None:
    acu = an_acu(db)
    signer = owner.devices[0].signer
    first = publish(db, signer, acu, now_ms=T0 + 1).publication
    second = publish(db, signer, acu, title="again", now_ms=T0 + 2).publication
    third = publish(db, signer, acu, now_ms=T0 + 3).publication
    assert [p.version for p in (first, second, third)] == [1, 2, 3]
    assert len(list_grants(db, acu)) == 1  # one global grant, whatever the versions
    assert (second.previous_id, third.previous_id) == (first.id, second.id)
    assert [r.id for r in list_publications(db)] == [third.id, second.id, first.id]


def test_unknown_subject(db: peewee.SqliteDatabase, owner: Owner) -> None:
    with pytest.raises(SubjectNotFound):
        publish(db, owner.devices[0].signer, "bafyreinotthere", now_ms=T0)


def test_received_publications_are_stored_once(
    db: peewee.SqliteDatabase, other: peewee.SqliteDatabase, owner: Owner
) -> None:
    publication = publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1).publication
    report = store_publications(other, [publication], received_from="peer", now_ms=T0 + 2)
    assert report.stored == (publication.id,)
    again = store_publications(other, [publication], received_from="peer2", now_ms=T0 + 3)
    assert (again.stored, again.known, again.refused) == ((), 1, ())
    held = get_publication(other, publication.id)
    assert held is not None
    assert held[0].received_from == "peer"
    assert publications_after(other, 0, 10) == [(1, publication.to_wire())]
    assert publications_after(other, 1, 10) == []


def test_an_altered_copy_is_refused_by_the_apply_path(
    db: peewee.SqliteDatabase, other: peewee.SqliteDatabase, owner: Owner
) -> None:
    publication = publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1).publication
    store_publications(other, [publication], received_from="peer", now_ms=T0 + 2)
    # Same signed bytes (same id), other signature bytes: never replaces what is held.
    altered = replace(publication, signature=bytes(64))
    assert altered.id == publication.id
    report = store_publications(other, [altered], received_from="peer", now_ms=T0 + 3)
    assert report.stored == ()
    assert [r[0] for r in report.refused] == [publication.id]
    held = get_publication(other, publication.id)
    assert held is not None
    assert held[1] == publication


def test_api_refuses_delete(db: peewee.SqliteDatabase, owner: Owner) -> None:
    publication = publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1).publication
    with pytest.raises(PublicationImmutable):
        delete_publication(db, publication.id)
    with pytest.raises(PublicationNotFound):
        delete_publication(db, "bafyreinotthere")
    assert get_publication(db, publication.id) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE global_publication SET title = 'altered'",
        "UPDATE global_publication SET wire = x'00'",
        "DELETE FROM global_publication",
        "INSERT OR REPLACE INTO global_publication SELECT * FROM global_publication",
    ],
)
def test_triggers_refuse_update_and_delete(
    db: peewee.SqliteDatabase, owner: Owner, sql: str
) -> None:
    publication = publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1).publication
    with pytest.raises(peewee.IntegrityError, match="global publication"):
        execute_sql(db, sql)
    held = get_publication(db, publication.id)
    assert held is not None
    assert held[1] == publication


def test_triggers_hold_on_a_plain_sqlite_connection(
    tmp_path: Path, db: peewee.SqliteDatabase, owner: Owner
) -> None:
    publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1)
    db.close()
    conn = sqlite3.connect(tmp_path / "vault.db")
    for sql in ("UPDATE global_publication SET version = 9", "DELETE FROM global_publication"):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(sql)
    assert conn.execute("SELECT count(*) FROM global_publication").fetchone() == (1,)
    conn.close()


def test_cursor_per_peer(db: peewee.SqliteDatabase) -> None:
    assert pull_cursor(db, "a") == 0
    advance_cursor(db, "a", 5, 5, T0)
    advance_cursor(db, "a", 3, 0, T0)  # never backwards
    advance_cursor(db, "b", 1, 1, T0)
    assert (pull_cursor(db, "a"), pull_cursor(db, "b")) == (5, 1)


def test_wire_round_trip_of_stored(db: peewee.SqliteDatabase, owner: Owner) -> None:
    publication = publish(db, owner.devices[0].signer, an_acu(db), now_ms=T0 + 1).publication
    [(_seq, wire)] = publications_after(db, 0, 10)
    assert GlobalPublication.from_wire(wire) == publication
