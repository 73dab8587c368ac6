"""Key files: 0600, never overwritten, corruption and loose permissions detected."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.keys import KeyFile, KeyFileError

SECRET = bytes(range(32))


def key_file(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "keys" / "device.key", "ed25519-seed")


def test_round_trip_with_private_modes(tmp_path: Path) -> None:
    kf = key_file(tmp_path)
    kf.write_new(SECRET)
    assert kf.read() == SECRET
    assert stat.S_IMODE(kf.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(kf.path.parent.stat().st_mode) == 0o700


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    kf = key_file(tmp_path)
    kf.write_new(SECRET)
    before = kf.path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        kf.write_new(bytes(32))
    assert kf.path.read_bytes() == before


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="missing"):
        key_file(tmp_path).read()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "header"),
        (b"garbage\n", "header"),
        (b"vivim-node key v1\nx25519-private\n" + SECRET.hex().encode() + b"\n", "expected"),
        (b"vivim-node key v1\ned25519-seed\nzz" + SECRET.hex().encode()[2:] + b"\n", "not hex"),
        (b"vivim-node key v1\ned25519-seed\n" + SECRET.hex().encode()[:-2] + b"\n", "31 bytes"),
        (b"\xff\xfe\x00", "not a text key file"),
    ],
)
def test_corrupt_files_are_refused_with_the_reason(
    tmp_path: Path, content: bytes, why: str
) -> None:
    kf = key_file(tmp_path)
    kf.path.parent.mkdir(parents=True)
    kf.path.write_bytes(content)
    os.chmod(kf.path, 0o600)
    with pytest.raises(KeyFileError, match=why) as err:
        kf.read()
    assert str(kf.path) in str(err.value)
    assert "backup" in str(err.value)


def test_every_truncation_of_a_valid_file_is_refused(tmp_path: Path) -> None:
    kf = key_file(tmp_path)
    kf.write_new(SECRET)
    whole = kf.path.read_bytes()
    for cut in range(len(whole) - 1):  # the last byte is the final newline
        kf.path.write_bytes(whole[:cut])
        with pytest.raises(KeyFileError):
            kf.read()


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    kf = key_file(tmp_path)
    kf.write_new(SECRET)
    os.chmod(kf.path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        kf.read()
