"""Cut a conversation's main branch into ACUs (atomic chat units), deterministically.

One pass over the main branch, in order:

- A user message and the assistant messages that answer it (the run of assistant and tool
  messages up to the next message of another role; tool messages in the run become text ACUs of
  their own) make one "qa" ACU whose content is laid out as `QA_LAYOUT`: "Q: " + question + blank
  line + "A: " + the answers joined by blank lines, each stripped of surrounding white space. The
  layout is for reading, not for parsing back: the messages themselves stay in the vault.
- Any other non-empty message (system, tool, a question with no answer, an answer with no
  question) makes one "text" ACU with the message's stripped content.
- Every fenced code block of those messages makes a "code" ACU holding the code between the
  fences, with the fence's language lower-cased (None if the fence names none). Fences are
  CommonMark's (3 or more backticks or tildes; a closing fence of the same character at least as
  long; an unclosed fence runs to the end of the message), except that a fence may be indented by
  any amount, as chat answers indent code inside lists; that indent is removed from the code
  lines. Blocks holding only white space are skipped.

Each ACU's source time is the created time of the message it comes from (the question for a qa),
else the conversation's created (then updated) time, else 0. Its provenance names that message.
Its model is the answering message's model (for a qa) or its own, else the conversation's.

Links between ACUs of this list only: a code ACU `derived_from` the qa or text ACU it was cut out
of, and each qa ACU before the last `next` the qa after it ("source next target": the target
follows). An ACU or link equal to an earlier one (same id: the same code pasted twice) appears
once. Each link is carried by the ACU that is its source (`GeneratedAcu.links`, sorted by
relation then target), because it travels inside that ACU's create op: a link's target may come
later in the list than its source.

Everything here is a pure function of its arguments: the same conversation gives the same list,
ids and order, on any machine.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from protocols.errors import LocalProtocolError
from protocols.vault_records import (
    AcuCategory,
    AcuType,
    ImportedConversation,
    ImportedMessage,
    LinkRelation,
    Role,
    SharingLevel,
    acu_id,
    link_id,
    message_id,
)

__all__ = [
    "QA_LAYOUT",
    "AcuProvenance",
    "CodeBlock",
    "GeneratedAcu",
    "GeneratedLink",
    "code_blocks",
    "generate_acus",
]

QA_LAYOUT = "Q: {question}\n\nA: {answer}"
ANSWER_SEPARATOR = "\n\n"

# A line that opens or closes a fence: indent, then 3+ backticks or tildes, then the info string.
_FENCE_LINE = re.compile(r"^([ \t]*)(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)

_TEXT_CATEGORIES = {
    Role.USER.value: AcuCategory.QUESTION,
    Role.ASSISTANT.value: AcuCategory.ANSWER,
    Role.SYSTEM.value: AcuCategory.SYSTEM,
    Role.TOOL.value: AcuCategory.TOOL,
}


@dataclass(frozen=True, kw_only=True)
class CodeBlock:
    code: str
    language: str | None


@dataclass(frozen=True, kw_only=True)
class AcuProvenance:
    """Where an ACU was cut from: the `provenance` map of its create payload."""

    conversation_id: str
    message_id: str
    index: int
    provider: str
    model: str | None

    def to_wire(self) -> dict[str, object]:
        return {
            "index": self.index,
            "model": self.model,
            "provider": self.provider,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
        }


@dataclass(frozen=True, kw_only=True)
class GeneratedLink:
    """The link "source <relation> target" between two ACUs; `id` is `link_id` of the three."""

    id: str
    source: str
    target: str
    relation: LinkRelation

    def to_wire(self) -> dict[str, object]:
        """The link as an entry of its source ACU's create payload (`links`)."""
        return {"target": self.target, "relation": self.relation.value}

    def create_payload(self, *, created_by: str) -> dict[str, object]:
        """The payload of an acu_link create op: for a link whose source ACU exists already
        (made by an earlier import), so it cannot travel in that ACU's create op."""
        return {
            "source": self.source,
            "target": self.target,
            "relation": self.relation.value,
            "created_by": created_by,
        }


@dataclass(frozen=True, kw_only=True)
class GeneratedAcu:
    """An ACU cut from a conversation, with the links whose source it is (sorted by relation,
    then target)."""

    id: str
    author: str
    type: AcuType
    category: str
    content: str
    language: str | None
    source_time_ms: int
    provenance: AcuProvenance
    links: tuple[GeneratedLink, ...] = ()

    def create_payload(
        self, *, sharing_level: SharingLevel = SharingLevel.SELF
    ) -> dict[str, object]:
        """The payload of the ACU's create op (store/VAULT_DESIGN.md section 4). The ACU's
        author signature is the create op's own signature, so it is not in the payload."""
        # Keys in canonical order, which makes encoding cheaper (protocols.canonical).
        return {
            "type": self.type.value,
            "links": [link.to_wire() for link in self.links],
            "author": self.author,
            "content": self.content,
            "category": self.category,
            "language": self.language,
            "provenance": self.provenance.to_wire(),
            "sharing_level": sharing_level.to_wire(),
            "source_time_ms": self.source_time_ms,
        }


def generate_acus(
    conversation: ImportedConversation,
    *,
    author: str,
    conversation_id: str,
    message_ids: Sequence[str] | None = None,
) -> list[GeneratedAcu]:
    """The ACUs of `conversation`'s main branch, in order, each with the links it brings.

    `message_ids` are the ids of `conversation.messages` when the caller has them already
    (`message_records` computes them); they are computed here otherwise.
    """
    messages = conversation.messages
    if message_ids is None:
        message_ids = [
            message_id(conversation_id, m.index, m.role, m.content, m.created_at_ms)
            for m in messages
        ]
    elif len(message_ids) != len(messages):
        raise LocalProtocolError(
            f"{len(message_ids)} message ids given for {len(messages)} main messages"
        )
    cutter = _Cutter(conversation, author=author, conversation_id=conversation_id)
    answered = [False] * len(messages)
    previous_qa: str | None = None
    for position, message in enumerate(messages):
        if answered[position] or not message.content.strip():
            continue
        answers = _answers(messages, position) if message.role == Role.USER else []
        if answers:
            for answer in answers:
                answered[answer] = True
            model = next(
                (messages[a].model for a in answers if messages[a].model is not None), None
            )
            unit = cutter.acu(
                acu_type=AcuType.QA,
                category=AcuCategory.QUESTION_ANSWER,
                content=QA_LAYOUT.format(
                    question=message.content.strip(),
                    answer=ANSWER_SEPARATOR.join(messages[a].content.strip() for a in answers),
                ),
                language=None,
                message=message,
                message_id=message_ids[position],
                model=model,
            )
            if previous_qa is not None:
                cutter.link(previous_qa, unit, LinkRelation.NEXT)
            previous_qa = unit
            for source in [position, *answers]:
                cutter.code(messages[source], message_ids[source], unit)
        else:
            unit = cutter.acu(
                acu_type=AcuType.TEXT,
                category=_TEXT_CATEGORIES.get(message.role, AcuCategory.OTHER),
                content=message.content.strip(),
                language=None,
                message=message,
                message_id=message_ids[position],
                model=message.model,
            )
            cutter.code(message, message_ids[position], unit)
    return cutter.finish()


def code_blocks(text: str) -> list[CodeBlock]:
    """The fenced code blocks of `text` (see the module docstring), in order."""
    if "```" not in text and "~~~" not in text:
        return []
    blocks: list[CodeBlock] = []
    opening: re.Match[str] | None = None
    for line in _FENCE_LINE.finditer(text):
        _, fence, info = line.groups()
        if opening is None:
            if fence[0] == "`" and "`" in info:
                continue  # inline code such as ```x``` is not a fence (CommonMark)
            opening = line
        elif fence[0] == opening[2][0] and len(fence) >= len(opening[2]) and not info.strip():
            blocks.append(_block(text, opening, line.start() - 1))
            opening = None
    if opening is not None:
        blocks.append(_block(text, opening, len(text)))
    return [block for block in blocks if block.code.strip()]


def _block(text: str, opening: re.Match[str], end: int) -> CodeBlock:
    code = text[opening.end() + 1 : end] if end > opening.end() else ""
    indent = len(opening[1])
    if indent and code:
        code = "\n".join(_dedent(line, indent) for line in code.split("\n"))
    words = opening[3].split(maxsplit=1)
    return CodeBlock(code=code, language=words[0].lower() if words else None)


def _dedent(line: str, indent: int) -> str:
    stripped = line.lstrip(" \t")
    return line[min(indent, len(line) - len(stripped)) :]


def _answers(messages: Sequence[ImportedMessage], question: int) -> list[int]:
    """Positions of the non-empty assistant messages in the run after `question`."""
    answers = []
    for position in range(question + 1, len(messages)):
        role = messages[position].role
        if role == Role.ASSISTANT:
            if messages[position].content.strip():
                answers.append(position)
        elif role != Role.TOOL:
            break
    return answers


class _Cutter:
    """Collects ACUs and links, dropping repeats and attaching each link to its source ACU."""

    def __init__(
        self, conversation: ImportedConversation, *, author: str, conversation_id: str
    ) -> None:
        self._conversation = conversation
        self._author = author
        self._conversation_id = conversation_id
        self._fallback_time = next(
            (t for t in (conversation.created_at_ms, conversation.updated_at_ms) if t is not None),
            0,
        )
        self._drafts: dict[str, _Draft] = {}  # by id, in the order they were cut
        self._link_ids: set[str] = set()

    def acu(
        self,
        *,
        acu_type: AcuType,
        category: str,
        content: str,
        language: str | None,
        message: ImportedMessage,
        message_id: str,
        model: str | None,
    ) -> str:
        """Add an ACU unless it is a repeat; return its id either way."""
        time = message.created_at_ms if message.created_at_ms is not None else self._fallback_time
        new_id = acu_id(self._author, content, acu_type, time)
        if new_id in self._drafts:
            return new_id
        provenance = AcuProvenance(
            conversation_id=self._conversation_id,
            message_id=message_id,
            index=message.index,
            provider=self._conversation.provider,
            model=model if model is not None else self._conversation.model,
        )
        self._drafts[new_id] = _Draft(
            new_id, acu_type, str(category), content, language, time, provenance, []
        )
        return new_id

    def link(self, source: str, target: str, relation: LinkRelation) -> None:
        """Add a link unless it is a repeat; `source` is an ACU added before."""
        new_id = link_id(source, target, relation)
        if source == target or new_id in self._link_ids:
            return
        self._link_ids.add(new_id)
        self._drafts[source].links.append(
            GeneratedLink(id=new_id, source=source, target=target, relation=relation)
        )

    def code(self, message: ImportedMessage, message_id: str, unit: str) -> None:
        """Add the code blocks of `message`, each derived from the ACU `unit`."""
        for block in code_blocks(message.content):
            code = self.acu(
                acu_type=AcuType.CODE,
                category=AcuCategory.CODE,
                content=block.code,
                language=block.language,
                message=message,
                message_id=message_id,
                model=message.model,
            )
            self.link(code, unit, LinkRelation.DERIVED_FROM)

    def finish(self) -> list[GeneratedAcu]:
        return [
            GeneratedAcu(
                id=draft.id,
                author=self._author,
                type=draft.type,
                category=draft.category,
                content=draft.content,
                language=draft.language,
                source_time_ms=draft.source_time_ms,
                provenance=draft.provenance,
                links=tuple(sorted(draft.links, key=lambda link: (link.relation, link.target))),
            )
            for draft in self._drafts.values()
        ]


class _Draft(NamedTuple):
    id: str
    type: AcuType
    category: str
    content: str
    language: str | None
    source_time_ms: int
    provenance: AcuProvenance
    links: list[GeneratedLink]
