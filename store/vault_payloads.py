"""What an op may say about its entity: the payload rules of vault_spec.md section 4.

`check_payload` is run on every op from elsewhere (a peer, a stored log being verified) before it
is stored, and refuses with `MalformedInput` (or `BadSignature` for an ACU's author signature)
anything our own vault API would never write. Every rule depends on the op alone, never on what
the vault already holds, so every replica accepts or refuses the same op the same way; that is
what lets any delivery order converge.

- A create must name its entity: the id is recomputed from the payload (ids are content ids), so
  a create cannot claim one id and carry another entity's content. So must every message a
  conversation op carries (its id is recomputed from its fields and the op's conversation id),
  and every link an ACU create carries names a target and a relation (its source is the ACU).
- A conversation's create carries its messages (`messages`, possibly empty); its updates are
  `{"title": T}`, `{"messages": [...]}` (at least one) or both. Ids are unique within an op.
- ACUs are create-only and never deleted, and their only update is `{"sharing_level": L}`; their
  create carries their links (`links`, sorted by relation then target, no repeats, none to the
  ACU itself). acu_link entities are create-only (and deletable).
- A delete carries an empty payload.
- An ACU's `author` is the op's author. Its author signature is the signature of its create op
  (which `verify_op` checks before this runs): that op's signed bytes hold everything the ACU id
  is computed from, so the op is the ACU's proof of authorship (store/VAULT_DESIGN.md section 4).
"""

from collections.abc import Mapping

from protocols.cid import check_content_id
from protocols.errors import MalformedInput
from protocols.oplog import OpKind, SyncOperation
from protocols.vault_records import (
    AcuType,
    Branch,
    LinkRelation,
    SharingLevel,
    acu_id,
    conversation_id,
    link_id,
    message_id,
)
from store.trust_payloads import check_trust_payload

# SQLite INTEGER is signed 64-bit.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

CONVERSATION_FIELDS = frozenset(
    {"title", "provider", "model", "created_at_ms", "updated_at_ms", "source_id", "messages"}
)
CONVERSATION_UPDATE_FIELDS = frozenset({"title", "messages"})
# An entry of a conversation op's `messages` (protocols.vault_records.MessageRecord.to_wire).
MESSAGE_FIELDS = frozenset(
    {"id", "role", "content", "index", "created_at_ms", "branch", "parent_id"}
)
ACU_FIELDS = frozenset(
    {
        "author",
        "content",
        "type",
        "category",
        "language",
        "source_time_ms",
        "provenance",
        "sharing_level",
        "links",
    }
)
# An entry of an ACU create's `links` (protocols.acu_generator.GeneratedLink.to_wire).
CARRIED_LINK_FIELDS = frozenset({"relation", "target"})
PROVENANCE_FIELDS = frozenset({"conversation_id", "message_id", "index", "provider", "model"})
LINK_FIELDS = frozenset({"source", "target", "relation", "created_by"})
_BRANCHES = frozenset(branch.value for branch in Branch)


def check_payload(op: SyncOperation) -> None:
    """Raise `MalformedInput` unless `op` is a change our vault API could have made."""
    if op.entity_type in ("device", "identity"):
        check_trust_payload(op)
        return
    payload = op.payload
    kind = op.kind
    if kind is not OpKind.CREATE:
        check_content_id(op.entity_id)
    match op.entity_type, kind:
        case "conversation", OpKind.CREATE:
            _check_conversation(op, payload)
        case "conversation", OpKind.UPDATE:
            extra = sorted(payload.keys() - CONVERSATION_UPDATE_FIELDS)
            if not payload or extra:
                raise MalformedInput(
                    f"conversation update payload fields wrong: unexpected {extra!r:.200}, "
                    f"expected one or both of {sorted(CONVERSATION_UPDATE_FIELDS)}"
                )
            if "title" in payload:
                _text(payload, "title")
            if "messages" in payload and not _check_messages(op, payload):
                raise MalformedInput("a conversation update carries at least one message")
        case "acu", OpKind.CREATE:
            _check_acu(op, payload)
        case "acu", OpKind.UPDATE:
            _check_fields(payload, frozenset({"sharing_level"}), "ACU update")
            SharingLevel.from_wire(payload["sharing_level"])
        case "acu", OpKind.DELETE:
            raise MalformedInput("an ACU is never deleted: ACUs are immutable")
        case "acu_link", OpKind.CREATE:
            _check_link(op, payload)
        case (("conversation" | "acu_link"), OpKind.DELETE):
            _check_fields(payload, frozenset(), f"{op.entity_type} delete")
        case _:
            raise MalformedInput(f"a {op.entity_type} is create-only: no {kind.value} op")


def _check_conversation(op: SyncOperation, payload: Mapping[str, object]) -> None:
    _check_fields(payload, CONVERSATION_FIELDS, "conversation create")
    _text(payload, "title")
    provider = _text(payload, "provider")
    source_id = _text(payload, "source_id")
    _optional_text(payload, "model")
    _optional_int(payload, "created_at_ms")
    _optional_int(payload, "updated_at_ms")
    _check_id(op, conversation_id(op.author, provider, source_id))
    _check_messages(op, payload)


def _check_messages(op: SyncOperation, payload: Mapping[str, object]) -> int:
    """Check the `messages` of a conversation op; return how many there are."""
    messages = payload["messages"]
    if not isinstance(messages, list):
        raise MalformedInput(f"messages is a {type(messages).__name__}, expected a list")
    conversation = op.entity_id
    seen: set[str] = set()
    for message in messages:
        if not isinstance(message, dict):
            raise MalformedInput(f"a message is a {type(message).__name__}, expected a map")
        _check_fields(message, MESSAGE_FIELDS, "message")
        index = _int(message, "index", minimum=0)
        role = _text(message, "role")
        content = _text(message, "content")
        created_at_ms = _optional_int(message, "created_at_ms")
        _choice(message, "branch", _BRANCHES)
        parent = _optional_text(message, "parent_id")
        if parent is not None:
            check_content_id(parent)
        claimed = _text(message, "id")
        derived = message_id(conversation, index, role, content, created_at_ms)
        if claimed != derived:
            raise MalformedInput(
                f"message id {claimed:.80} is not the id of its content ({derived})"
            )
        if claimed in seen:
            raise MalformedInput(f"message {claimed} is listed twice")
        seen.add(claimed)
    return len(messages)


def _check_acu(op: SyncOperation, payload: Mapping[str, object]) -> None:
    _check_fields(payload, ACU_FIELDS, "ACU create")
    author = _text(payload, "author")
    if author != op.author:
        raise MalformedInput("an ACU's author must be the author of the op that creates it")
    content = _text(payload, "content")
    acu_type = AcuType.from_wire(payload["type"])
    _text(payload, "category")
    _optional_text(payload, "language")
    source_time_ms = _int(payload, "source_time_ms")
    provenance = payload["provenance"]
    if not isinstance(provenance, dict):
        raise MalformedInput("ACU provenance must be a map")
    _check_fields(provenance, PROVENANCE_FIELDS, "ACU provenance")
    check_content_id(_text(provenance, "conversation_id"))
    check_content_id(_text(provenance, "message_id"))
    _int(provenance, "index", minimum=0)
    _text(provenance, "provider")
    _optional_text(provenance, "model")
    SharingLevel.from_wire(payload["sharing_level"])
    _check_id(op, acu_id(author, content, acu_type, source_time_ms))
    _check_carried_links(op, payload)


def _check_carried_links(op: SyncOperation, payload: Mapping[str, object]) -> None:
    """The `links` of an ACU create: each {relation, target}, sorted, no repeats, no self-link."""
    links = payload["links"]
    if not isinstance(links, list):
        raise MalformedInput(f"links is a {type(links).__name__}, expected a list")
    previous: tuple[str, str] | None = None
    for link in links:
        if not isinstance(link, dict):
            raise MalformedInput(f"a link is a {type(link).__name__}, expected a map")
        _check_fields(link, CARRIED_LINK_FIELDS, "link")
        relation = LinkRelation.from_wire(link["relation"])
        target = _text(link, "target")
        check_content_id(target)
        if target == op.entity_id:
            raise MalformedInput("an ACU does not link to itself")
        key = (relation.value, target)
        if previous is not None and key <= previous:
            raise MalformedInput(
                "an ACU's links are sorted by relation then target, without repeats"
            )
        previous = key


def _check_link(op: SyncOperation, payload: Mapping[str, object]) -> None:
    _check_fields(payload, LINK_FIELDS, "link create")
    source = _text(payload, "source")
    target = _text(payload, "target")
    check_content_id(source)
    check_content_id(target)
    relation = LinkRelation.from_wire(payload["relation"])
    if payload["created_by"] != op.author:
        raise MalformedInput("a link's created_by must be the author of the op that creates it")
    _check_id(op, link_id(source, target, relation))


def _check_id(op: SyncOperation, derived: str) -> None:
    if op.entity_id != derived:
        raise MalformedInput(
            f"{op.entity_type} id {op.entity_id} is not the id of its content ({derived})"
        )


def _check_fields(payload: Mapping[str, object], expected: frozenset[str], what: str) -> None:
    if payload.keys() != expected:
        missing = sorted(expected - payload.keys())
        extra = sorted(payload.keys() - expected)
        raise MalformedInput(f"{what} payload fields wrong: missing {missing}, unexpected {extra}")


def _text(payload: Mapping[str, object], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    return value


def _optional_text(payload: Mapping[str, object], name: str) -> str | None:
    return None if payload[name] is None else _text(payload, name)


def _int(payload: Mapping[str, object], name: str, *, minimum: int = MIN_INT) -> int:
    value = payload[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected int")
    if not minimum <= value <= MAX_INT:
        raise MalformedInput(f"{name} is {value}, outside [{minimum}, 2**63 - 1]")
    return value


def _optional_int(payload: Mapping[str, object], name: str) -> int | None:
    return None if payload[name] is None else _int(payload, name)


def _choice(payload: Mapping[str, object], name: str, allowed: frozenset[str]) -> str:
    value = _text(payload, name)
    if value not in allowed:
        raise MalformedInput(f"{name} is {value!r:.40}, expected one of {sorted(allowed)}")
    return value
