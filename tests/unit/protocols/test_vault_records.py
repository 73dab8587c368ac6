import pytest

from protocols.canonical import canonical_encode
from protocols.cid import content_id, parse_content_id
from protocols.errors import LocalProtocolError, MalformedInput
from protocols.vault_records import (
    AcuType,
    Branch,
    ImportedConversation,
    ImportedMessage,
    LinkRelation,
    MessageRecord,
    SharingLevel,
    acu_id,
    conversation_id,
    link_id,
    message_id,
    message_records,
)

OWNER = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
T0 = 1_714_555_801_412


def message(
    index: int,
    role: str,
    content: str,
    *,
    key: str | None = None,
    parent_key: str | None = None,
    branch: Branch = Branch.MAIN,
) -> ImportedMessage:
    return ImportedMessage(
        key=key if key is not None else str(index),
        parent_key=parent_key if parent_key is not None else (str(index - 1) if index else None),
        role=role,
        content=content,
        created_at_ms=T0 + index,
        index=index,
        branch=branch,
    )


def conversation(
    messages: tuple[ImportedMessage, ...], alternates: tuple[ImportedMessage, ...] = ()
) -> ImportedConversation:
    return ImportedConversation(
        source_id="conv-1",
        title="A title",
        provider="chatgpt",
        model="gpt-4o",
        created_at_ms=T0,
        updated_at_ms=T0 + 100,
        messages=messages,
        alternates=alternates,
    )


def test_sharing_levels_are_ordered_and_travel_by_name() -> None:
    assert SharingLevel.SELF < SharingLevel.CIRCLES < SharingLevel.NETWORK < SharingLevel.GLOBAL
    assert [level.value for level in SharingLevel] == [0, 1, 2, 3]
    assert max(SharingLevel.CIRCLES, SharingLevel.SELF) is SharingLevel.CIRCLES
    for level in SharingLevel:
        assert level.to_wire() == level.name
        assert SharingLevel.from_wire(level.to_wire()) is level


@pytest.mark.parametrize("value", ["self", "PUBLIC", "", 0, 3, None, b"SELF", ["SELF"]])
def test_sharing_level_refuses_anything_but_a_name(value: object) -> None:
    with pytest.raises(MalformedInput, match="sharing level"):
        SharingLevel.from_wire(value)


def test_link_relations_are_the_documented_set() -> None:
    assert {relation.value for relation in LinkRelation} == {
        "version_of",
        "derived_from",
        "references",
        "extends",
        "contradicts",
        "answers",
        "next",
    }
    assert LinkRelation.from_wire("next") is LinkRelation.NEXT
    with pytest.raises(MalformedInput, match="LinkRelation"):
        LinkRelation.from_wire("NEXT")


def test_acu_types_parse_from_the_wire() -> None:
    assert {t.value for t in AcuType} == {"qa", "code", "text"}
    assert AcuType.from_wire("code") is AcuType.CODE
    for bad in ("statement", 1, None):
        with pytest.raises(MalformedInput):
            AcuType.from_wire(bad)


def test_ids_are_the_content_ids_the_spec_names() -> None:
    conv = conversation_id(OWNER, "chatgpt", "abc")
    assert conv == content_id(
        {"kind": "conversation", "owner": OWNER, "provider": "chatgpt", "source_id": "abc"}
    )
    assert message_id(conv, 2, "user", "hi", T0) == content_id(
        {
            "kind": "message",
            "conversation": conv,
            "index": 2,
            "role": "user",
            "content": "hi",
            "created_at_ms": T0,
        }
    )
    assert message_id(conv, 2, "user", "hi", None) == content_id(
        {
            "kind": "message",
            "conversation": conv,
            "index": 2,
            "role": "user",
            "content": "hi",
            "created_at_ms": None,
        }
    )
    acu = acu_id(OWNER, "text", AcuType.QA, T0)
    assert acu == content_id(
        {"kind": "acu", "author": OWNER, "content": "text", "type": "qa", "source_time_ms": T0}
    )
    assert acu == acu_id(OWNER, "text", "qa", T0)
    other = acu_id(OWNER, "other", "qa", T0)
    assert link_id(acu, other, LinkRelation.NEXT) == content_id(
        {"kind": "acu_link", "source": acu, "target": other, "relation": "next"}
    )
    for value in (conv, acu):
        parse_content_id(value)


def test_every_field_of_an_id_matters() -> None:
    base = acu_id(OWNER, "c", "qa", T0)
    assert len({base, acu_id("did:key:other", "c", "qa", T0)}) == 2
    assert len({base, acu_id(OWNER, "d", "qa", T0)}) == 2
    assert len({base, acu_id(OWNER, "c", "code", T0)}) == 2
    assert len({base, acu_id(OWNER, "c", "qa", T0 + 1)}) == 2
    assert conversation_id(OWNER, "chatgpt", "x") != conversation_id(OWNER, "vivim", "x")
    assert link_id("a", "b", "next") != link_id("b", "a", "next")


def test_message_records_name_parents_main_branch_first() -> None:
    main = (message(0, "user", "q"), message(1, "assistant", "a"), message(2, "user", "q2"))
    alternates = (
        message(2, "user", "q2 edited", key="2b", parent_key="1", branch=Branch.ALTERNATE),
        message(3, "assistant", "a2", key="3b", parent_key="2b", branch=Branch.ALTERNATE),
    )
    conv = conversation_id(OWNER, "chatgpt", "conv-1")
    records = message_records(conversation(main, alternates), conversation_id=conv)
    assert [r.branch for r in records] == [Branch.MAIN] * 3 + [Branch.ALTERNATE] * 2
    assert records[0].parent_id is None
    assert records[1].parent_id == records[0].id
    assert records[3].parent_id == records[1].id  # the edit hangs off the same parent
    assert records[4].parent_id == records[3].id
    assert records[2].id == message_id(conv, 2, "user", "q2", T0 + 2)
    assert len({r.id for r in records}) == 5
    payload = records[3].to_wire()
    assert payload == {
        "id": records[3].id,
        "role": "user",
        "content": "q2 edited",
        "index": 2,
        "created_at_ms": T0 + 2,
        "branch": "alternate",
        "parent_id": records[1].id,
    }
    canonical_encode(payload)


def test_message_records_list_a_repeated_message_once() -> None:
    main = (message(0, "user", "q"), message(1, "assistant", "a"))
    # A regeneration that produced the same answer at the same time: the same id.
    alternates = (
        message(1, "assistant", "a", key="1b", parent_key="0", branch=Branch.ALTERNATE),
        message(2, "user", "more", key="2b", parent_key="1b", branch=Branch.ALTERNATE),
    )
    records = message_records(conversation(main, alternates), conversation_id="c")
    assert [(r.index, r.branch) for r in records] == [
        (0, Branch.MAIN),
        (1, Branch.MAIN),
        (2, Branch.ALTERNATE),
    ]
    assert records[2].parent_id == records[1].id


def test_message_records_refuse_a_child_before_its_parent() -> None:
    alternates = (
        message(3, "assistant", "a", key="x", parent_key="y", branch=Branch.ALTERNATE),
        message(2, "user", "q", key="y", parent_key="1", branch=Branch.ALTERNATE),
    )
    main = (message(0, "user", "q"), message(1, "assistant", "a"))
    with pytest.raises(LocalProtocolError, match="before its parent"):
        message_records(conversation(main, alternates), conversation_id="c")


def test_imported_conversation_checks_its_branches() -> None:
    with pytest.raises(LocalProtocolError, match="index 1"):
        conversation((message(0, "user", "q"), message(2, "assistant", "a")))
    with pytest.raises(LocalProtocolError, match="main branch"):
        conversation((message(0, "user", "q", branch=Branch.ALTERNATE),))
    with pytest.raises(LocalProtocolError, match="alternate"):
        conversation((message(0, "user", "q"),), (message(1, "assistant", "a"),))


def test_conversation_create_payload_carries_the_messages() -> None:
    conv = conversation((message(0, "user", "q"),))
    records = message_records(conv, conversation_id="c")
    payload = conv.create_payload(records)
    assert payload == {
        "title": "A title",
        "provider": "chatgpt",
        "model": "gpt-4o",
        "created_at_ms": T0,
        "updated_at_ms": T0 + 100,
        "source_id": "conv-1",
        "messages": [records[0].to_wire()],
    }
    canonical_encode(payload)


def test_message_record_is_frozen() -> None:
    record = message_records(conversation((message(0, "user", "q"),)), conversation_id="c")[0]
    assert isinstance(record, MessageRecord)
    with pytest.raises(AttributeError):
        record.content = "changed"  # type: ignore[misc]
