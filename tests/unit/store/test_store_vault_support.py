"""Shared pieces of the vault tests: an owner with certified devices, conversations, op access.

Imported by the other test_store_vault_* modules (pytest puts this directory on sys.path); it
holds no tests itself.
"""

from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import peewee

from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate
from protocols.oplog import SyncOperation
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.vault_records import Branch, ImportedConversation, ImportedMessage
from store.database import open_database
from store.identity import DeviceRow, save_device
from store.sql import execute_sql
from store.vault import LocalSigner

# Stamps near a real clock: 2023-11-14.
T0 = 1_700_000_000_000


@dataclass(frozen=True)
class Device:
    key: nacl.signing.SigningKey
    signer: LocalSigner
    row: DeviceRow

    @property
    def peer_id(self) -> str:
        return self.signer.device


class Owner:
    """A DID (identity key) and `count` devices certified by it."""

    def __init__(self, count: int = 3, *, seed: int = 1) -> None:
        self.identity_key = nacl.signing.SigningKey(bytes([seed]) * 32)
        self.did = did_from_ed25519_public_key(bytes(self.identity_key.verify_key))
        self.devices = [self._device(seed * 16 + n + 1) for n in range(count)]

    def _device(self, seed: int) -> Device:
        key = nacl.signing.SigningKey(bytes([seed]) * 32)
        public_key = bytes(key.verify_key)
        certificate = DeviceCertificate.create(
            signing_key=self.identity_key,
            did=self.did,
            device_public_key=public_key,
            approver=self.did,
            issued_at_ms=T0 - 1000,
        )
        certificate.verify(bytes(self.identity_key.verify_key))
        peer_id = peer_id_from_ed25519_public_key(public_key)
        row = DeviceRow(
            peer_id=peer_id,
            did=self.did,
            public_key=public_key,
            certificate=certificate.to_wire(),
            trust_chain=(self.did,),
            approved_by=self.did,
            created_at_ms=T0 - 1000,
        )
        return Device(
            key=key, signer=LocalSigner(author=self.did, device=peer_id, signing_key=key), row=row
        )

    def open_vault(self, path: Path) -> peewee.SqliteDatabase:
        """A new vault at `path` that knows every device of this owner."""
        db = open_database(path)
        for device in self.devices:
            save_device(db, device.row)
        return db


def conversation(
    number: int, *, messages: int = 6, title: str | None = None, code: bool = True
) -> ImportedConversation:
    """A conversation of question/answer pairs; every answer holds a code block when `code`."""
    items = []
    for index in range(messages):
        if index % 2 == 0:
            role, content = "user", f"Question {index} of conversation {number}: how?"
        else:
            role = "assistant"
            content = f"Answer {index} of conversation {number}."
            if code:
                content += f"\n\n```python\nprint({number}, {index})\n```\n"
        items.append(
            ImportedMessage(
                key=str(index),
                parent_key=None if index == 0 else str(index - 1),
                role=role,
                content=content,
                created_at_ms=T0 + number * 100_000 + index * 1000,
                index=index,
                branch=Branch.MAIN,
                model="gpt-4o" if role == "assistant" else None,
            )
        )
    return ImportedConversation(
        source_id=f"conversation-{number}",
        title=title if title is not None else f"Conversation {number}",
        provider="chatgpt",
        model="gpt-4o",
        created_at_ms=T0 + number * 100_000,
        updated_at_ms=T0 + number * 100_000 + messages * 1000,
        messages=tuple(items),
    )


def stored_ops(db: peewee.SqliteDatabase) -> list[SyncOperation]:
    """Every op in the log, by device then seq."""
    cursor = execute_sql(db, "SELECT wire FROM sync_operation ORDER BY device, seq")
    return [SyncOperation.from_wire(bytes(wire)) for (wire,) in cursor]


def count(db: peewee.SqliteDatabase, table: str) -> int:
    return int(execute_sql(db, f"SELECT count(*) FROM {table}").fetchone()[0])


def table_rows(db: peewee.SqliteDatabase, table: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in execute_sql(db, f"SELECT * FROM {table} ORDER BY 1")]


def snapshot(db: peewee.SqliteDatabase) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every vault table, local columns included."""
    tables = (
        "hlc_state",
        "device_log",
        "sync_operation",
        "pending_op",
        "conversation",
        "message",
        "acu",
        "acu_link",
        "tombstone",
    )
    return {table: table_rows(db, table) for table in tables}
