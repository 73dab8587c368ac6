"""The wire messages of `/vivim/sync/1.0.0` (Pull, Batch, SyncError), their codec and limits.

A module of its own, as for pairing, so that the codecs read and are tested apart from the
turn-taking in `protocols.sync`, which re-exports every name here. Each message checks its fields
when it is built, so a message that exists is a valid one, whether we built it or decoded it;
`decode_message` picks the class by the wire map's `type`.

The per-device maps (a Pull's cursor, a Batch's heads, a gossip Announce's heads) are checked by
`check_device_seqs`, shared with `protocols.gossip`: keys are devices' peer ids, values sequence
numbers. A device's ops are numbered from 1 (`protocols.oplog`), so 0 means "none of its ops".
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import BatchTooLarge, InvalidPeerId, MalformedInput
from protocols.peer_id import ed25519_public_key_from_peer_id

__all__ = [
    "BATCH",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_OPS",
    "MAX_CURSOR_DEVICES",
    "MAX_ERROR_CODE",
    "MAX_ERROR_MESSAGE",
    "MAX_SEQ",
    "PULL",
    "SYNC_ERROR",
    "Batch",
    "BatchTooLarge",
    "Message",
    "Pull",
    "SyncError",
    "check_device_seqs",
    "decode_message",
]

PULL = "vivim.sync.pull.v1"
BATCH = "vivim.sync.batch.v1"
SYNC_ERROR = "vivim.sync.error.v1"

# The store keeps seq in a signed 64-bit SQLite INTEGER (as `protocols.oplog.MAX_SEQ`).
MAX_SEQ = 2**63 - 1
# Devices in one cursor or heads map. An identity has a handful of devices and a peer may serve
# the ops of the people it shares with; 4096 devices (about 260 KB of map) bounds what one
# message makes us parse (each key is a peer id to decode) while leaving room for all of them.
MAX_CURSOR_DEVICES = 4096
# What one Batch may hold at most; a Pull asks for at most this much. 10 000 ops or 4 MiB keep a
# batch, and the transaction the client applies it in, small against the node's memory budget,
# while amortising a round trip over many ops of an initial sync.
MAX_BATCH_OPS = 10_000
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_ERROR_CODE = 64
MAX_ERROR_MESSAGE = 1000
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_device_seqs(name: str, value: object) -> Mapping[str, int]:
    """A read-only copy of a map of device peer id -> seq (0 <= seq <= MAX_SEQ, at most
    MAX_CURSOR_DEVICES entries); `MalformedInput` (`InvalidPeerId` for a key) if it is not one.

    The copy is taken before the checks, so a caller's dict changed afterwards changes nothing.
    """
    if not isinstance(value, Mapping):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a map")
    if len(value) > MAX_CURSOR_DEVICES:
        raise MalformedInput(f"{name} has {len(value)} devices, more than {MAX_CURSOR_DEVICES}")
    copy = dict(value)
    for device, seq in copy.items():
        if not isinstance(device, str):
            raise MalformedInput(f"{name} has a key of type {type(device).__name__}, expected str")
        try:
            ed25519_public_key_from_peer_id(device)
        except InvalidPeerId as err:
            raise InvalidPeerId(f"{name} key {device!r:.60} is not a device: {err}") from err
        _check_int(f"{name}[{device}]", seq, 0, MAX_SEQ)
    return MappingProxyType(copy)


def _check_int(name: str, value: object, least: int, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected int")
    if not least <= value <= most:
        raise MalformedInput(f"{name} is {value}, expected {least} to {most}")


def _check_str(name: str, value: object, most: int) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    if len(value) > most:
        raise MalformedInput(f"{name} is {len(value)} characters, more than {most}")
    return value


class _Wire:
    """`to_wire`/`from_wire`: canonical CBOR of `{"type": TYPE, field: value, ...}`.

    Tuples travel as CBOR arrays and mappings as CBOR maps; `decode_message` turns them back.
    """

    TYPE: ClassVar[str]

    def to_wire(self) -> bytes:
        wire: dict[str, object] = {"type": self.TYPE}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            wire[item.name] = value
        return canonical_encode(wire)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode this message type's wire bytes; `MalformedInput` for anything else."""
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MalformedInput(f"message is a {message.TYPE}, expected a {cls.TYPE}")
        return message


@dataclass(frozen=True, kw_only=True)
class Pull(_Wire):
    """Client -> server: send me the ops after `cursor`, at most `max_ops` ops and `max_bytes`.

    `cursor` maps each device to the highest seq the client holds with none missing before it;
    a device left out is one the client holds nothing of (as seq 0). The limits are the client's:
    it decides how much it verifies and applies in one transaction.
    """

    TYPE: ClassVar[str] = PULL
    cursor: Mapping[str, int]
    max_ops: int
    max_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "cursor", check_device_seqs("cursor", self.cursor))
        _check_int("max_ops", self.max_ops, 1, MAX_BATCH_OPS)
        _check_int("max_bytes", self.max_bytes, 1, MAX_BATCH_BYTES)


@dataclass(frozen=True, kw_only=True)
class Batch(_Wire):
    """Server -> client: the next ops after the Pull's cursor, its heads, and whether it is done.

    `ops` are op wire bytes, opaque here: the client's store verifies them. `heads` are the
    server's highest seq per device, for the client's lag display. `done` says the server holds
    nothing after this batch for the pulled cursor; a batch without ops is necessarily done (an
    empty batch that is not done would make a client pull the same cursor for ever).

    The protocol's absolute limits are checked here (`BatchTooLarge`); the session checks the
    tighter limits of the Pull answered. One op larger than the byte limit may travel alone.
    """

    TYPE: ClassVar[str] = BATCH
    ops: tuple[bytes, ...]
    heads: Mapping[str, int]
    done: bool

    def __post_init__(self) -> None:
        if not isinstance(self.ops, tuple):
            raise MalformedInput(f"ops is a {type(self.ops).__name__}, expected a list")
        if len(self.ops) > MAX_BATCH_OPS:
            raise BatchTooLarge(f"batch of {len(self.ops)} ops, more than {MAX_BATCH_OPS}")
        for op in self.ops:
            if not isinstance(op, bytes):
                raise MalformedInput(f"ops holds a {type(op).__name__}, expected bytes")
            if not op:
                raise MalformedInput("ops holds an empty byte string")
        if len(self.ops) > 1 and self.op_bytes > MAX_BATCH_BYTES:
            raise BatchTooLarge(
                f"batch of {self.op_bytes} bytes of ops, more than {MAX_BATCH_BYTES}"
            )
        object.__setattr__(self, "heads", check_device_seqs("heads", self.heads))
        if not isinstance(self.done, bool):
            raise MalformedInput(f"done is a {type(self.done).__name__}, expected bool")
        if not self.ops and not self.done:
            raise MalformedInput("a batch without ops must be done")

    @property
    def op_bytes(self) -> int:
        """The total length of the ops, which the Pull's `max_bytes` bounds."""
        return sum(len(op) for op in self.ops)


@dataclass(frozen=True, kw_only=True)
class SyncError(_Wire):
    """Either side: why it stops. `code` is a wire error code, `message` is for a person."""

    TYPE: ClassVar[str] = SYNC_ERROR
    code: str
    message: str

    def __post_init__(self) -> None:
        if _ERROR_CODE.fullmatch(_check_str("code", self.code, MAX_ERROR_CODE)) is None:
            raise MalformedInput(f"error code {self.code!r:.70} is not like 'invalid_op'")
        _check_str("message", self.message, MAX_ERROR_MESSAGE)


Message = Pull | Batch | SyncError
_MESSAGE_CLASSES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Pull, Batch, SyncError)
}


def decode_message(data: bytes) -> Message:
    """The message whose wire bytes are `data`, its class picked by `type`; `MalformedInput`."""
    value = canonical_decode(data)
    type_name = value.get("type") if isinstance(value, dict) else None
    cls = _MESSAGE_CLASSES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MalformedInput(f"not a sync message (type {type_name!r:.60})")
    assert isinstance(value, dict)
    expected = {"type"} | {item.name for item in fields(cls)}
    if value.keys() != expected:
        missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
        raise MalformedInput(
            f"{cls.TYPE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
        )
    arguments: dict[str, Any] = {
        name: tuple(item) if isinstance(item, list) else item
        for name, item in value.items()
        if name != "type"
    }
    return cls(**arguments)
