"""Errors raised by the node layer.

A `NodeError` reaching the process entry point is printed as one line, `error: <message>`, and the
process exits with a non-zero status: its message must say what went wrong and what to do.
"""

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class NodeError(Exception):
    """Base of every error raised by `node/`."""

    exit_code: int = 1


def find_exception(error: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The first `kind` in `error`, looking inside (nested) exception groups.

    trio wraps whatever escapes a nursery in an ExceptionGroup, so an error meant for the user
    (a port in use, a corrupt key) can arrive several groups deep.
    """
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = find_exception(inner, kind)
            if found is not None:
                return found
    return None
