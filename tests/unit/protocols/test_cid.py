"""Content ids match py-cid's CIDv1 dag-cbor sha2-256 and refuse other spellings."""

from __future__ import annotations

import hashlib

import multihash
import pytest
from cid import make_cid
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_encode
from protocols.cid import (
    content_id,
    content_id_of_bytes,
    content_id_of_digest,
    is_content_id,
    parse_content_id,
)
from protocols.errors import MalformedInput


def py_cid(data: bytes) -> str:
    digest = multihash.encode(hashlib.sha256(data).digest(), "sha2-256")
    encoded = make_cid(1, "dag-cbor", digest).encode("base32")
    return encoded.decode() if isinstance(encoded, bytes) else str(encoded)


def test_known_value() -> None:
    # The dag-cbor CID of the CBOR text string "hello" (0x65 68656c6c6f), as py-cid spells it.
    assert content_id("hello") == py_cid(b"\x65hello")
    assert content_id("hello").startswith("bafyrei")


@given(st.binary(max_size=200))
def test_matches_py_cid_and_round_trips(data: bytes) -> None:
    text = content_id_of_bytes(data)
    assert text == py_cid(data)
    assert parse_content_id(text) == hashlib.sha256(data).digest()


def test_content_id_is_of_the_canonical_encoding() -> None:
    value = {"b": 1, "a": [b"x", None]}
    assert content_id(value) == content_id_of_bytes(canonical_encode(value))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bafyrei",
        "Bafyreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",
        "bAFYREIBM6JG3UX5QUMHCN2B3FLC3TYU6DMLB4XA7U5BF44YEGNRJHC4YEQ",
        "zafyreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",
        "bafyreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4ye1",
        # dag-pb (0x70) instead of dag-cbor
        "bafybeibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",
        # last character with non-zero padding bits
        "bafyreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yer",
    ],
)
def test_other_spellings_are_refused(text: str) -> None:
    with pytest.raises(MalformedInput):
        parse_content_id(text)


@given(st.binary(min_size=32, max_size=32), st.integers(0, 58), st.sampled_from("abcxyz2345679A="))
def test_is_content_id_accepts_exactly_what_parse_content_id_accepts(
    digest: bytes, position: int, replacement: str
) -> None:
    text = content_id_of_digest(digest)
    assert is_content_id(text)
    mutated = text[:position] + replacement + text[position + 1 :]
    try:
        parse_content_id(mutated)
    except MalformedInput:
        assert not is_content_id(mutated)
    else:
        assert is_content_id(mutated)
