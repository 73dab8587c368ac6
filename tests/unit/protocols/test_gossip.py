"""Gossip: the Announce codec, its one-frame reader, and how far behind a peer we are."""

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import (
    FrameTooLarge,
    InvalidPeerId,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
)
from protocols.framing import encode_frame, encode_varint
from protocols.gossip import (
    GOSSIP_PROTOCOL_ID,
    MAX_CURSOR_DEVICES,
    MAX_FRAME,
    MAX_SEQ,
    NEED_DATA,
    Announce,
    AnnounceReader,
    ClosedEarly,
    NeedData,
    TruncatedFrame,
    UnexpectedMessage,
    behind,
    encode_announce,
    lag,
)
from protocols.peer_id import peer_id_from_ed25519_public_key


def peer_id(seed: int) -> str:
    return peer_id_from_ed25519_public_key(seed.to_bytes(32, "big"))


A, B, C = peer_id(1), peer_id(2), peer_id(3)
HEADS = {A: 5, B: 0, C: MAX_SEQ}
ANNOUNCE = Announce(heads=HEADS)


def read(data: bytes, chunk: int = 0, *, eof: bool = True) -> list[Announce]:
    """Feed `data` to a reader (in pieces of `chunk` bytes, 0 for whole), then EOF if asked;
    every event that came out."""
    reader = AnnounceReader()
    events: list[Announce] = []
    step = chunk or max(len(data), 1)
    for piece in [data[start : start + step] for start in range(0, len(data), step)]:
        reader.receive_data(piece)
        while not isinstance(event := reader.next_event(), NeedData):
            events.append(event)
    if eof:
        reader.receive_data(b"")
        while not isinstance(event := reader.next_event(), NeedData):
            events.append(event)
    return events


def test_protocol_id() -> None:
    assert GOSSIP_PROTOCOL_ID == "/vivim/gossip/1.0.0"


def test_the_wire_form() -> None:
    wire = canonical_encode({"type": "vivim.gossip.announce.v1", "heads": HEADS})
    assert ANNOUNCE.to_wire() == wire
    assert encode_announce(HEADS) == encode_frame(wire, MAX_FRAME)
    assert Announce.from_wire(wire) == ANNOUNCE


@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["whole", "byte_by_byte", "chunks_of_7"])
def test_the_reader_gives_the_announce_then_a_clean_end(chunk: int) -> None:
    assert read(encode_announce(HEADS), chunk) == [ANNOUNCE]


def test_the_reader_before_and_after_the_announce() -> None:
    reader = AnnounceReader()
    frame = encode_announce(HEADS)
    reader.receive_data(frame[:-1])
    assert reader.next_event() is NEED_DATA
    assert not reader.announced
    reader.receive_data(frame[-1:])
    assert reader.next_event() == ANNOUNCE
    assert reader.announced
    assert reader.next_event() is NEED_DATA  # the sender may close whenever it likes
    reader.receive_data(b"")
    assert reader.next_event() is NEED_DATA


@pytest.mark.parametrize("trailing", [b"\x00", encode_announce(HEADS)], ids=["byte", "frame"])
def test_anything_after_the_announce_is_unexpected(trailing: bytes) -> None:
    reader = AnnounceReader()
    reader.receive_data(encode_announce(HEADS) + trailing)
    assert reader.next_event() == ANNOUNCE
    with pytest.raises(UnexpectedMessage, match="more after its Announce"):
        reader.next_event()
    with pytest.raises(UnexpectedMessage):  # and so it stays
        reader.next_event()


def test_a_stream_that_ends_before_its_frame() -> None:
    with pytest.raises(ClosedEarly, match="without an Announce") as closed:
        read(b"")
    assert closed.value.code == "closed_early"
    frame = encode_announce(HEADS)
    for length in range(1, len(frame)):
        with pytest.raises(TruncatedFrame):
            read(frame[:length])


def test_an_oversized_frame_is_refused_from_its_prefix() -> None:
    with pytest.raises(FrameTooLarge):
        read(encode_varint(MAX_FRAME + 1), eof=False)


def test_errors_are_raised_again() -> None:
    reader = AnnounceReader()
    reader.receive_data(encode_frame(b"\xffgarbage", MAX_FRAME))
    with pytest.raises(MalformedInput) as first:
        reader.next_event()
    with pytest.raises(MalformedInput) as second:
        reader.next_event()
    assert second.value is first.value


def test_every_truncation_and_trailing_bytes_are_refused() -> None:
    wire = ANNOUNCE.to_wire()
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            Announce.from_wire(wire[:length])
    for trailing in (b"\x00", wire):
        with pytest.raises(MalformedInput, match="trailing"):
            Announce.from_wire(wire + trailing)


def wire_of(**fields: object) -> bytes:
    return canonical_encode({"type": "vivim.gossip.announce.v1", "heads": HEADS, **fields})


WRONG: list[tuple[Any, type[MalformedInput], str]] = [
    ([], MalformedInput, "not a gossip announce"),
    ({"heads": HEADS}, MalformedInput, "not a gossip announce"),
    ({"type": "vivim.sync.pull.v1", "heads": HEADS}, MalformedInput, "not a gossip announce"),
    ({"type": "vivim.gossip.announce.v1"}, MalformedInput, r"missing \['heads'\]"),
    (canonical_decode(wire_of(extra=1)), MalformedInput, r"unexpected \['extra'\]"),
    (canonical_decode(wire_of(heads=[A, 5])), MalformedInput, "heads is a list"),
    (canonical_decode(wire_of(heads={A: -1})), MalformedInput, r"heads\[.*\] is -1"),
    (canonical_decode(wire_of(heads={A: 2**63})), MalformedInput, "expected 0 to"),
    (canonical_decode(wire_of(heads={A: False})), MalformedInput, "is a bool"),
    (canonical_decode(wire_of(heads={A: b"5"})), MalformedInput, "is a bytes"),
    (canonical_decode(wire_of(heads={"did:key:z6Mk": 1})), InvalidPeerId, "heads key"),
    (
        canonical_decode(wire_of(heads={peer_id(n): 1 for n in range(MAX_CURSOR_DEVICES + 1)})),
        MalformedInput,
        "more than 4096",
    ),
]


@pytest.mark.parametrize(("value", "error", "match"), WRONG)
def test_malformed_announces_are_refused(
    value: object, error: type[MalformedInput], match: str
) -> None:
    with pytest.raises(error, match=match):
        Announce.from_wire(canonical_encode(value))
    with pytest.raises(error, match=match):  # and by the reader, as a remote error
        read(encode_frame(canonical_encode(value), MAX_FRAME))


def test_the_largest_announce_fits_a_frame() -> None:
    heads = {peer_id(n): MAX_SEQ for n in range(MAX_CURSOR_DEVICES)}
    assert read(encode_announce(heads)) == [Announce(heads=heads)]


@pytest.mark.parametrize("heads", [{A: -1}, {"not a peer id": 1}, [(A, 1)]])
def test_announcing_impossible_heads_is_a_local_error(heads: Any) -> None:
    with pytest.raises(LocalProtocolError, match="cannot announce"):
        encode_announce(heads)


def test_the_heads_are_a_read_only_copy() -> None:
    heads = {A: 1}
    announce = Announce(heads=heads)
    heads[A] = 2
    assert announce.heads == {A: 1}
    with pytest.raises(TypeError):
        announce.heads[A] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        announce.heads = {}  # type: ignore[misc]


peer_ids = st.binary(min_size=32, max_size=32).map(peer_id_from_ed25519_public_key)
heads_maps = st.dictionaries(peer_ids, st.integers(min_value=0, max_value=MAX_SEQ), max_size=8)


@given(heads_maps, st.integers(min_value=0, max_value=50))
def test_round_trip_in_any_chunks(heads: dict[str, int], chunk: int) -> None:
    assert read(encode_announce(heads), chunk) == [Announce(heads=heads)]


@given(st.binary(max_size=120))
def test_any_bytes_give_an_announce_or_a_remote_error(data: bytes) -> None:
    try:
        events = read(data)
    except RemoteProtocolError:
        return
    assert len(events) == 1
    assert encode_announce(events[0].heads) == data


# --- how far behind ------------------------------------------------------------------------------


def test_behind_and_lag() -> None:
    ours = {A: 5, B: 2}
    theirs = {A: 3, B: 4, C: 7}
    assert behind(ours, theirs) == {B: 2, C: 7}  # A: we are ahead, not behind
    assert lag(ours, theirs) == 9
    assert behind(theirs, ours) == {A: 2}
    assert behind(ours, ours) == {}
    assert lag(ours, {}) == 0
    assert behind({}, {A: 0}) == {}  # a head of 0 holds nothing to pull


small_maps = st.dictionaries(st.sampled_from([A, B, C]), st.integers(min_value=0, max_value=9))


@given(small_maps, small_maps)
def test_behind_is_what_a_pull_would_bring(ours: dict[str, int], theirs: dict[str, int]) -> None:
    lacking = behind(ours, theirs)
    assert lag(ours, theirs) == sum(lacking.values())
    assert all(count > 0 for count in lacking.values())
    assert (lag(ours, theirs) == 0) == all(head <= ours.get(d, 0) for d, head in theirs.items())
    # After pulling what we lack, we are behind no more, and have taken nothing we held.
    merged = {**ours, **{device: ours.get(device, 0) + n for device, n in lacking.items()}}
    assert behind(merged, theirs) == {}
    assert all(
        merged[device] == max(ours.get(device, 0), theirs.get(device, 0)) for device in merged
    )
