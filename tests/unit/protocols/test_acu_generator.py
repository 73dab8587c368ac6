import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.acu_generator import (
    QA_LAYOUT,
    CodeBlock,
    GeneratedAcu,
    code_blocks,
    generate_acus,
)
from protocols.canonical import canonical_encode
from protocols.errors import LocalProtocolError
from protocols.importers import parse_chatgpt_export
from protocols.vault_records import (
    AcuType,
    Branch,
    ImportedConversation,
    ImportedMessage,
    LinkRelation,
    acu_id,
    link_id,
    message_id,
    message_records,
)

AUTHOR = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
CONVERSATION = "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
T0 = 1_717_402_495_000
FIXTURES = Path(__file__).parents[2] / "fixtures"


def conversation(
    *turns: tuple[str, str],
    times: list[int | None] | None = None,
    created_at_ms: int | None = T0,
    models: list[str | None] | None = None,
) -> ImportedConversation:
    return ImportedConversation(
        source_id="s",
        title="t",
        provider="claude",
        model="claude-3-5-sonnet",
        created_at_ms=created_at_ms,
        updated_at_ms=None,
        messages=tuple(
            ImportedMessage(
                key=str(i),
                parent_key=str(i - 1) if i else None,
                role=role,
                content=content,
                created_at_ms=(T0 + 1000 * i) if times is None else times[i],
                index=i,
                branch=Branch.MAIN,
                model=None if models is None else models[i],
            )
            for i, (role, content) in enumerate(turns)
        ),
    )


def generate(conv: ImportedConversation) -> list[GeneratedAcu]:
    return generate_acus(conv, author=AUTHOR, conversation_id=CONVERSATION)


def check_links(acus: list[GeneratedAcu]) -> None:
    """Every link is carried by its source, names ACUs of the list and is there once; each ACU's
    links are sorted by relation then target, as its create payload lists them."""
    ids = [acu.id for acu in acus]
    assert len(set(ids)) == len(ids)
    link_ids: set[str] = set()
    for acu in acus:
        for link in acu.links:
            assert link.source == acu.id
            assert link.target in ids
            assert link.source != link.target
            assert link.id == link_id(link.source, link.target, link.relation)
            assert link.id not in link_ids
            link_ids.add(link.id)
        keys = [(link.relation.value, link.target) for link in acu.links]
        assert keys == sorted(keys)
        payload = acu.create_payload()
        assert payload["links"] == [
            {"relation": relation, "target": target} for relation, target in keys
        ]


def test_a_question_and_its_answer_make_one_qa_acu() -> None:
    acus = generate(conversation(("user", "  Why?\n"), ("assistant", "Because.\n\n")))
    assert len(acus) == 1
    qa = acus[0]
    assert qa.type is AcuType.QA
    assert qa.category == "question_answer"
    assert (
        qa.content
        == QA_LAYOUT.format(question="Why?", answer="Because.")
        == ("Q: Why?\n\nA: Because.")
    )
    assert qa.language is None
    assert qa.source_time_ms == T0
    assert qa.id == acu_id(AUTHOR, qa.content, "qa", T0)
    assert qa.provenance.index == 0
    assert qa.provenance.message_id == message_id(CONVERSATION, 0, "user", "  Why?\n", T0)
    assert qa.provenance.provider == "claude"
    assert qa.provenance.model == "claude-3-5-sonnet"
    assert qa.links == ()


def test_consecutive_exchanges_are_linked_by_next() -> None:
    acus = generate(
        conversation(
            ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"),
            ("user", "q3"), ("assistant", "a3"),
        )
    )  # fmt: skip
    assert [a.type for a in acus] == [AcuType.QA] * 3
    # "source next target": each exchange carries the link to the one after it.
    assert acus[0].links[0].relation is LinkRelation.NEXT
    assert (acus[0].links[0].source, acus[0].links[0].target) == (acus[0].id, acus[1].id)
    assert (acus[1].links[0].source, acus[1].links[0].target) == (acus[1].id, acus[2].id)
    assert acus[2].links == ()
    check_links(acus)


def test_lone_and_other_messages_become_text_acus() -> None:
    acus = generate(
        conversation(
            ("system", "Be brief."),
            ("assistant", "Hello, how can I help?"),
            ("user", "q"),
            ("user", "q again"),
            ("assistant", "a"),
            ("tool", "   "),
            ("critic", "looks fine"),
            ("user", "unanswered"),
        )
    )
    assert [(a.type.value, a.category, a.content) for a in acus] == [
        ("text", "system", "Be brief."),
        ("text", "answer", "Hello, how can I help?"),
        ("text", "question", "q"),
        ("qa", "question_answer", "Q: q again\n\nA: a"),
        ("text", "other", "looks fine"),
        ("text", "question", "unanswered"),
    ]


def test_an_answer_spans_tool_calls_and_tool_output_is_text() -> None:
    acus = generate(
        conversation(
            ("user", "count words"),
            ("assistant", "Counter(words)"),
            ("tool", "Counter({'a': 2})"),
            ("assistant", "`a` appears twice."),
            ("user", "thanks"),
        ),
    )
    assert [a.type for a in acus] == [AcuType.QA, AcuType.TEXT, AcuType.TEXT]
    assert acus[0].content == "Q: count words\n\nA: Counter(words)\n\n`a` appears twice."
    assert acus[1].category == "tool"
    assert acus[1].provenance.index == 2


def test_code_blocks_become_code_acus_derived_from_their_exchange() -> None:
    answer = (
        "Try:\n\n```Python\nprint(1)\n```\n\nor\n\n```bash title=run.sh\necho 1\n```\n"
        "and plain:\n```\n1\n```"
    )
    acus = generate(conversation(("user", "```js\nf()\n```\nwhy?"), ("assistant", answer)))
    qa, *code = acus
    assert qa.type is AcuType.QA
    assert [(a.content, a.language, a.provenance.index) for a in code] == [
        ("f()", "js", 0),
        ("print(1)", "python", 1),
        ("echo 1", "bash", 1),
        ("1", None, 1),
    ]
    assert all(a.type is AcuType.CODE and a.category == "code" for a in code)
    assert code[0].source_time_ms == T0
    assert code[1].source_time_ms == T0 + 1000
    for acu in code:
        (link,) = acu.links
        assert (link.source, link.target, link.relation) == (
            acu.id,
            qa.id,
            LinkRelation.DERIVED_FROM,
        )
    check_links(acus)


@pytest.mark.parametrize(
    ("text", "blocks"),
    [
        ("no code", []),
        ("```py\nx = 1\n```", [CodeBlock(code="x = 1", language="py")]),
        ("~~~sql\nSELECT 1;\n~~~", [CodeBlock(code="SELECT 1;", language="sql")]),
        ("```\n\n   \n```", []),  # only white space
        ("```c\nint x;", [CodeBlock(code="int x;", language="c")]),  # unclosed: to the end
        ("```c", []),
        ("inline ```x``` is not a fence", []),
        ("```go\na\n```go\nb\n```", [CodeBlock(code="a\n```go\nb", language="go")]),
        (
            "````md\n```py\nx\n```\n````",
            [CodeBlock(code="```py\nx\n```", language="md")],
        ),
        ("~~~\na\n```\nb\n~~~", [CodeBlock(code="a\n```\nb", language=None)]),
        (
            "1. Install:\n   ```bash\n   pip install x\n     --pre\n   ```\n2. Done",
            [CodeBlock(code="pip install x\n  --pre", language="bash")],
        ),
        (
            "```a\n1\n```\ntext\n```b\n2\n```",
            [CodeBlock(code="1", language="a"), CodeBlock(code="2", language="b")],
        ),
        ("```\r\nx\r\n```", [CodeBlock(code="x\r", language=None)]),
    ],
)
def test_code_block_cutting(text: str, blocks: list[CodeBlock]) -> None:
    assert code_blocks(text) == blocks


def test_the_same_code_twice_is_one_acu_with_links_to_both_exchanges() -> None:
    snippet = "```sh\nmake test\n```"
    acus = generate(
        conversation(
            ("user", "q1"),
            ("assistant", snippet + "\n" + snippet),
            ("user", "q2"),
            ("assistant", "again:\n" + snippet),
            times=[T0, T0 + 1, T0 + 2, T0 + 1],  # same source time for both answers
        )
    )
    assert [a.type for a in acus] == [AcuType.QA, AcuType.CODE, AcuType.QA]
    code = acus[1]
    assert [(link.target, link.relation) for link in acus[0].links] == [
        (acus[2].id, LinkRelation.NEXT)
    ]
    # The code ACU carries both its links, the later one included, in sorted order.
    assert {(link.target, link.relation) for link in code.links} == {
        (acus[0].id, LinkRelation.DERIVED_FROM),
        (acus[2].id, LinkRelation.DERIVED_FROM),
    }
    assert acus[2].links == ()
    check_links(acus)


def test_source_time_falls_back_to_the_conversation_then_zero() -> None:
    with_created = generate(conversation(("system", "s"), times=[None]))
    assert with_created[0].source_time_ms == T0
    without = generate(conversation(("system", "s"), times=[None], created_at_ms=None))
    assert without[0].source_time_ms == 0


def test_models_come_from_the_answer_then_the_conversation() -> None:
    acus = generate(
        conversation(
            ("user", "q"),
            ("assistant", "a\n```py\nx\n```"),
            ("system", "s"),
            models=[None, "gpt-4o-mini", None],
        )
    )
    assert [a.provenance.model for a in acus] == ["gpt-4o-mini", "gpt-4o-mini", "claude-3-5-sonnet"]


def test_alternates_and_empty_messages_make_no_acus() -> None:
    conv = conversation(("user", ""), ("assistant", " \n "))
    conv = ImportedConversation(
        **{**conv.__dict__, "alternates": (
            ImportedMessage(
                key="x", parent_key="0", role="assistant", content="other answer",
                created_at_ms=T0, index=1, branch=Branch.ALTERNATE,
            ),
        )},
    )  # fmt: skip
    assert generate(conv) == []


def test_message_ids_can_be_passed_in() -> None:
    conv = conversation(("user", "q"), ("assistant", "a"))
    ids = [record.id for record in message_records(conv, conversation_id=CONVERSATION)]
    given_ids = generate_acus(conv, author=AUTHOR, conversation_id=CONVERSATION, message_ids=ids)
    assert given_ids == generate(conv)
    with pytest.raises(LocalProtocolError, match="1 message ids given for 2"):
        generate_acus(conv, author=AUTHOR, conversation_id=CONVERSATION, message_ids=ids[:1])


def test_create_payloads_are_canonical() -> None:
    acus = generate(conversation(("user", "q"), ("assistant", "a\n```py\nx\n```")))
    payload = acus[1].create_payload()
    assert payload["sharing_level"] == "SELF"
    assert payload["provenance"] == {
        "conversation_id": CONVERSATION,
        "message_id": acus[1].provenance.message_id,
        "index": 1,
        "provider": "claude",
        "model": "claude-3-5-sonnet",
    }
    assert payload["links"] == [{"relation": "derived_from", "target": acus[0].id}]
    canonical_encode(payload)
    assert acus[1].links[0].create_payload(created_by=AUTHOR) == {
        "source": acus[1].id,
        "target": acus[0].id,
        "relation": "derived_from",
        "created_by": AUTHOR,
    }


def test_a_fixture_export_gives_the_same_acus_every_time() -> None:
    def cut() -> list[list[GeneratedAcu]]:
        data = json.loads((FIXTURES / "chatgpt_export.json").read_text())
        return [
            generate_acus(conv, author=AUTHOR, conversation_id=conv.source_id)
            for conv in parse_chatgpt_export(data)
            if isinstance(conv, ImportedConversation)
        ]

    first, second = cut(), cut()
    assert first == second
    assert len(first) == 3
    for acus in first:
        check_links(acus)
    languages = {a.language for acus in first for a in acus if a.type is AcuType.CODE}
    assert languages == {"sql", "python", "js", "javascript", "ts", "bash", "rust", None}


messages_strategy = st.lists(
    st.tuples(
        st.sampled_from(["user", "assistant", "system", "tool", "other"]),
        st.text(alphabet=st.sampled_from(list("ab `~\n\t\r py#é\x00")), max_size=60)
        | st.text(max_size=30),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(turns=messages_strategy, times=st.lists(st.none() | st.integers(0, 2**48 - 1)))
def test_generation_never_crashes_and_is_stable(
    turns: list[tuple[str, str]], times: list[int | None]
) -> None:
    times = (times + [None] * len(turns))[: len(turns)]
    conv = conversation(*turns, times=times)
    acus = generate(conv)
    assert acus == generate(conv)
    check_links(acus)
    for acu in acus:
        assert acu.id == acu_id(AUTHOR, acu.content, acu.type, acu.source_time_ms)
        assert acu.content.strip()
        canonical_encode(acu.create_payload())
    # Only the main branch's content counts: the ids do not depend on anything else.
    renamed = ImportedConversation(**{**conv.__dict__, "title": "other", "source_id": "x"})
    assert [a.id for a in generate(renamed)] == [a.id for a in acus]
