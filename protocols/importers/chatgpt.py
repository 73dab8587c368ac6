"""Read a ChatGPT data export (`conversations.json`, already parsed from JSON).

The file is a list of conversations. Each holds its messages as a tree: `mapping` maps node ids
to nodes `{id, parent, children, message}`, and editing a message or regenerating an answer
gives a node a second child. `current_node` is the leaf the user last saw. What we keep:

- The main branch is the path from the root to `current_node`, found by following `parent`
  links (the `children` lists are not read: parent links are the tree). Every other message of
  the mapping is recorded as an alternate, with its nearest kept ancestor as parent.
- A node is skipped (and counted in `ImportedConversation.skipped` when it had a message) if its
  message is null, hidden (`metadata.is_visually_hidden_from_conversation` true: the empty
  system root, custom instructions), or has no text. Text is the content's string `parts`
  (and the `text` of voice-mode `audio_transcription` parts) joined by a blank line; other
  object parts (images, audio, files) are dropped. Content without `parts` uses its `text`
  field (code sent to a tool, execution output), and has no text otherwise.
- Times are float seconds or null; they become integer milliseconds or None.
- The provider is "chatgpt"; a message's model is its `metadata.model_slug`; the conversation's
  is `default_model_slug`, else the model of the last main-branch message that names one.
- The source id is `id`, else `conversation_id`.

A conversation that is malformed anywhere (checked whole, alternates included, before anything
of it is returned) becomes an `ImportProblem` naming the path, and the next one is read. Only a
top-level value that is not a list raises `MalformedExport`.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from protocols.importers.common import (
    ImportProblem,
    MalformedExport,
    describe,
    expect_dict,
    expect_list,
    expect_str,
    key_path,
    optional_str,
    seconds_to_ms,
)
from protocols.vault_records import Branch, ImportedConversation, ImportedMessage

__all__ = ["PROVIDER", "ImportProblem", "MalformedExport", "parse_chatgpt_export"]

PROVIDER = "chatgpt"
PART_SEPARATOR = "\n\n"


@dataclass(frozen=True, kw_only=True)
class _Text:
    role: str
    content: str
    created_at_ms: int | None
    model: str | None


def parse_chatgpt_export(data: object) -> Iterator[ImportedConversation | ImportProblem]:
    """The conversations of an export, in file order, each read or reported as a problem.

    Raises `MalformedExport` at once if `data` is not a list; problems inside a conversation
    are yielded as `ImportProblem` records and reading goes on.
    """
    if not isinstance(data, list):
        raise MalformedExport(
            "conversations", f"expected a list of conversations, got {describe(data)}"
        )
    return _conversations(data)


def _conversations(data: list[object]) -> Iterator[ImportedConversation | ImportProblem]:
    for position, item in enumerate(data):
        try:
            yield _conversation(item, f"conversations[{position}]")
        except MalformedExport as err:
            yield ImportProblem(
                position=position,
                source_id=_source_id_or_none(item),
                path=err.path,
                reason=err.reason,
            )


def _source_id_or_none(item: object) -> str | None:
    if isinstance(item, dict):
        for field in ("id", "conversation_id"):
            value = item.get(field)
            if isinstance(value, str) and value:
                return value
    return None


def _conversation(item: object, path: str) -> ImportedConversation:
    fields = expect_dict(item, path)
    source_id = _source_id_or_none(fields)
    if source_id is None:
        raise MalformedExport(f"{path}.id", "expected the conversation id (a non-empty string)")
    title = optional_str(fields.get("title"), f"{path}.title") or ""
    created_at_ms = seconds_to_ms(fields.get("create_time"), f"{path}.create_time")
    updated_at_ms = seconds_to_ms(fields.get("update_time"), f"{path}.update_time")
    default_model = optional_str(fields.get("default_model_slug"), f"{path}.default_model_slug")
    mapping_path = f"{path}.mapping"
    mapping = expect_dict(fields.get("mapping"), mapping_path)
    current = fields.get("current_node")
    if not isinstance(current, str) or current not in mapping:
        raise MalformedExport(
            f"{path}.current_node", f"expected the id of a node in mapping, got {describe(current)}"
        )

    parents: dict[str, str | None] = {}
    texts: dict[str, _Text | None] = {}
    skipped = 0
    for key, node in mapping.items():
        node_path = key_path(mapping_path, key)
        node_fields = expect_dict(node, node_path)
        parent = optional_str(node_fields.get("parent"), f"{node_path}.parent")
        if parent is not None and parent not in mapping:
            raise MalformedExport(f"{node_path}.parent", f"names no node of mapping: {parent!r}")
        parents[key] = parent
        message = node_fields.get("message")
        texts[key] = None if message is None else _message(message, f"{node_path}.message")
        if message is not None and texts[key] is None:
            skipped += 1

    main_keys = _path_to(current, parents, mapping_path)
    on_main = set(main_keys)
    kept_parent, index = _kept_ancestry(parents, texts, mapping_path)

    messages: list[ImportedMessage] = []
    for key in main_keys:
        text = texts[key]
        if text is not None:
            messages.append(_imported(key, kept_parent[key], text, index[key], Branch.MAIN))
    alternates = [
        _imported(key, kept_parent[key], text, index[key], Branch.ALTERNATE)
        for key, text in texts.items()
        if text is not None and key not in on_main
    ]
    alternates.sort(key=lambda message: message.index)  # stable: parents first, then file order

    model = default_model
    if model is None:
        model = next((m.model for m in reversed(messages) if m.model is not None), None)
    return ImportedConversation(
        source_id=source_id,
        title=title,
        provider=PROVIDER,
        model=model,
        created_at_ms=created_at_ms,
        updated_at_ms=updated_at_ms,
        messages=tuple(messages),
        alternates=tuple(alternates),
        skipped=skipped,
    )


def _imported(
    key: str, parent_key: str | None, text: _Text, index: int, branch: Branch
) -> ImportedMessage:
    return ImportedMessage(
        key=key,
        parent_key=parent_key,
        role=text.role,
        content=text.content,
        created_at_ms=text.created_at_ms,
        index=index,
        branch=branch,
        model=text.model,
    )


def _message(value: object, path: str) -> _Text | None:
    """The text of a node's message, or None if it is to be skipped."""
    message = expect_dict(value, path)
    author = expect_dict(message.get("author"), f"{path}.author")
    role = expect_str(author.get("role"), f"{path}.author.role")
    if not role:
        raise MalformedExport(f"{path}.author.role", "expected a role, got an empty string")
    metadata_value = message.get("metadata")
    metadata = {} if metadata_value is None else expect_dict(metadata_value, f"{path}.metadata")
    model = optional_str(metadata.get("model_slug"), f"{path}.metadata.model_slug")
    created_at_ms = seconds_to_ms(message.get("create_time"), f"{path}.create_time")
    content = _content_text(message.get("content"), f"{path}.content")
    if metadata.get("is_visually_hidden_from_conversation") is True or not content.strip():
        return None
    return _Text(role=role, content=content, created_at_ms=created_at_ms, model=model)


def _content_text(value: object, path: str) -> str:
    content = expect_dict(value, path)
    optional_str(content.get("content_type"), f"{path}.content_type")
    if "parts" in content:
        parts = expect_list(content["parts"], f"{path}.parts")
        texts = []
        for position, part in enumerate(parts):
            if isinstance(part, dict) and part.get("content_type") == "audio_transcription":
                part = part.get("text")  # what was said in voice mode: text after all
                if not isinstance(part, str):
                    raise MalformedExport(
                        f"{path}.parts[{position}].text", f"expected a string, got {describe(part)}"
                    )
            if isinstance(part, str):
                if part:
                    texts.append(part)
            elif not isinstance(part, dict):
                raise MalformedExport(
                    f"{path}.parts[{position}]",
                    f"expected a string or an object, got {describe(part)}",
                )
        return PART_SEPARATOR.join(texts)
    return optional_str(content.get("text"), f"{path}.text") or ""


def _path_to(leaf: str, parents: dict[str, str | None], mapping_path: str) -> list[str]:
    """The node ids from the root down to `leaf`."""
    path = [leaf]
    seen = {leaf}
    parent = parents[leaf]
    while parent is not None:
        if parent in seen:
            raise MalformedExport(
                f"{key_path(mapping_path, path[-1])}.parent", "parent links form a cycle"
            )
        seen.add(parent)
        path.append(parent)
        parent = parents[parent]
    path.reverse()
    return path


def _kept_ancestry(
    parents: dict[str, str | None], texts: dict[str, _Text | None], mapping_path: str
) -> tuple[dict[str, str | None], dict[str, int]]:
    """For every node: its nearest kept ancestor, and how many kept ancestors it has."""
    kept_parent: dict[str, str | None] = {}
    index: dict[str, int] = {}
    for start in parents:
        chain: list[str] = []
        on_chain: set[str] = set()
        key: str | None = start
        while key is not None and key not in index:
            if key in on_chain:
                raise MalformedExport(
                    f"{key_path(mapping_path, chain[-1])}.parent", "parent links form a cycle"
                )
            chain.append(key)
            on_chain.add(key)
            key = parents[key]
        for node in reversed(chain):
            parent = parents[node]
            if parent is None:
                kept_parent[node], index[node] = None, 0
            elif texts[parent] is not None:
                kept_parent[node], index[node] = parent, index[parent] + 1
            else:
                kept_parent[node], index[node] = kept_parent[parent], index[parent]
    return kept_parent, index
