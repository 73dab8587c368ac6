"""The vault's entities: their ids, their enums, and the normalized import model.

Three entity types live in the vault (layer 1), each changed only by ops of its own:
conversations (which carry their messages), ACUs (atomic chat units, which carry the links the
generator made from them) and ACU links made later (an edit's `version_of`, a user's link). Each
id, message ids included, is the `content_id` of a small map naming the kind and the fields that
make it that thing, so any device that imports the same thing derives the same id and a second
import creates nothing new (vault_spec.md section 4):

    conversation  {"kind": "conversation", "owner", "provider", "source_id"}
    message       {"kind": "message", "conversation", "index", "role", "content", "created_at_ms"}
    acu           {"kind": "acu", "author", "content", "type", "source_time_ms"}
    acu_link      {"kind": "acu_link", "source", "target", "relation"}

Importers (`protocols.importers`) turn an export into `ImportedConversation` values, which know
nothing of owners or ids; `message_records` names every message of one for a given conversation
id, and `protocols.acu_generator` cuts its main branch into ACUs. The store turns these into ops:
one conversation create holding every message (`ImportedConversation.create_payload`, each
message as `MessageRecord.to_wire`), then one create per ACU with its links.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Self

from protocols.cid import content_id
from protocols.errors import LocalProtocolError, MalformedInput

__all__ = [
    "AcuCategory",
    "AcuType",
    "Branch",
    "ImportedConversation",
    "ImportedMessage",
    "LinkRelation",
    "MalformedInput",
    "MessageRecord",
    "Role",
    "SharingLevel",
    "acu_id",
    "conversation_id",
    "link_id",
    "message_id",
    "message_records",
]


class SharingLevel(IntEnum):
    """How far an ACU has been shared: a high-water mark that can rise, never fall.

    The wire (op payloads, JSON) carries the name ("SELF"), never the number, so that the order
    can change without changing what old records mean.
    """

    SELF = 0
    CIRCLES = 1
    NETWORK = 2
    GLOBAL = 3

    def to_wire(self) -> str:
        return self.name

    @classmethod
    def from_wire(cls, value: object) -> Self:
        """Parse a level name; raises `MalformedInput` for anything else (numbers included)."""
        if isinstance(value, str) and value in cls.__members__:
            return cls[value]
        raise MalformedInput(
            f"sharing level must be one of {', '.join(cls.__members__)}: {value!r:.40}"
        )


class _WireStrEnum(StrEnum):
    @classmethod
    def from_wire(cls, value: object) -> Self:
        """Parse the wire string; raises `MalformedInput` for anything else."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(member.value for member in cls)
        raise MalformedInput(f"{cls.__name__} must be one of {names}: {value!r:.40}")


class LinkRelation(_WireStrEnum):
    """How one ACU relates to another; a link reads "source <relation> target"."""

    VERSION_OF = "version_of"  # source is an edit of target
    DERIVED_FROM = "derived_from"  # source was cut out of target (a code block of an exchange)
    REFERENCES = "references"
    EXTENDS = "extends"
    CONTRADICTS = "contradicts"
    ANSWERS = "answers"
    NEXT = "next"  # target follows source in the conversation


class AcuType(_WireStrEnum):
    """What an ACU is. The set is small on purpose: anything finer is a category."""

    QA = "qa"  # a user question and the assistant's answer to it
    CODE = "code"  # one fenced code block, with its language when the fence names one
    TEXT = "text"  # a message that is not part of an exchange (system, tool, a lone message)


class AcuCategory(StrEnum):
    """The coarse tag the generator gives an ACU (a free string on the wire: peers may add more)."""

    QUESTION_ANSWER = "question_answer"  # every qa ACU
    CODE = "code"  # every code ACU
    QUESTION = "question"  # text: a user message with no answer
    ANSWER = "answer"  # text: an assistant message with no question before it
    SYSTEM = "system"  # text: a system message (instructions)
    TOOL = "tool"  # text: a tool's output
    OTHER = "other"  # text: any other role


class Role(StrEnum):
    """The message roles the generator knows; importers may pass other role strings through."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class Branch(StrEnum):
    """Whether a message is on the conversation's kept path or on a branch left by an edit."""

    MAIN = "main"
    ALTERNATE = "alternate"


def conversation_id(owner: str, provider: str, source_id: str) -> str:
    """The id of `owner`'s conversation `source_id` (the export's own id) from `provider`."""
    return content_id(
        {"kind": "conversation", "owner": owner, "provider": provider, "source_id": source_id}
    )


def message_id(
    conversation_id: str, index: int, role: str, content: str, created_at_ms: int | None
) -> str:
    """The id of a message; `created_at_ms` is None when the export does not say."""
    return content_id(
        {
            "kind": "message",
            "role": role,
            "index": index,
            "content": content,
            "conversation": conversation_id,
            "created_at_ms": created_at_ms,
        }
    )


def acu_id(author: str, content: str, acu_type: str, source_time_ms: int) -> str:
    """The id of an ACU: the same author, content, type and time are the same ACU."""
    return content_id(
        {
            "kind": "acu",
            "type": str(acu_type),
            "author": author,
            "content": content,
            "source_time_ms": source_time_ms,
        }
    )


def link_id(source: str, target: str, relation: str) -> str:
    """The id of the link "source <relation> target" (there is at most one of each)."""
    return content_id(
        {"kind": "acu_link", "source": source, "target": target, "relation": str(relation)}
    )


@dataclass(frozen=True, kw_only=True)
class ImportedMessage:
    """One message as an importer read it: no owner, no ids, only what the export says.

    `key` names the message inside its conversation (the ChatGPT node id; the position as a
    string in the vivim format) and `parent_key` the nearest kept message before it (None for the
    first). `index` is the number of kept messages before it on its own path from the root, so
    an edited question has the same index as the question it replaces. `created_at_ms` is None
    when the export has no time; `model` is the model that wrote it, when the export says.
    """

    key: str
    parent_key: str | None
    role: str
    content: str
    created_at_ms: int | None
    index: int
    branch: Branch
    model: str | None = None


@dataclass(frozen=True, kw_only=True)
class ImportedConversation:
    """One conversation as an importer read it.

    `messages` is the main branch in order (indexes 0, 1, 2, ...; each the parent of the next).
    `alternates` are the kept messages on other branches (left by edits and regenerations),
    ordered so that every message comes after its parent; they are recorded, never cut into
    ACUs. `source_id` is the export's own id of the conversation (see vault_spec.md section 4).
    `skipped` counts messages the importer dropped (empty, hidden, without text).
    """

    source_id: str
    title: str
    provider: str
    model: str | None
    created_at_ms: int | None
    updated_at_ms: int | None
    messages: tuple[ImportedMessage, ...]
    alternates: tuple[ImportedMessage, ...] = ()
    skipped: int = 0

    def __post_init__(self) -> None:
        for position, message in enumerate(self.messages):
            if message.branch is not Branch.MAIN or message.index != position:
                raise LocalProtocolError(
                    f"main message {message.key!r} must be on the main branch at index {position}"
                )
        if any(message.branch is not Branch.ALTERNATE for message in self.alternates):
            raise LocalProtocolError("alternate messages must be on the alternate branch")

    def create_payload(self, messages: Sequence["MessageRecord"]) -> dict[str, object]:
        """The payload of the conversation's create op, carrying `messages` (its
        `message_records`)."""
        return {
            "model": self.model,
            "title": self.title,
            "messages": [message.to_wire() for message in messages],
            "provider": self.provider,
            "source_id": self.source_id,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


@dataclass(frozen=True, kw_only=True)
class MessageRecord:
    """A message with its id, ready to travel in its conversation's ops."""

    id: str
    conversation_id: str
    role: str
    content: str
    index: int
    created_at_ms: int | None
    branch: Branch
    parent_id: str | None

    def to_wire(self) -> dict[str, object]:
        """The message as an entry of its conversation's `messages` (create or update payload):
        every field but `conversation_id`, which is the op's entity id."""
        return {
            "id": self.id,
            "role": self.role,
            "index": self.index,
            "branch": self.branch.value,
            "content": self.content,
            "parent_id": self.parent_id,
            "created_at_ms": self.created_at_ms,
        }


def message_records(
    conversation: ImportedConversation, *, conversation_id: str
) -> list[MessageRecord]:
    """Every message of `conversation` with its id: the main branch in order, then alternates.

    A parent always comes before its children. A message with the id of an earlier one (an
    alternate identical to another message at its index) is listed once, as the earlier one, so
    the ids are unique; the main branch is never shortened (its indexes differ).
    """
    ids: dict[str, str] = {}
    seen: set[str] = set()
    records: list[MessageRecord] = []
    for message in _all_messages(conversation):
        if message.parent_key is not None and message.parent_key not in ids:
            raise LocalProtocolError(
                f"message {message.key!r} comes before its parent {message.parent_key!r}"
            )
        parent_id = None if message.parent_key is None else ids[message.parent_key]
        record = MessageRecord(
            id=message_id(
                conversation_id,
                message.index,
                message.role,
                message.content,
                message.created_at_ms,
            ),
            conversation_id=conversation_id,
            role=message.role,
            content=message.content,
            index=message.index,
            created_at_ms=message.created_at_ms,
            branch=message.branch,
            parent_id=parent_id,
        )
        ids[message.key] = record.id
        if record.id not in seen:
            seen.add(record.id)
            records.append(record)
    return records


def _all_messages(conversation: ImportedConversation) -> Sequence[ImportedMessage]:
    return conversation.messages + conversation.alternates
