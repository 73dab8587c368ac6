"""Importers: conversation exports (already parsed JSON values) to `ImportedConversation`s.

Each format has a `parse_*_export(data) -> Iterator[ImportedConversation | ImportProblem]`: the
conversations in file order, a malformed one reported as an `ImportProblem` (naming the path of
the bad value) while the rest are read on; a file whose top level is wrong raises
`MalformedExport` at once. Nothing here reads files or clocks: the caller parses the JSON.
"""

from collections.abc import Iterator

from protocols.errors import LocalProtocolError
from protocols.importers.chatgpt import parse_chatgpt_export
from protocols.importers.common import ImportProblem, MalformedExport
from protocols.importers.vivim_format import parse_vivim_export
from protocols.vault_records import ImportedConversation

__all__ = [
    "FORMATS",
    "ImportProblem",
    "MalformedExport",
    "detect_format",
    "parse_chatgpt_export",
    "parse_export",
    "parse_vivim_export",
]

FORMATS = ("chatgpt", "vivim")


def detect_format(data: object) -> str:
    """ "chatgpt" for a list whose first item has a `mapping`, else "vivim" (which then checks)."""
    if isinstance(data, list) and data and isinstance(data[0], dict) and "mapping" in data[0]:
        return "chatgpt"
    return "vivim"


def parse_export(
    data: object, export_format: str | None = None
) -> Iterator[ImportedConversation | ImportProblem]:
    """Parse `data` as `export_format` (one of `FORMATS`), or as `detect_format` says when None."""
    chosen = detect_format(data) if export_format is None else export_format
    if chosen == "chatgpt":
        return parse_chatgpt_export(data)
    if chosen == "vivim":
        return parse_vivim_export(data)
    raise LocalProtocolError(
        f"unknown export format {chosen!r} (expected one of {', '.join(FORMATS)})"
    )
