"""Errors raised by the storage layer.

Each message says what went wrong and what to do, because the node prints it as the one line a
user sees (`error: <message>`) when the vault cannot be opened.
"""

from pathlib import Path


class StoreError(Exception):
    """Base of every error raised by `store/`."""


class DatabaseUnavailable(StoreError):
    """The database file could not be opened or locked (missing directory, permissions, held by
    another process). Nothing in the file was changed.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot open the database {path}: {reason}")
        self.path = path
        self.reason = reason


class DatabaseCorrupt(StoreError):
    """The file is not a SQLite database, or not one vivim-node wrote; it is left untouched."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} is not a usable vivim-node database ({reason}); it was left untouched: "
            "move it aside or restore it from a backup"
        )
        self.path = path
        self.reason = reason


class SchemaTooNew(StoreError):
    """The database was written by a newer vivim-node, whose schema this build does not know.

    The file is left untouched: old code running on it could lose what the newer schema stores.
    """

    def __init__(self, *, found: int, supported: int) -> None:
        super().__init__(
            f"the database has schema version {found} but this build of vivim-node supports up to "
            f"version {supported}: upgrade vivim-node to open it"
        )
        self.found = found
        self.supported = supported


class IdentityConflict(StoreError):
    """The vault already holds a different identity: one vault belongs to exactly one DID."""

    def __init__(self, *, stored: str, offered: str) -> None:
        super().__init__(
            f"this vault belongs to {stored}, not {offered}: use a separate data directory for "
            "another identity"
        )
        self.stored = stored
        self.offered = offered
