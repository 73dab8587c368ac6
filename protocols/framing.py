"""Length-prefixed frames: how a stream of bytes is cut back into the messages it carries.

A frame is the payload's length as an unsigned LEB128 varint (seven bits a byte, least significant
group first, high bit set on every byte but the last; the same varint libp2p and multiformats
use), then the payload. A stream gives bytes in whatever pieces the transport delivers, so
`FrameDecoder` buffers them and hands out whole frames, sans-I/O (the h11 shape):

    decoder.receive_data(chunk)          # b"" means the peer closed its side (EOF)
    frame = decoder.next_frame()         # bytes, or NEED_DATA until a whole frame is buffered

What is refused, and why:
- A length over `max_size` raises `FrameTooLarge` as soon as the prefix says so, even before the
  prefix is complete, so no body that would be refused is kept waiting for the rest of it.
- A prefix of more than ten bytes, one with a redundant last byte (`80 00` for 0) or one over 64
  bits raises `MalformedInput`: each length has exactly one spelling, as in canonical CBOR.
- EOF in the middle of a frame raises `TruncatedFrame`; EOF between frames is a clean end
  (`closed` becomes True and `next_frame` returns NEED_DATA).

Memory: after `next_frame` has returned NEED_DATA the buffer holds less than one frame, at most
`max_size + MAX_VARINT_LENGTH` bytes (a prefix, and a body whose length was checked). The caller
must call `next_frame` until NEED_DATA after every `receive_data`; `receive_data` refuses with
`LocalProtocolError` to add to a buffer that was not drained, so the decoder never holds more than
one pending frame plus the last chunk the caller read.

Errors leave the decoder as it was: calling `next_frame` again raises the same error.
"""

from typing import Final

from protocols.errors import FrameTooLarge, LocalProtocolError, MalformedInput, TruncatedFrame

__all__ = [
    "MAX_VARINT_LENGTH",
    "NEED_DATA",
    "FrameDecoder",
    "FrameTooLarge",
    "MalformedInput",
    "NeedData",
    "TruncatedFrame",
    "encode_frame",
    "encode_varint",
]

# Ten 7-bit groups hold 70 bits, enough for any 64-bit length; nothing longer is a length.
MAX_VARINT_LENGTH = 10
MAX_VARINT = 2**64 - 1


class NeedData:
    """The sentinel `next_frame` (and a session's `next_event`) returns: feed more bytes first.

    A class of its own (with the one instance `NEED_DATA`) rather than None, so that the type
    checker tells "no frame yet" apart from a frame, and a reader sees what it means.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


def encode_varint(value: int) -> bytes:
    """The unsigned LEB128 varint of `value` (0 <= value < 2**64), in its one minimal spelling."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VARINT:
        raise LocalProtocolError(f"a varint holds an int in [0, 2**64 - 1], not {value!r:.40}")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_frame(payload: bytes, max_size: int) -> bytes:
    """`payload` with its length prefix; `LocalProtocolError` if it is longer than `max_size`.

    Refusing here, on the sending side, turns what would be the peer's `FrameTooLarge` into our
    own error, where the bug is.
    """
    if not isinstance(payload, bytes):
        raise LocalProtocolError(f"a frame's payload is bytes, not {type(payload).__name__}")
    if len(payload) > max_size:
        raise LocalProtocolError(f"frame of {len(payload)} bytes is over the limit of {max_size}")
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Cuts a stream into frames of at most `max_size` bytes; see the module docstring."""

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise LocalProtocolError(f"max_size is an int, not {type(max_size).__name__}")
        if not 0 <= max_size <= MAX_VARINT:
            raise LocalProtocolError(f"max_size {max_size} is outside [0, 2**64 - 1]")
        self._max_size = max_size
        self._buffer = bytearray()
        self._eof = False

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet handed out as frames."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        """Whether the peer closed the stream and every frame before the EOF was handed out."""
        return self._eof and not self._buffer

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the stream; `b""` means EOF. Never parses (see `next_frame`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"data is bytes, not {type(data).__name__}")
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after EOF")
        if len(self._buffer) > self._max_size + MAX_VARINT_LENGTH:
            raise LocalProtocolError(
                "the buffer holds more than one frame: call next_frame until NEED_DATA first"
            )
        self._buffer += data

    def next_frame(self) -> bytes | NeedData:
        """The next whole frame's payload, or NEED_DATA; raises `MalformedInput` subclasses."""
        header = self._read_length()
        if header is None:
            if self._eof and self._buffer:
                raise TruncatedFrame("the stream ended inside a frame's length prefix")
            return NEED_DATA
        length, start = header
        end = start + length
        if len(self._buffer) < end:
            if self._eof:
                raise TruncatedFrame(
                    f"the stream ended after {len(self._buffer) - start} of a frame's "
                    f"{length} bytes"
                )
            return NEED_DATA
        frame = bytes(self._buffer[start:end])
        del self._buffer[:end]
        return frame

    def _read_length(self) -> tuple[int, int] | None:
        """(payload length, prefix length) of the buffered frame, or None if the prefix is partial.

        Checks the limit after every byte of the prefix: the bytes still to come can only add to
        the value, so a partial value over the limit is a frame too large already.
        """
        value = 0
        for index, byte in enumerate(self._buffer[:MAX_VARINT_LENGTH]):
            value |= (byte & 0x7F) << (7 * index)
            if value > MAX_VARINT:
                raise MalformedInput("a frame's length prefix is over 64 bits")
            if value > self._max_size:
                raise FrameTooLarge(
                    f"a frame's length prefix says more than the limit of {self._max_size} bytes"
                )
            if byte < 0x80:
                if byte == 0 and index > 0:
                    raise MalformedInput("a frame's length prefix is not minimal (ends in 00)")
                return value, index + 1
        if len(self._buffer) >= MAX_VARINT_LENGTH:
            raise MalformedInput(
                f"a frame's length prefix is longer than {MAX_VARINT_LENGTH} bytes"
            )
        return None
