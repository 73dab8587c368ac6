"""Private key files: one key per file, mode 0600, never overwritten.

The format is three lines of text so that a person can tell what a file is (`head` shows it) and so
a truncated or edited file is detected rather than silently used:

    vivim-node key v1
    ed25519-seed
    <64 hex digits>

Keys are created with O_EXCL, so no code path can replace an existing key; the caller decides what
to do when one exists. A key file that other users can read is refused, like ssh does, because a
key others have read is no longer private.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeError

HEADER = "vivim-node key v1"
KEY_KINDS = ("ed25519-seed", "x25519-private")
KEY_LENGTH = 32
KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700


class KeyFileError(NodeError):
    """A key file is missing, unreadable, corrupt or too open."""


@dataclass(frozen=True)
class KeyFile:
    path: Path
    kind: str

    def write_new(self, secret: bytes) -> None:
        """Create the file with the key; refuse if it already exists."""
        if self.kind not in KEY_KINDS or len(secret) != KEY_LENGTH:
            raise ValueError(f"bad key kind or length for {self.path}")
        self.path.parent.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
        text = f"{HEADER}\n{self.kind}\n{secret.hex()}\n".encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        except FileExistsError as err:
            raise KeyFileError(f"{self.path} already exists; refusing to overwrite a key") from err
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> bytes:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError as err:
            raise KeyFileError(
                f"key file {self.path} is missing: restore it from a backup, or run "
                "`vivim-node init` in an empty data directory to create a new identity"
            ) from err
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {self.path} has mode {stat.S_IMODE(mode):04o}, readable by others: "
                f"run `chmod 600 {self.path}`"
            )
        try:
            lines = self.path.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise self._corrupt("not a text key file") from err
        if len(lines) != 3 or lines[0] != HEADER:
            raise self._corrupt(f"expected the header {HEADER!r} and two more lines")
        if lines[1] != self.kind:
            raise self._corrupt(f"holds a {lines[1]!r} key, expected {self.kind!r}")
        try:
            secret = bytes.fromhex(lines[2])
        except ValueError as err:
            raise self._corrupt("the key is not hex") from err
        if len(secret) != KEY_LENGTH:
            raise self._corrupt(f"the key is {len(secret)} bytes, expected {KEY_LENGTH}")
        return secret

    def _corrupt(self, why: str) -> KeyFileError:
        return KeyFileError(
            f"key file {self.path} is corrupt ({why}): restore it from a backup; "
            "`vivim-node init` never overwrites keys"
        )


def identity_key_file(data_dir: Path) -> KeyFile:
    """The person's identity (DID) signing key."""
    return KeyFile(data_dir / "keys" / "identity.key", "ed25519-seed")


def encryption_key_file(data_dir: Path) -> KeyFile:
    """The person's X25519 encryption key."""
    return KeyFile(data_dir / "keys" / "encryption.key", "x25519-private")


def device_key_file(data_dir: Path) -> KeyFile:
    """This device's Ed25519 key, which is also its libp2p key (device id = peer id)."""
    return KeyFile(data_dir / "keys" / "device.key", "ed25519-seed")
