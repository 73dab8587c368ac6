"""Read our own small conversation format (already parsed from JSON).

A file holds one conversation object or a list of them:

    {
      "title": "Sorting in Rust",            optional string (default "")
      "provider": "claude",                  required, non-empty: where the conversation was held
      "model": "claude-3-5-sonnet",          optional string or null
      "messages": [                          required, at least one
        {"role": "user",                     "user" | "assistant" | "system" | "tool"
         "content": "How do I sort ...",     string (may be empty; kept as given)
         "timestamp": "2024-05-01T09:30:00Z"}  optional, see below
      ]
    }

`timestamp` is an ISO 8601 date-time with a UTC offset ("Z" or "+02:00"; a time without an
offset is refused rather than guessed), or epoch time as a JSON number: seconds (fractions
allowed), or milliseconds when the number is 10**11 or more (10**11 seconds is the year 5138,
10**11 milliseconds is 1973), or null / absent when unknown. Fields other than these are refused,
so a misspelt optional field is an error, not silently lost.

All messages form the main branch, in order. The conversation's source id is the `content_id` of
the canonical message list `[{"role", "content", "created_at_ms"}, ...]` (times normalized, so
the same messages written with other timestamp spellings are the same conversation). Its created
and updated times are the earliest and latest message times. A malformed conversation of a list
becomes an `ImportProblem` and the next is read; a top-level value that is neither an object nor
a list raises `MalformedExport`.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from protocols.cid import content_id
from protocols.importers.common import (
    MAX_TIME_MS,
    ImportProblem,
    MalformedExport,
    describe,
    expect_dict,
    expect_list,
    expect_str,
    item_path,
    optional_str,
    seconds_to_ms,
)
from protocols.vault_records import Branch, ImportedConversation, ImportedMessage, Role

__all__ = ["ImportProblem", "MalformedExport", "parse_vivim_export"]

CONVERSATION_FIELDS = frozenset({"title", "provider", "model", "messages"})
MESSAGE_FIELDS = frozenset({"role", "content", "timestamp"})
ROLES = frozenset(role.value for role in Role)
# Epoch numbers at or above this are milliseconds (see the module docstring).
MILLISECONDS_FROM = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def parse_vivim_export(data: object) -> Iterator[ImportedConversation | ImportProblem]:
    """The conversations of a file in our format, in order, each read or reported as a problem."""
    if isinstance(data, dict):
        return _conversations([data], lambda _: "conversation")
    if isinstance(data, list):
        return _conversations(data, lambda position: f"conversations[{position}]")
    raise MalformedExport(
        "conversation", f"expected a conversation object or a list of them, got {describe(data)}"
    )


def _conversations(
    items: list[object], path_of: Callable[[int], str]
) -> Iterator[ImportedConversation | ImportProblem]:
    for position, item in enumerate(items):
        try:
            yield _conversation(item, path_of(position))
        except MalformedExport as err:
            yield ImportProblem(position=position, source_id=None, path=err.path, reason=err.reason)


def _conversation(item: object, path: str) -> ImportedConversation:
    fields = expect_dict(item, path)
    _refuse_unknown(fields, CONVERSATION_FIELDS, path)
    title = optional_str(fields.get("title"), f"{path}.title") or ""
    provider = expect_str(fields.get("provider"), f"{path}.provider")
    if not provider:
        raise MalformedExport(f"{path}.provider", "expected a provider name, got an empty string")
    model = optional_str(fields.get("model"), f"{path}.model")
    messages_path = f"{path}.messages"
    items = expect_list(fields.get("messages"), messages_path)
    if not items:
        raise MalformedExport(messages_path, "expected at least one message")
    messages = [
        _message(value, item_path(messages_path, index), index) for index, value in enumerate(items)
    ]
    times = [m.created_at_ms for m in messages if m.created_at_ms is not None]
    canonical = [
        {"role": m.role, "content": m.content, "created_at_ms": m.created_at_ms} for m in messages
    ]
    return ImportedConversation(
        source_id=content_id(canonical),
        title=title,
        provider=provider,
        model=model,
        created_at_ms=min(times, default=None),
        updated_at_ms=max(times, default=None),
        messages=tuple(messages),
    )


def _message(value: object, path: str, index: int) -> ImportedMessage:
    fields = expect_dict(value, path)
    _refuse_unknown(fields, MESSAGE_FIELDS, path)
    role = expect_str(fields.get("role"), f"{path}.role")
    if role not in ROLES:
        raise MalformedExport(f"{path}.role", f"expected one of {', '.join(sorted(ROLES))}")
    return ImportedMessage(
        key=str(index),
        parent_key=None if index == 0 else str(index - 1),
        role=role,
        content=expect_str(fields.get("content"), f"{path}.content"),
        created_at_ms=_timestamp_ms(fields.get("timestamp"), f"{path}.timestamp"),
        index=index,
        branch=Branch.MAIN,
    )


def _timestamp_ms(value: object, path: str) -> int | None:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise MalformedExport(path, f"not an ISO 8601 date-time: {value!r:.60}") from None
        if moment.tzinfo is None:
            raise MalformedExport(path, f"ISO 8601 time without a UTC offset: {value!r:.60}")
        ms = (moment - _EPOCH) // _MILLISECOND
        if not 0 <= ms <= MAX_TIME_MS:
            raise MalformedExport(path, f"time {value!r:.60} is out of range")
        return ms
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value >= MILLISECONDS_FROM
    ):
        if not value <= MAX_TIME_MS:  # also refuses inf and nan
            raise MalformedExport(path, f"time {value!r} is out of range")
        return round(value)
    return seconds_to_ms(value, path)


def _refuse_unknown(fields: dict[str, object], known: frozenset[str], path: str) -> None:
    for key in fields:
        if key not in known:
            raise MalformedExport(
                f"{path}.{key}", f"unknown field (expected {', '.join(sorted(known))})"
            )
