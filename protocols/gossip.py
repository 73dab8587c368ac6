"""`/vivim/gossip/1.0.0`: a node tells a peer its heads, so a peer that is behind knows to pull.

One stream per announce, one frame on it: the sender writes `encode_announce(heads)` and closes
its side; the receiver reads it with an `AnnounceReader` and compares the heads with its own
cursor (`behind`, `lag`), pulling by `/vivim/sync/1.0.0` if it lacks anything. Gossip is a hint,
never the data: a lost or stale Announce costs only a later sync (periodic anti-entropy catches
what gossip missed), so it carries nothing to verify and has no reply, no error frame and no
session to speak of. The receiver just drops a stream that is not one well-formed Announce.

`heads` maps each device (peer id) to the highest seq the sender holds without a gap, with the
bounds of a sync cursor (`protocols.sync_messages.check_device_seqs`).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import (
    ClosedEarly,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
    TruncatedFrame,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from protocols.sync_messages import MAX_CURSOR_DEVICES, MAX_SEQ, check_device_seqs

__all__ = [
    "ANNOUNCE",
    "GOSSIP_PROTOCOL_ID",
    "MAX_CURSOR_DEVICES",
    "MAX_FRAME",
    "MAX_SEQ",
    "NEED_DATA",
    "Announce",
    "AnnounceReader",
    "ClosedEarly",
    "NeedData",
    "TruncatedFrame",
    "UnexpectedMessage",
    "behind",
    "encode_announce",
    "lag",
]

GOSSIP_PROTOCOL_ID = "/vivim/gossip/1.0.0"
ANNOUNCE = "vivim.gossip.announce.v1"
# A full heads map is 4096 entries of a 52-character peer id (54 bytes in CBOR) and a seq (at most
# 9 bytes): 258 048 bytes, which with the map around them fits in 256 KiB (a test checks it).
MAX_FRAME = 256 * 1024


@dataclass(frozen=True, kw_only=True)
class Announce:
    """The sender's heads: per device, the highest seq it holds without a gap."""

    TYPE: ClassVar[str] = ANNOUNCE
    heads: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", check_device_seqs("heads", self.heads))

    def to_wire(self) -> bytes:
        return canonical_encode({"type": ANNOUNCE, "heads": dict(self.heads)})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode an Announce's canonical CBOR; `MalformedInput` for anything else."""
        value = canonical_decode(data)
        if not isinstance(value, dict) or value.get("type") != ANNOUNCE:
            type_name = value.get("type") if isinstance(value, dict) else None
            raise MalformedInput(f"not a gossip announce (type {type_name!r:.60})")
        if value.keys() != {"type", "heads"}:
            missing = sorted({"heads"} - value.keys())
            extra = sorted(value.keys() - {"type", "heads"})
            raise MalformedInput(
                f"{ANNOUNCE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
            )
        return cls(heads=value["heads"])


def encode_announce(heads: Mapping[str, int]) -> bytes:
    """The framed Announce of `heads`, all there is to write on a gossip stream."""
    try:
        announce = Announce(heads=heads)
    except MalformedInput as err:
        raise LocalProtocolError(f"cannot announce these heads: {err}") from err
    return encode_frame(announce.to_wire(), MAX_FRAME)


class AnnounceReader:
    """Reads the one Announce of a gossip stream, sans-I/O:

        reader.receive_data(chunk)      # b"" means EOF
        reader.next_event()             # the Announce, then NEED_DATA; or NEED_DATA until it came

    Raises (a `RemoteProtocolError`, raised again by every later call): `ClosedEarly` for a
    stream that ended with no byte of a frame, `TruncatedFrame` for one that ended inside it,
    `MalformedInput` (`FrameTooLarge`...) for a frame that is not an Announce, and
    `UnexpectedMessage` for any byte after the frame.
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder(MAX_FRAME)
        self._announced = False
        self._error: RemoteProtocolError | None = None

    @property
    def announced(self) -> bool:
        """Whether `next_event` has returned the Announce."""
        return self._announced

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def next_event(self) -> Announce | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._read()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _read(self) -> Announce | NeedData:
        if self._announced:
            if self._decoder.buffered:
                raise UnexpectedMessage("the sender wrote more after its Announce")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if self._decoder.closed:
                raise ClosedEarly("the sender closed the gossip stream without an Announce")
            return NEED_DATA
        announce = Announce.from_wire(frame)
        self._announced = True
        return announce


def behind(ours: Mapping[str, int], theirs: Mapping[str, int]) -> dict[str, int]:
    """Per device where `theirs` is ahead of `ours`, how many ops we lack (a device missing from
    `ours` counts as 0: we hold none of its ops). Empty when there is nothing to pull.

    Counts what the heads say, not what we are allowed to get: a server sends only the ops its
    client may see, so a device can stay "behind" after a complete sync; the caller decides.
    """
    return {
        device: head - ours.get(device, 0)
        for device, head in theirs.items()
        if head > ours.get(device, 0)
    }


def lag(ours: Mapping[str, int], theirs: Mapping[str, int]) -> int:
    """How many ops in all `theirs` holds that `ours` lacks: the sum of `behind`."""
    return sum(behind(ours, theirs).values())
