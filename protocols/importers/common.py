"""What the importers share: the error that names a path, problem records, value checks.

Every check takes the path of the value it looks at (`conversations[12].mapping["abc"].message`)
and raises `MalformedExport` naming it, so the user can find the spot in a file of any size.
"""

import json
import math
from dataclasses import dataclass

from protocols.errors import MalformedInput

__all__ = [
    "MAX_TIME_MS",
    "ImportProblem",
    "MalformedExport",
    "describe",
    "expect_dict",
    "expect_list",
    "expect_str",
    "item_path",
    "key_path",
    "optional_str",
    "seconds_to_ms",
]

# Times are HLC-sized (48-bit milliseconds, about the year 10889); anything later is a mistake.
MAX_TIME_MS = 2**48 - 1


class MalformedExport(MalformedInput):
    """An export file is not what its format says; `path` names the value that is wrong."""

    code = "malformed_export"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class ImportProblem:
    """A conversation of the file that could not be read; the others are read on.

    `position` is its place in the file's list, `source_id` its own id when that could be read,
    `path` and `reason` what is wrong (as in `MalformedExport`).
    """

    position: int
    source_id: str | None
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def describe(value: object) -> str:
    """A short name for the JSON type of `value`, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def key_path(path: str, key: str) -> str:
    """The path of a map entry whose key is data (a node id), quoted as JSON."""
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def expect_dict(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MalformedExport(path, f"expected an object, got {describe(value)}")
    return value


def expect_list(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise MalformedExport(path, f"expected a list, got {describe(value)}")
    return value


def expect_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise MalformedExport(path, f"expected a string, got {describe(value)}")
    return value


def optional_str(value: object, path: str) -> str | None:
    """A string, or None for null or a missing field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedExport(path, f"expected a string or null, got {describe(value)}")
    return value


def seconds_to_ms(value: object, path: str) -> int | None:
    """Epoch seconds (a JSON number, fractions allowed) as integer milliseconds; None for null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedExport(path, f"expected epoch seconds or null, got {describe(value)}")
    if not math.isfinite(value) or not 0 <= value * 1000 <= MAX_TIME_MS:
        raise MalformedExport(path, f"time {value!r} is out of range")
    return round(value * 1000)
