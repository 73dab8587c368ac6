"""Length-prefixed frames: whole, byte by byte, with trailing bytes; every bad prefix refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.framing import (
    MAX_VARINT_LENGTH,
    NEED_DATA,
    FrameDecoder,
    FrameTooLarge,
    NeedData,
    TruncatedFrame,
    encode_frame,
    encode_varint,
)

MAX_SIZE = 1000

# (value, its LEB128 varint) by hand: seven bits a byte, least significant group first.
KNOWN_VARINTS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2**64 - 1, "ffffffffffffffffff01"),
]


def frames_of(decoder: FrameDecoder) -> list[bytes]:
    """Every whole frame the decoder holds, until it needs data."""
    frames = []
    while not isinstance(frame := decoder.next_frame(), NeedData):
        frames.append(frame)
    return frames


def decode_all(data: bytes, *, chunk: int | None = None, max_size: int = MAX_SIZE) -> list[bytes]:
    """Feed `data` (in pieces of `chunk` bytes if given) then EOF; the frames that came out."""
    decoder = FrameDecoder(max_size)
    frames = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        decoder.receive_data(data[start : start + step])
        frames += frames_of(decoder)
    decoder.receive_data(b"")
    frames += frames_of(decoder)
    assert decoder.closed
    return frames


@pytest.mark.parametrize(("value", "encoded_hex"), KNOWN_VARINTS)
def test_known_varints(value: int, encoded_hex: str) -> None:
    assert encode_varint(value) == bytes.fromhex(encoded_hex)


@pytest.mark.parametrize(("value", "encoded_hex"), KNOWN_VARINTS)
def test_known_varints_decode_as_frame_lengths(value: int, encoded_hex: str) -> None:
    decoder = FrameDecoder(2**64 - 1)
    decoder.receive_data(bytes.fromhex(encoded_hex))
    body_needed = decoder.next_frame()
    if value == 0:
        assert body_needed == b""
    else:
        assert body_needed is NEED_DATA


@pytest.mark.parametrize("value", [-1, 2**64, True, 1.0])
def test_varint_of_impossible_values_is_a_local_error(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_varint(value)  # type: ignore[arg-type]


def test_frame_whole() -> None:
    assert encode_frame(b"abc", MAX_SIZE) == b"\x03abc"
    assert decode_all(b"\x03abc") == [b"abc"]
    assert decode_all(b"\x00") == [b""]


def test_frame_over_the_limit_is_a_local_error_on_sending() -> None:
    encode_frame(bytes(MAX_SIZE), MAX_SIZE)
    with pytest.raises(LocalProtocolError, match="over the limit"):
        encode_frame(bytes(MAX_SIZE + 1), MAX_SIZE)


payloads = st.lists(st.binary(max_size=300), max_size=6)


@given(payloads)
def test_round_trip_whole_and_byte_by_byte(frames: list[bytes]) -> None:
    data = b"".join(encode_frame(frame, MAX_SIZE) for frame in frames)
    assert decode_all(data) == frames
    assert decode_all(data, chunk=1) == frames


@given(payloads, st.integers(min_value=1, max_value=50))
def test_round_trip_in_any_chunks(frames: list[bytes], chunk: int) -> None:
    data = b"".join(encode_frame(frame, MAX_SIZE) for frame in frames)
    assert decode_all(data, chunk=chunk) == frames


def test_bytes_after_a_frame_stay_for_the_next_call() -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(encode_frame(b"first", MAX_SIZE) + b"\x06sec")
    assert decoder.next_frame() == b"first"
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 4
    decoder.receive_data(b"ond")
    assert decoder.next_frame() == b"second"
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 0


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    assert decode_all(encode_frame(bytes(MAX_SIZE), MAX_SIZE), chunk=7) == [bytes(MAX_SIZE)]


@pytest.mark.parametrize("size", [MAX_SIZE + 1, 2**20, 2**63])
def test_too_large_is_refused_from_the_prefix_alone(size: int) -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(encode_varint(size))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.code == "frame_too_large"
    assert isinstance(info.value, MalformedInput)


def test_too_large_is_refused_before_the_prefix_is_complete() -> None:
    # 0xff 0xff: at least 16383 + 2**14 whatever follows, over a limit of 1000 already.
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(b"\xff\xff")
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


@pytest.mark.parametrize(
    ("prefix_hex", "message"),
    [
        ("8000", "not minimal"),
        ("808000", "not minimal"),
        ("8180808000", "not minimal"),
        ("80" * MAX_VARINT_LENGTH, "longer than 10 bytes"),
        ("80" * 9 + "02", "over 64 bits"),
    ],
)
def test_bad_prefixes_are_refused(prefix_hex: str, message: str) -> None:
    decoder = FrameDecoder(2**64 - 1)
    decoder.receive_data(bytes.fromhex(prefix_hex))
    with pytest.raises(MalformedInput, match=message) as info:
        decoder.next_frame()
    assert type(info.value) is MalformedInput


def test_an_error_leaves_the_decoder_as_it_was() -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(b"\x80\x00abc")
    for _ in range(2):
        with pytest.raises(MalformedInput, match="not minimal"):
            decoder.next_frame()
    assert decoder.buffered == 5


@pytest.mark.parametrize("data", [b"\x80", b"\x05", b"\x05abcd", b"\x03abc\x02a"])
def test_eof_inside_a_frame_is_truncated(data: bytes) -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(data)
    frames_of(decoder)
    decoder.receive_data(b"")
    with pytest.raises(TruncatedFrame) as info:
        decoder.next_frame()
    assert info.value.code == "truncated"
    assert not decoder.closed


def test_eof_between_frames_is_a_clean_end() -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(b"\x01a")
    decoder.receive_data(b"")
    assert not decoder.closed  # a frame is still to be handed out
    assert decoder.next_frame() == b"a"
    assert decoder.closed
    assert decoder.next_frame() is NEED_DATA


def test_data_after_eof_is_a_local_error() -> None:
    decoder = FrameDecoder(MAX_SIZE)
    decoder.receive_data(b"")
    decoder.receive_data(b"")  # EOF twice is still EOF
    with pytest.raises(LocalProtocolError, match="after EOF"):
        decoder.receive_data(b"\x00")


def test_buffer_holds_at_most_one_pending_frame_once_drained() -> None:
    # A frame at the limit, fed byte by byte: the decoder never holds more than it.
    decoder = FrameDecoder(MAX_SIZE)
    data = encode_frame(bytes(MAX_SIZE), MAX_SIZE)
    for byte in data[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
        assert decoder.buffered <= MAX_SIZE + MAX_VARINT_LENGTH
    decoder.receive_data(data[-1:])
    assert decoder.next_frame() == bytes(MAX_SIZE)


def test_feeding_an_undrained_buffer_is_a_local_error() -> None:
    decoder = FrameDecoder(10)
    decoder.receive_data(b"\x01a" * 20)  # one big chunk of many frames is fine
    with pytest.raises(LocalProtocolError, match="call next_frame"):
        decoder.receive_data(b"\x01a")
    assert len(frames_of(decoder)) == 20
    decoder.receive_data(b"\x01a")
    assert frames_of(decoder) == [b"a"]


@given(st.binary(max_size=64))
def test_any_bytes_give_frames_or_a_remote_error(data: bytes) -> None:
    decoder = FrameDecoder(16)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    try:
        frames = frames_of(decoder)
    except RemoteProtocolError:
        return
    assert b"".join(encode_frame(frame, 16) for frame in frames) == data


@pytest.mark.parametrize("max_size", [-1, 2**64, True])
def test_impossible_limits_are_a_local_error(max_size: int) -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_size)
