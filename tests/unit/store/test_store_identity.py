"""The identity and device tables through their store functions."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest

from store.database import open_database
from store.errors import IdentityConflict
from store.identity import (
    DeviceRow,
    IdentityRow,
    RetiredKey,
    list_devices,
    load_identity,
    save_device,
    save_identity,
)
from store.models import Identity


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.SqliteDatabase]:
    db = open_database(tmp_path / "vault.db")
    yield db
    db.close()


IDENTITY = IdentityRow(
    did="did:key:z6MkOwner",
    signing_public_key=bytes(range(32)),
    encryption_public_key=bytes(range(32, 64)),
    encryption_key_binding=b"\xa2signed binding record",
    created_at_ms=1_700_000_000_000,
)

DEVICE = DeviceRow(
    peer_id="12D3KooWLaptop",
    did=IDENTITY.did,
    public_key=bytes(range(64, 96)),
    certificate=b"\xa3signed device certificate",
    trust_chain=("12D3KooWPhone", IDENTITY.did),
    approved_by="12D3KooWPhone",
    created_at_ms=1_700_000_000_500,
)


def test_no_identity_before_one_is_saved(db: peewee.SqliteDatabase) -> None:
    assert load_identity(db) is None


def test_identity_round_trip(db: peewee.SqliteDatabase) -> None:
    save_identity(db, IDENTITY)
    assert load_identity(db) == IDENTITY


def test_identity_defaults_as_stored(db: peewee.SqliteDatabase) -> None:
    save_identity(db, IDENTITY)
    row = Identity.select().dicts().execute(db)[0]
    assert (row["key_version"], row["previous_keys"]) == (1, "[]")


def test_saving_the_same_did_again_replaces_it(db: peewee.SqliteDatabase) -> None:
    save_identity(db, IDENTITY)
    rotated = replace(
        IDENTITY,
        encryption_public_key=bytes(range(100, 132)),
        encryption_key_binding=b"new binding",
        key_version=2,
        previous_keys=(
            RetiredKey(
                public_key=IDENTITY.encryption_public_key,
                key_version=1,
                retired_at_ms=1_700_000_100_000,
            ),
        ),
    )
    save_identity(db, rotated)
    assert load_identity(db) == rotated
    assert Identity.select().count(db) == 1


def test_a_second_identity_is_refused(db: peewee.SqliteDatabase) -> None:
    save_identity(db, IDENTITY)
    with pytest.raises(IdentityConflict, match=IDENTITY.did):
        save_identity(db, replace(IDENTITY, did="did:key:z6MkSomeoneElse"))
    assert load_identity(db) == IDENTITY


def test_identity_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="signing_public_key must be 32 bytes"):
        replace(IDENTITY, signing_public_key=bytes(31))
    with pytest.raises(ValueError, match="encryption_public_key must be 32 bytes"):
        replace(IDENTITY, encryption_public_key=bytes(33))


def test_the_schema_refuses_a_short_key_written_around_the_store(
    db: peewee.SqliteDatabase,
) -> None:
    with pytest.raises(peewee.IntegrityError):
        Identity.insert(
            did="did:key:z6MkShort",
            signing_public_key=bytes(31),
            encryption_public_key=bytes(32),
            encryption_key_binding=b"",
            created_at_ms=0,
        ).execute(db)


def test_no_devices_at_first(db: peewee.SqliteDatabase) -> None:
    assert list_devices(db) == []


def test_device_round_trip(db: peewee.SqliteDatabase) -> None:
    save_device(db, DEVICE)
    assert list_devices(db) == [DEVICE]


def test_devices_are_listed_oldest_first(db: peewee.SqliteDatabase) -> None:
    phone = replace(DEVICE, peer_id="12D3KooWPhone", created_at_ms=1, trust_chain=(IDENTITY.did,))
    save_device(db, DEVICE)
    save_device(db, phone)
    assert list_devices(db) == [phone, DEVICE]


def test_saving_a_device_again_replaces_it(db: peewee.SqliteDatabase) -> None:
    save_device(db, DEVICE)
    renewed = replace(DEVICE, certificate=b"renewed certificate", approved_by=IDENTITY.did)
    save_device(db, renewed)
    assert list_devices(db) == [renewed]


def test_revocation_is_permanent(db: peewee.SqliteDatabase) -> None:
    revoked = replace(DEVICE, revoked_at_ms=1_700_000_900_000)
    save_device(db, revoked)
    save_device(db, DEVICE)  # an old, unrevoked copy
    save_device(db, replace(DEVICE, revoked_at_ms=1_800_000_000_000))  # a later revocation
    assert list_devices(db) == [revoked]


def test_device_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        replace(DEVICE, public_key=bytes(33))
