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


# --- the vault ------------------------------------------------------------------------------------


class ConversationNotFound(StoreError):
    """No conversation with this id is in the vault (never imported, or deleted)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"no conversation {conversation_id} in the vault (unknown or deleted)")
        self.conversation_id = conversation_id


class AcuNotFound(StoreError):
    """No ACU with this id is in the vault."""

    def __init__(self, acu_id: str) -> None:
        super().__init__(f"no ACU {acu_id} in the vault")
        self.acu_id = acu_id


class AcuUnchanged(StoreError):
    """An edit gave an ACU the content it already has: there is no new version to create."""

    def __init__(self, acu_id: str) -> None:
        super().__init__(f"ACU {acu_id} already has this content: nothing to edit")
        self.acu_id = acu_id


class SharingLevelLowered(StoreError):
    """A sharing level can only rise (SELF < CIRCLES < NETWORK < GLOBAL): what was shared stays
    shared. Nothing was changed.
    """

    def __init__(self, acu_id: str, *, current: str, requested: str) -> None:
        super().__init__(
            f"ACU {acu_id} is shared at {current}; its sharing level cannot be lowered to "
            f"{requested} (it only rises)"
        )
        self.acu_id = acu_id
        self.current = current
        self.requested = requested


class InvalidCursor(StoreError):
    """A pagination cursor that no listing of this vault returned."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"invalid cursor {cursor!r:.80}: pass back a next_cursor of a listing")
        self.cursor = cursor


# --- devices and identity keys --------------------------------------------------------------------


class TrustRefused(StoreError):
    """A device or identity change this device may not make (its message says why and what to
    do instead). Nothing was written."""
