"""The vault commands, as blocking functions of the database: one implementation for both paths.

`vivim-node acus list` and friends run these functions either in the node process (behind the
control API, on the database's reader or writer thread) or, when no node runs, directly on the
data directory while holding its run lock (node/vault_client.py). Each takes the database first
and returns a JSON-ready value, so both paths print the same thing.

Errors: store/protocol errors propagate; `error_status` maps them to HTTP statuses for the API.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from peewee import SqliteDatabase

from node.device_ops import NoIdentityKey
from node.errors import NodeError
from protocols.errors import ProtocolError
from protocols.hlc import Timestamp
from protocols.importers import ImportProblem, parse_export
from protocols.vault_records import ImportedConversation
from store import vault
from store.errors import (
    AcuNotFound,
    AcuUnchanged,
    ConversationNotFound,
    InvalidCursor,
    SharingLevelLowered,
    StoreError,
    TrustRefused,
)
from store.vault_log import LocalSigner

DEFAULT_PAGE = 50
MAX_PAGE = 1000


class NotFound(NodeError):
    """The id names nothing in the vault (404)."""


class InvalidRequest(NodeError):
    """A parameter is out of range (400)."""


def to_json(value: Any) -> Any:
    """Rows (frozen dataclasses) to JSON values: enums by name, bytes as hex, stamps as objects."""
    if isinstance(value, Timestamp):
        return {"wall_ms": value.wall_ms, "counter": value.counter, "node": value.node}
    if isinstance(value, enum.Enum):
        return value.name if isinstance(value, enum.IntEnum) else value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def import_items(
    db: SqliteDatabase,
    signer: LocalSigner,
    export_format: str,
    items: Sequence[object],
    first_position: int,
    now_ms: int,
) -> dict[str, Any]:
    """Import a batch of an export's conversations (raw JSON items).

    The batch's conversations are imported in one transaction: a commit costs an fsync
    (synchronous=FULL), which per conversation would dominate a large import. A transaction
    still never holds part of a conversation, so nothing is ever half-imported; if the batch
    fails, each conversation is tried in a transaction of its own so that one bad conversation
    costs only itself. `first_position` is the batch's offset in the file, so problems name the
    file's positions.
    """
    total = vault.ImportResult()
    problems: list[dict[str, Any]] = []
    conversations: list[ImportedConversation] = []
    for parsed in parse_export(list(items), export_format):
        if isinstance(parsed, ImportProblem):
            problems.append(problem_json(parsed, first_position))
        else:
            conversations.append(parsed)
    try:
        total = vault.import_conversations(db, signer, conversations, now_ms)
    except StoreError:
        for conversation in conversations:
            try:
                total += vault.import_conversation(db, signer, conversation, now_ms)
            except StoreError as err:
                problems.append(
                    {
                        "position": None,
                        "source_id": conversation.source_id,
                        "path": f"conversation {conversation.source_id!r}",
                        "reason": f"not imported: {err}",
                    }
                )
    skipped_messages = sum(conversation.skipped for conversation in conversations)
    return {
        **to_json(total),
        "messages_dropped": skipped_messages,
        "problems": problems,
    }


def problem_json(problem: ImportProblem, first_position: int) -> dict[str, Any]:
    position = problem.position + first_position
    path = problem.path
    # Paths start with the item's place in the batch ("conversations[3]..."): make it the file's.
    local = f"[{problem.position}]"
    if local in path:
        path = path.replace(local, f"[{position}]", 1)
    return {
        "position": position,
        "source_id": problem.source_id,
        "path": path,
        "reason": problem.reason,
    }


def list_conversations(db: SqliteDatabase, limit: int, cursor: str | None) -> dict[str, Any]:
    page = vault.list_conversations(db, check_limit(limit), cursor)
    return {"conversations": to_json(page.items), "next_cursor": page.next_cursor}


def get_conversation(db: SqliteDatabase, conversation_id: str) -> dict[str, Any]:
    detail = vault.get_conversation(db, conversation_id)
    if detail is None:
        raise NotFound(f"no conversation {conversation_id} in the vault")
    return {**to_json(detail.conversation), "messages": to_json(detail.messages)}


def list_acus(
    db: SqliteDatabase,
    conversation_id: str | None,
    acu_type: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    page = vault.list_acus(db, conversation_id, acu_type, check_limit(limit), cursor)
    return {"acus": to_json(page.items), "next_cursor": page.next_cursor}


def get_acu(db: SqliteDatabase, acu_id: str) -> dict[str, Any]:
    acu = vault.get_acu(db, acu_id)
    if acu is None:
        raise NotFound(f"no ACU {acu_id} in the vault")
    return {**to_json(acu), "links": to_json(vault.acu_links(db, acu_id))}


def acu_history(db: SqliteDatabase, acu_id: str) -> dict[str, Any]:
    versions = vault.acu_history(db, acu_id)
    if not versions:
        raise NotFound(f"no ACU {acu_id} in the vault")
    return {"versions": to_json(versions)}


def edit_acu(
    db: SqliteDatabase, signer: LocalSigner, acu_id: str, content: str, now_ms: int
) -> dict[str, Any]:
    new_id = vault.edit_acu(db, signer, acu_id, content, now_ms)
    return {"id": new_id, "version_of": acu_id}


def verify(db: SqliteDatabase, now_ms: int) -> dict[str, Any]:
    problems = vault.verify_vault(db, now_ms)
    return {"ok": not problems, "problems": to_json(problems)}


def state_hash(db: SqliteDatabase) -> dict[str, Any]:
    return {"state_hash": vault.state_hash(db)}


def error_status(error: BaseException) -> tuple[int, str] | None:
    """HTTP status and error code for an error meant for the caller; None for our own bugs."""
    if isinstance(error, NotFound | ConversationNotFound | AcuNotFound):
        return 404, "not_found"
    if isinstance(error, AcuUnchanged | SharingLevelLowered):
        return 409, "conflict"
    if isinstance(error, TrustRefused):
        return 409, "trust_refused"
    if isinstance(error, NoIdentityKey):
        return 409, "no_identity_key"
    if isinstance(error, InvalidCursor | InvalidRequest):
        return 400, "bad_request"
    if isinstance(error, ProtocolError):
        return 400, error.code
    return None
