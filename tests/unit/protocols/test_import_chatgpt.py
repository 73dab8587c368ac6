import copy
import json
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import MalformedInput
from protocols.importers import (
    ImportProblem,
    MalformedExport,
    detect_format,
    parse_chatgpt_export,
    parse_export,
)
from protocols.vault_records import Branch, ImportedConversation

FIXTURE = Path(__file__).parents[2] / "fixtures" / "chatgpt_export.json"


def load() -> Any:
    return json.loads(FIXTURE.read_text())


def parse(data: object) -> list[ImportedConversation | ImportProblem]:
    return list(parse_chatgpt_export(data))


def conversations(data: object) -> list[ImportedConversation]:
    results = parse(data)
    assert all(isinstance(r, ImportedConversation) for r in results), results
    return [r for r in results if isinstance(r, ImportedConversation)]


def problem(data: object) -> ImportProblem:
    (result,) = [r for r in parse(data) if isinstance(r, ImportProblem)]
    return result


def test_the_fixture_reads_whole() -> None:
    edited, code, basil = conversations(load())
    assert (edited.title, edited.provider, edited.model) == (
        "Pagination off-by-one",
        "chatgpt",
        "gpt-4o",
    )
    assert edited.source_id == "6650a1f2-3b4c-8d1e-9f20-5a6b7c8d9e01"
    assert edited.created_at_ms == 1_714_555_801_399
    assert edited.updated_at_ms == 1_714_555_932_105
    assert basil.updated_at_ms is None
    assert [m.role for m in code.messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert code.messages[3].content.startswith("from collections import Counter")
    assert code.messages[4].content == "Counter({'the': 2, 'cat': 1, 'saw': 1, 'dog': 1})"


def test_the_main_branch_ends_at_current_node_and_other_branches_are_recorded() -> None:
    edited = conversations(load())[0]
    assert [m.key for m in edited.messages] == [
        "aaa21f3c-1d0e-4b7a-8c11-2f3e4d5c6b7a",
        "b7c1e2d3-5f60-4a1b-9c2d-3e4f5a6b7c8d",
        "aaa29c4d-2e3f-4051-b6c7-d8e9f0a1b2c3",  # the edited question
        "e2f3a4b5-c6d7-4e8f-90a1-b2c3d4e5f6a7",  # its second (regenerated) answer
    ]
    assert [m.index for m in edited.messages] == [0, 1, 2, 3]
    assert edited.messages[0].parent_key is None  # the hidden root messages are skipped
    for parent, child in zip(edited.messages, edited.messages[1:], strict=False):
        assert child.parent_key == parent.key
    assert [(m.key, m.parent_key, m.index, m.branch) for m in edited.alternates] == [
        (
            "aaa2e8b1-7c6d-4e5f-a0b1-c2d3e4f5a6b7",  # the question before the edit
            "b7c1e2d3-5f60-4a1b-9c2d-3e4f5a6b7c8d",
            2,
            Branch.ALTERNATE,
        ),
        (
            "c9d8e7f6-0a1b-4c2d-8e3f-4a5b6c7d8e9f",
            "aaa2e8b1-7c6d-4e5f-a0b1-c2d3e4f5a6b7",
            3,
            Branch.ALTERNATE,
        ),
        (
            "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6",  # the first answer to the edited question
            "aaa29c4d-2e3f-4051-b6c7-d8e9f0a1b2c3",
            3,
            Branch.ALTERNATE,
        ),
    ]
    assert edited.skipped == 2  # the hidden system root and the custom instructions


def test_current_node_picks_the_branch() -> None:
    data = load()
    data[0]["current_node"] = "c9d8e7f6-0a1b-4c2d-8e3f-4a5b6c7d8e9f"
    edited = conversations(data)[0]
    assert [m.content for m in edited.messages][2:] == [
        "Is OFFSET slow for big tables?",
        "Yes: the database still reads and discards every skipped row, so deep pages get "
        "slower linearly. Keyset pagination avoids that.",
    ]
    assert {m.key for m in edited.alternates} == {
        "aaa29c4d-2e3f-4051-b6c7-d8e9f0a1b2c3",
        "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6",
        "e2f3a4b5-c6d7-4e8f-90a1-b2c3d4e5f6a7",
    }


def test_images_are_dropped_system_messages_kept_null_times_none() -> None:
    basil = conversations(load())[2]
    system, question, answer, *_ = basil.messages
    assert (system.role, system.content) == (
        "system",
        "You are a patient botany tutor. Answer in plain language.",
    )
    assert question.content == "What is wrong with the leaves of my basil plant?"
    assert answer.created_at_ms is None
    assert answer.model == "gpt-4o-mini"
    assert basil.model == "gpt-4o-mini"  # no default_model_slug: the last answer's model


def test_voice_transcriptions_are_text() -> None:
    data = load()
    node = data[2]["mapping"]["aaa4d2e3-f4a5-4b6c-9d7e-8f9a0b1c2d3e"]
    node["message"]["content"] = {
        "content_type": "multimodal_text",
        "parts": [
            {"content_type": "audio_transcription", "text": "Should I cut them off?"},
            {"content_type": "audio_asset_pointer", "asset_pointer": "sediment://file_0a1b"},
        ],
    }
    assert conversations(data)[2].messages[3].content == "Should I cut them off?"
    node["message"]["content"]["parts"][0]["text"] = None
    assert problem(data).path.endswith("message.content.parts[0].text")


def test_reading_is_deterministic() -> None:
    assert parse(load()) == parse(load())


def test_a_file_that_is_not_a_list_is_refused_at_once() -> None:
    with pytest.raises(MalformedExport, match=r"^conversations: expected a list") as caught:
        parse_chatgpt_export({"mapping": {}})
    assert caught.value.path == "conversations"
    assert isinstance(caught.value, MalformedInput)


def test_a_bad_conversation_is_reported_and_the_others_read() -> None:
    data = load()
    data[1]["mapping"]["aaa3b2c3-d4e5-4f6a-b7c8-d9e0f1a2b3c4"]["message"]["author"]["role"] = 7
    results = parse(data)
    assert [type(r).__name__ for r in results] == [
        "ImportedConversation",
        "ImportProblem",
        "ImportedConversation",
    ]
    bad = results[1]
    assert isinstance(bad, ImportProblem)
    assert bad.position == 1
    assert bad.source_id == "6651b3e4-5a6b-7c8d-9e0f-1a2b3c4d5e02"
    assert str(bad) == (
        'conversations[1].mapping["aaa3b2c3-d4e5-4f6a-b7c8-d9e0f1a2b3c4"].message.author.role: '
        "expected a string, got a number"
    )


def test_an_alternate_branch_is_checked_too() -> None:
    data = load()
    node = data[0]["mapping"]["c9d8e7f6-0a1b-4c2d-8e3f-4a5b6c7d8e9f"]
    node["message"]["content"]["parts"] = ["ok", 3]
    assert str(problem(data)) == (
        'conversations[0].mapping["c9d8e7f6-0a1b-4c2d-8e3f-4a5b6c7d8e9f"].message.content'
        ".parts[1]: expected a string or an object, got a number"
    )


def edit(data: Any, change: str) -> Any:
    """Apply one named corruption to conversation 2 (the basil one) of a copy of the fixture."""
    data = copy.deepcopy(data)
    conv = data[2]
    mapping = conv["mapping"]
    first = mapping["aaa4c1d2-e3f4-4a5b-8c6d-7e8f9a0b1c2d"]
    match change:
        case "not an object":
            data[2] = "oops"
        case "no id":
            del conv["id"], conv["conversation_id"]
        case "title":
            conv["title"] = ["x"]
        case "create_time":
            conv["create_time"] = "yesterday"
        case "negative time":
            first["message"]["create_time"] = -5.0
        case "mapping":
            conv["mapping"] = []
        case "current_node":
            conv["current_node"] = "nowhere"
        case "node":
            mapping["aaa4c1d2-e3f4-4a5b-8c6d-7e8f9a0b1c2d"] = None
        case "parent":
            first["parent"] = "missing-node"
        case "cycle":
            mapping["a0b1c2d3-0000-4e00-8a00-000000000000"]["parent"] = (
                "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"
            )
        case "author":
            first["message"]["author"] = "user"
        case "content":
            first["message"]["content"] = None
        case "parts":
            first["message"]["content"]["parts"] = "text"
        case "metadata":
            first["message"]["metadata"] = []
        case "model_slug":
            first["message"]["metadata"]["model_slug"] = 4
    return data


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ("not an object", "conversations[2]", "expected an object, got a string"),
        ("no id", "conversations[2].id", "expected the conversation id"),
        ("title", "conversations[2].title", "expected a string or null, got a list"),
        ("create_time", "conversations[2].create_time", "expected epoch seconds or null"),
        ("mapping", "conversations[2].mapping", "expected an object, got a list"),
        ("current_node", "conversations[2].current_node", "expected the id of a node"),
        ("node", 'mapping["aaa4c1d2-e3f4-4a5b-8c6d-7e8f9a0b1c2d"]', "expected an object"),
        ("parent", '"].parent', "names no node of mapping: 'missing-node'"),
        ("cycle", '["a0b1c2d3-0000-4e00-8a00-000000000000"].parent', "parent links form a cycle"),
        ("author", "message.author", "expected an object, got a string"),
        ("content", "message.content", "expected an object, got null"),
        ("parts", "message.content.parts", "expected a list, got a string"),
        ("metadata", "message.metadata", "expected an object, got a list"),
        ("model_slug", "message.metadata.model_slug", "expected a string or null"),
        ("negative time", "message.create_time", "time -5.0 is out of range"),
    ],
)
def test_malformed_values_are_named_by_path(change: str, path: str, reason: str) -> None:
    found = problem(edit(load(), change))
    assert found.position == 2
    assert found.path.startswith("conversations[2]")
    assert found.path.endswith(path)
    assert found.reason.startswith(reason)


def test_the_problem_keeps_the_source_id_when_it_can() -> None:
    assert problem(edit(load(), "mapping")).source_id == "6652c5d6-7e8f-9a0b-1c2d-3e4f5a6b7c03"
    assert problem(edit(load(), "not an object")).source_id is None


def test_a_cycle_off_the_main_branch_is_found() -> None:
    data = load()
    mapping = data[0]["mapping"]
    mapping["aaa2e8b1-7c6d-4e5f-a0b1-c2d3e4f5a6b7"]["parent"] = (
        "c9d8e7f6-0a1b-4c2d-8e3f-4a5b6c7d8e9f"
    )
    assert problem(data).reason == "parent links form a cycle"


def test_conversation_id_field_and_missing_optional_fields() -> None:
    data = load()
    conv = data[2]
    del conv["id"], conv["title"], conv["update_time"], conv["default_model_slug"]
    for node in conv["mapping"].values():
        if node["message"] is not None:
            del node["message"]["metadata"]
    basil = conversations(data)[2]
    assert basil.source_id == "6652c5d6-7e8f-9a0b-1c2d-3e4f5a6b7c03"
    assert (basil.title, basil.model, basil.updated_at_ms) == ("", None, None)


def test_export_format_is_detected() -> None:
    assert detect_format(load()) == "chatgpt"
    assert detect_format({"messages": []}) == "vivim"
    assert list(parse_export(load())) == parse(load())
