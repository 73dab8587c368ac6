"""Errors raised by the node layer.

A `NodeError` reaching the process entry point is printed as one line, `error: <message>`, and the
process exits with a non-zero status: its message must say what went wrong and what to do.
"""


class NodeError(Exception):
    """Base of every error raised by `node/`."""

    exit_code: int = 1
