"""The /vivim/share/1.0.0 messages: round trips, bounds, and refusal of anything malformed."""

import pytest

from protocols.canonical import canonical_encode
from protocols.errors import LocalProtocolError, MalformedInput
from protocols.framing import FrameDecoder
from protocols.share_sync import (
    MAX_FRAME,
    MAX_ITEMS,
    Hint,
    Page,
    Pull,
    Refused,
    decode_reply,
    decode_request,
    encode,
    fit_page,
)


def unframe(data: bytes) -> bytes:
    decoder = FrameDecoder(MAX_FRAME)
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert isinstance(frame, bytes)
    return frame


PULL = Pull(certificate=b"cert", chain=(b"a", b"b"), rotations=(), after=7)


@pytest.mark.parametrize("message", [PULL, Hint()])
def test_requests_round_trip(message: Pull | Hint) -> None:
    assert decode_request(unframe(encode(message))) == message


@pytest.mark.parametrize(
    "message",
    [
        Page(items=(b"x", b"y" * 1000), next=12, done=False),
        Page(items=(), next=0, done=True),
        Refused(code="unauthorized", message="not a friend"),
    ],
)
def test_replies_round_trip(message: Page | Refused) -> None:
    assert decode_reply(unframe(encode(message))) == message


def test_a_reply_is_not_a_request_and_back() -> None:
    with pytest.raises(MalformedInput):
        decode_request(Page(items=(), next=0, done=True).to_wire())
    with pytest.raises(MalformedInput):
        decode_reply(PULL.to_wire())


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        {"type": "vivim.share.pull.v1"},
        {
            "type": "vivim.share.pull.v1",
            "certificate": b"c",
            "chain": [],
            "rotations": [],
            "after": -1,
        },
        {
            "type": "vivim.share.pull.v1",
            "certificate": b"c",
            "chain": [],
            "rotations": [],
            "after": 1,
            "extra": 1,
        },
        {
            "type": "vivim.share.pull.v1",
            "certificate": "text",
            "chain": [],
            "rotations": [],
            "after": 1,
        },
        {
            "type": "vivim.share.pull.v1",
            "certificate": b"c",
            "chain": [b"x"] * 100,
            "rotations": [],
            "after": 1,
        },
        {"type": "vivim.share.unknown.v1"},
    ],
)
def test_malformed_requests_are_refused(value: object) -> None:
    with pytest.raises(MalformedInput):
        decode_request(canonical_encode(value))


@pytest.mark.parametrize(
    "value",
    [
        {"type": "vivim.share.page.v1", "items": ["text"], "next": 1, "done": True},
        {"type": "vivim.share.page.v1", "items": [b"x"] * (MAX_ITEMS + 1), "next": 1, "done": True},
        {"type": "vivim.share.page.v1", "items": [], "next": 1, "done": 1},
        {"type": "vivim.share.page.v1", "items": [], "next": True, "done": True},
        {"type": "vivim.share.refused.v1", "code": "whatever", "message": "m"},
        {"type": "vivim.share.refused.v1", "code": "malformed", "message": "m" * 201},
    ],
)
def test_malformed_replies_are_refused(value: object) -> None:
    with pytest.raises(MalformedInput):
        decode_reply(canonical_encode(value))


def test_garbage_is_refused() -> None:
    with pytest.raises(MalformedInput):
        decode_request(b"\xff\x00garbage")


def test_fit_page_takes_what_fits_and_says_where_to_go_on() -> None:
    items = [(3, b"a" * 10), (5, b"b" * 10), (9, b"c" * 10)]
    page = fit_page(items, 2, more=False)
    assert page == Page(items=(b"a" * 10, b"b" * 10, b"c" * 10), next=9, done=True)
    assert fit_page(items, 2, more=True).done is False
    assert fit_page([], 4, more=False) == Page(items=(), next=4, done=True)


def test_fit_page_cuts_at_the_frame_bound() -> None:
    big = MAX_FRAME // 3
    items = [(1, b"a" * big), (2, b"b" * big), (3, b"c" * big), (4, b"d")]
    page = fit_page(items, 0, more=False)
    assert len(page.items) == 2
    assert page.next == 2
    assert not page.done
    assert len(encode(page)) <= MAX_FRAME + 10


def test_fit_page_cuts_at_the_item_bound() -> None:
    items = [(i, b"x") for i in range(1, MAX_ITEMS + 5)]
    page = fit_page(items, 0, more=False)
    assert len(page.items) == MAX_ITEMS
    assert page.next == MAX_ITEMS
    assert not page.done


def test_an_item_too_large_for_any_page_is_our_error() -> None:
    with pytest.raises(LocalProtocolError):
        fit_page([(1, b"x" * MAX_FRAME)], 0, more=False)
