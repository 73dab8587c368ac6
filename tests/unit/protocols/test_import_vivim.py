import copy
import json
from pathlib import Path
from typing import Any

import pytest

from protocols.cid import content_id
from protocols.importers import (
    ImportProblem,
    MalformedExport,
    detect_format,
    parse_export,
    parse_vivim_export,
)
from protocols.vault_records import Branch, ImportedConversation

FIXTURE = Path(__file__).parents[2] / "fixtures" / "vivim_conversation.json"


def load() -> Any:
    return json.loads(FIXTURE.read_text())


def read_one(data: object) -> ImportedConversation:
    (result,) = parse_vivim_export(data)
    assert isinstance(result, ImportedConversation), result
    return result


def problem(data: object) -> ImportProblem:
    (result,) = parse_vivim_export(data)
    assert isinstance(result, ImportProblem), result
    return result


def minimal(**message: object) -> dict[str, object]:
    return {"provider": "claude", "messages": [{"role": "user", "content": "hi", **message}]}


def test_the_fixture_reads_whole() -> None:
    conv = read_one(load())
    assert (conv.title, conv.provider, conv.model) == (
        "Sorting structs by two keys in Rust",
        "claude",
        "claude-3-5-sonnet-20240620",
    )
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert [m.created_at_ms for m in conv.messages] == [
        1_717_402_495_000,  # "2024-06-03T08:14:55Z"
        1_717_402_502_418,  # "2024-06-03T08:15:02.418+00:00"
        1_717_402_509_007,  # "2024-06-03T10:15:09.007+02:00"
        1_717_402_581_000,  # 1717402581 (seconds)
        1_717_402_590_512,  # 1717402590512 (milliseconds)
    ]
    assert [(m.key, m.parent_key, m.index) for m in conv.messages][:2] == [
        ("0", None, 0),
        ("1", "0", 1),
    ]
    assert all(m.branch is Branch.MAIN for m in conv.messages)
    assert conv.alternates == ()
    assert (conv.created_at_ms, conv.updated_at_ms) == (1_717_402_495_000, 1_717_402_590_512)


def test_the_source_id_is_the_content_id_of_the_canonical_messages() -> None:
    conv = read_one(load())
    assert conv.source_id == content_id(
        [
            {"role": m.role, "content": m.content, "created_at_ms": m.created_at_ms}
            for m in conv.messages
        ]
    )
    respelt = load()
    respelt["title"] = "Another title"
    respelt["messages"][0]["timestamp"] = 1_717_402_495
    respelt["messages"][3]["timestamp"] = "2024-06-03T08:16:21Z"
    assert read_one(respelt).source_id == conv.source_id
    changed = load()
    changed["messages"][1]["content"] += "?"
    assert read_one(changed).source_id != conv.source_id


def test_a_list_of_conversations_reads_past_a_bad_one() -> None:
    good = load()
    results = list(parse_vivim_export([good, {"provider": "x"}, good]))
    assert [type(r).__name__ for r in results] == [
        "ImportedConversation",
        "ImportProblem",
        "ImportedConversation",
    ]
    bad = results[1]
    assert isinstance(bad, ImportProblem)
    assert (bad.position, bad.path) == (1, "conversations[1].messages")
    assert results[0] == results[2]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (None, None),
        (0, 0),
        (1_717_402_581.25, 1_717_402_581_250),
        (99_999_999_999, 99_999_999_999_000),  # the largest number read as seconds
        (100_000_000_000, 100_000_000_000),  # the smallest read as milliseconds
        ("2024-06-03T08:15:02Z", 1_717_402_502_000),
        ("2024-06-03T08:15:02.5-01:30", 1_717_407_902_500),
        ("1970-01-01T00:00:00+00:00", 0),
    ],
)
def test_timestamps(timestamp: object, expected: int | None) -> None:
    assert read_one(minimal(timestamp=timestamp)).messages[0].created_at_ms == expected


def test_a_missing_timestamp_is_none() -> None:
    assert read_one(minimal()).messages[0].created_at_ms is None


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        ("2024-06-03T08:15:02", "ISO 8601 time without a UTC offset"),
        ("2024-06-03", "ISO 8601 time without a UTC offset"),
        ("yesterday", "not an ISO 8601 date-time"),
        ("1969-12-31T23:59:59Z", "time '1969-12-31T23:59:59Z' is out of range"),
        (-1, "time -1 is out of range"),
        (float("inf"), "time inf is out of range"),
        (float("nan"), "time nan is out of range"),
        (2**48, "time 281474976710656 is out of range"),
        (True, "expected epoch seconds or null, got a boolean"),
        ([], "expected epoch seconds or null, got a list"),
    ],
)
def test_bad_timestamps_are_named(timestamp: object, reason: str) -> None:
    found = problem(minimal(timestamp=timestamp))
    assert found.path == "conversation.messages[0].timestamp"
    assert found.reason.startswith(reason)


def corrupt(change: str) -> Any:
    data = copy.deepcopy(load())
    match change:
        case "unknown field":
            data["messages"][2]["contnet"] = "x"
        case "unknown top field":
            data["tags"] = []
        case "role":
            data["messages"][1]["role"] = "human"
        case "content":
            data["messages"][4]["content"] = None
        case "message":
            data["messages"][3] = "text"
        case "messages":
            data["messages"] = {}
        case "no messages":
            data["messages"] = []
        case "provider":
            del data["provider"]
        case "empty provider":
            data["provider"] = ""
        case "model":
            data["model"] = 3
        case "title":
            data["title"] = False
    return data


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ("unknown field", "conversation.messages[2].contnet", "unknown field (expected content,"),
        ("unknown top field", "conversation.tags", "unknown field"),
        ("role", "conversation.messages[1].role", "expected one of assistant, system, tool, user"),
        ("content", "conversation.messages[4].content", "expected a string, got null"),
        ("message", "conversation.messages[3]", "expected an object, got a string"),
        ("messages", "conversation.messages", "expected a list, got an object"),
        ("no messages", "conversation.messages", "expected at least one message"),
        ("provider", "conversation.provider", "expected a string, got null"),
        ("empty provider", "conversation.provider", "expected a provider name"),
        ("model", "conversation.model", "expected a string or null, got a number"),
        ("title", "conversation.title", "expected a string or null, got a boolean"),
    ],
)
def test_malformed_values_are_named_by_path(change: str, path: str, reason: str) -> None:
    found = problem(corrupt(change))
    assert found.path == path
    assert found.reason.startswith(reason)
    assert str(found) == f"{path}: {found.reason}"


@pytest.mark.parametrize("data", [None, "text", 3, True])
def test_a_top_level_that_is_not_a_conversation_is_refused_at_once(data: object) -> None:
    with pytest.raises(MalformedExport, match=r"^conversation: expected a conversation object"):
        parse_vivim_export(data)


def test_optional_fields_and_empty_content() -> None:
    conv = read_one({"provider": "p", "messages": [{"role": "assistant", "content": ""}]})
    assert (conv.title, conv.model, conv.created_at_ms, conv.updated_at_ms) == (
        "",
        None,
        None,
        None,
    )
    assert conv.messages[0].content == ""


def test_export_format_is_detected() -> None:
    assert detect_format(load()) == "vivim"
    assert detect_format([load()]) == "vivim"
    assert list(parse_export(load())) == list(parse_vivim_export(load()))
    assert list(parse_export([load()], "vivim")) == list(parse_vivim_export([load()]))
