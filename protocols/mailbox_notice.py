"""The relay's push notice: mail arrived for a recipient connected to it.

A relay that stores an envelope for a recipient it is connected to opens a stream of
`MAILBOX_NOTICE_PROTOCOL_ID` to it, writes `encode_notice(recipient_did, count)` and closes its
side; the recipient reads it with a `NoticeReader` and lists and fetches at once. A protocol id of
its own, not `/vivim/mailbox/1.0.0`, because the recipient may be a relay too: its mailbox
handler serves requests, and a notice is none.

A Notice is a hint, like a gossip Announce: it carries nothing to verify and has no reply. A
lost one costs only a delay (the recipient fetches on every (re)connection to its relays), so
the recipient just drops a stream that is not one well-formed Notice.
"""

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
from protocols.identity_records import MAX_UINT, _check_did
from protocols.sync_messages import _check_int

__all__ = [
    "MAILBOX_NOTICE_PROTOCOL_ID",
    "MAX_NOTICE_FRAME",
    "NEED_DATA",
    "NOTICE",
    "ClosedEarly",
    "NeedData",
    "Notice",
    "NoticeReader",
    "TruncatedFrame",
    "UnexpectedMessage",
    "encode_notice",
]

MAILBOX_NOTICE_PROTOCOL_ID = "/vivim/mailbox/notice/1.0.0"
NOTICE = "vivim.mailbox.notice.v1"
MAX_NOTICE_FRAME = 1024  # a Notice is a DID and a count: about 110 bytes of CBOR


@dataclass(frozen=True, kw_only=True)
class Notice:
    """The relay holds `count` envelopes for `recipient_did` (after the one that just came)."""

    TYPE: ClassVar[str] = NOTICE
    recipient_did: str
    count: int

    def __post_init__(self) -> None:
        _check_did("recipient_did", self.recipient_did)
        _check_int("count", self.count, 0, MAX_UINT)

    def to_wire(self) -> bytes:
        return canonical_encode(
            {"type": NOTICE, "count": self.count, "recipient_did": self.recipient_did}
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode a Notice's canonical CBOR; `MalformedInput` for anything else."""
        value = canonical_decode(data)
        if not isinstance(value, dict) or value.get("type") != NOTICE:
            type_name = value.get("type") if isinstance(value, dict) else None
            raise MalformedInput(f"not a mailbox notice (type {type_name!r:.60})")
        expected = {"type", "recipient_did", "count"}
        if value.keys() != expected:
            missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
            raise MalformedInput(
                f"{NOTICE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
            )
        return cls(recipient_did=value["recipient_did"], count=value["count"])


def encode_notice(recipient_did: str, count: int) -> bytes:
    """The framed Notice, all there is to write on a notice stream."""
    try:
        notice = Notice(recipient_did=recipient_did, count=count)
    except MalformedInput as err:
        raise LocalProtocolError(f"cannot send this notice: {err}") from err
    return encode_frame(notice.to_wire(), MAX_NOTICE_FRAME)


class NoticeReader:
    """Reads the one Notice of a notice stream, sans-I/O (as `protocols.gossip.AnnounceReader`):

        reader.receive_data(chunk)      # b"" means EOF
        reader.next_event()             # the Notice, then NEED_DATA; or NEED_DATA until it came

    Raises (a `RemoteProtocolError`, raised again by every later call): `ClosedEarly` for a
    stream that ended with no byte of a frame, `TruncatedFrame` for one that ended inside it,
    `MalformedInput` (`FrameTooLarge`...) for a frame that is not a Notice, and
    `UnexpectedMessage` for any byte after it.
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder(MAX_NOTICE_FRAME)
        self._noticed = False
        self._error: RemoteProtocolError | None = None

    @property
    def noticed(self) -> bool:
        """Whether `next_event` has returned the Notice."""
        return self._noticed

    def receive_data(self, data: bytes) -> None:
        """Bytes from the stream; `b""` is EOF. Call `next_event` until NEED_DATA after each."""
        self._decoder.receive_data(data)

    def next_event(self) -> Notice | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._read()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _read(self) -> Notice | NeedData:
        if self._noticed:
            if self._decoder.buffered:
                raise UnexpectedMessage("the relay wrote more after its Notice")
            return NEED_DATA
        frame = self._decoder.next_frame()
        if isinstance(frame, NeedData):
            if self._decoder.closed:
                raise ClosedEarly("the relay closed the notice stream without a Notice")
            return NEED_DATA
        notice = Notice.from_wire(frame)
        self._noticed = True
        return notice
