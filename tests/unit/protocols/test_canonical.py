from enum import IntEnum, StrEnum

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import MAX_DEPTH, canonical_decode, canonical_encode, decode_stored
from protocols.errors import LocalProtocolError, MalformedInput

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)

# (value, its canonical encoding) checked by hand against RFC 8949 appendix A.
KNOWN_ENCODINGS = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (-1, "20"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-(2**64), "3bffffffffffffffff"),
    (b"", "40"),
    (b"\x01\x02", "420102"),
    ("", "60"),
    ("a", "6161"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    ([], "80"),
    ([1, [2, 3]], "8201820203"),
    ({}, "a0"),
    # Keys sort by encoded length first, then bytewise (RFC 7049 section 3.9).
    ({"bb": 1, "a": 2, "c": 3}, "a361610261630362626201"),
]


@pytest.mark.parametrize(("value", "encoded_hex"), KNOWN_ENCODINGS)
def test_known_encodings(value: object, encoded_hex: str) -> None:
    assert canonical_encode(value) == bytes.fromhex(encoded_hex)
    assert canonical_decode(bytes.fromhex(encoded_hex)) == value


@given(plain_values)
def test_round_trip(value: object) -> None:
    encoded = canonical_encode(value)
    assert canonical_decode(encoded) == value
    assert canonical_encode(canonical_decode(encoded)) == encoded


@given(plain_values)
def test_every_truncation_and_any_trailing_byte_is_refused(value: object) -> None:
    encoded = canonical_encode(value)
    for length in range(len(encoded)):
        with pytest.raises(MalformedInput):
            canonical_decode(encoded[:length])
    with pytest.raises(MalformedInput, match="1 trailing bytes"):
        canonical_decode(encoded + b"\x00")


def test_every_truncation_of_a_nested_value_is_refused() -> None:
    encoded = canonical_encode({"list": [1, b"two", "three", None, True], "map": {"k": -5}})
    for length in range(len(encoded)):
        with pytest.raises(MalformedInput):
            canonical_decode(encoded[:length])
    for trailing in (b"\x00", b"\xf6", encoded):
        with pytest.raises(MalformedInput, match="trailing bytes"):
            canonical_decode(encoded + trailing)


@pytest.mark.parametrize(
    "data_hex",
    [
        "1817",  # 23 with a one-byte argument
        "190017",  # 23 with a two-byte argument
        "5f4161ff",  # indefinite-length byte string
        "7f6161ff",  # indefinite-length text string
        "9f01ff",  # indefinite-length array
        "bf616101ff",  # indefinite-length map
        "a2616201616102",  # keys out of order
        "a262626201616102",  # longer key before shorter key
        "a2616101616102",  # duplicate key
        "c24101",  # bignum tag for 1
        "d9d9f701",  # self-describe tag
        "d81c01",  # shareable tag
    ],
)
def test_non_canonical_spellings_are_refused(data_hex: str) -> None:
    with pytest.raises(MalformedInput, match="not in canonical form") as info:
        canonical_decode(bytes.fromhex(data_hex))
    assert info.value.code == "malformed"


@pytest.mark.parametrize(
    ("data_hex", "message"),
    [
        ("f93c00", "float"),  # 1.0 as a half float
        ("fb3ff0000000000000", "float"),
        ("f7", "UndefinedType"),
        ("f0", "CBORSimpleValue"),
        ("d86401", "date"),  # tag 100: a date (RFC 8943)
        ("d9123401", "CBORTag"),  # unregistered tag 4660
        ("c074323031332d30332d32315432303a30343a30305a", "datetime"),
        ("a10101", "map key 1 is not a str"),
        ("a1416101", "map key b'a' is not a str"),
        ("c349010000000000000000", "outside"),  # -2**64 - 1
        ("c249010000000000000000", "outside"),  # 2**64
        ("81" * (MAX_DEPTH + 1) + "00", "nested deeper"),
    ],
)
def test_values_outside_the_plain_types_are_refused(data_hex: str, message: str) -> None:
    with pytest.raises(MalformedInput, match=message):
        canonical_decode(bytes.fromhex(data_hex))


def test_nesting_up_to_the_bound_is_accepted() -> None:
    value: object = 0
    for _ in range(MAX_DEPTH):
        value = [value]
    assert canonical_decode(canonical_encode(value)) == value


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x18",  # argument missing
        b"\x62a",  # text string shorter than its length
        b"\xff",  # break outside an indefinite-length item
        b"\x1c",  # reserved additional information
        b"\x62\xff\xfe",  # text string that is not UTF-8
        b"\x81" * 100_000,  # nesting deep enough to exhaust a recursive decoder
    ],
)
def test_invalid_cbor_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        canonical_decode(data)


@given(st.binary(max_size=64))
def test_any_bytes_decode_canonically_or_raise_malformed_input(data: bytes) -> None:
    try:
        value = canonical_decode(data)
    except MalformedInput:
        return
    assert canonical_encode(value) == data


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        (1, 2),
        {1: "int key"},
        {b"k": "bytes key"},
        {"nested": [set()]},
        bytearray(b"x"),
        2**64,
        -(2**64) - 1,
    ],
)
def test_encoding_something_other_than_a_plain_value_is_a_local_error(value: object) -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode canonically"):
        canonical_encode(value)


@given(plain_values)
def test_the_encoding_is_cbor2s_canonical_mode_whatever_the_key_order(value: object) -> None:
    # canonical_encode skips cbor2's key sorting for maps already in canonical order.
    assert canonical_encode(value) == cbor2.dumps(value, canonical=True)
    if isinstance(value, dict):
        reversed_keys = dict(reversed(list(value.items())))
        assert canonical_encode(reversed_keys) == cbor2.dumps(value, canonical=True)


def test_maps_in_and_out_of_canonical_order_encode_alike() -> None:
    class Level(IntEnum):
        HIGH = 3

    class Colour(StrEnum):
        RED = "red"

    ordered = {"b": 1, "aa": [{"x": Level.HIGH}, {"y": 2, "x": 1}], "é": Colour.RED}
    shuffled = {"é": Colour.RED, "aa": [{"x": Level.HIGH}, {"x": 1, "y": 2}], "b": 1}
    assert canonical_encode(ordered) == canonical_encode(shuffled)
    assert canonical_encode(shuffled) == cbor2.dumps(shuffled, canonical=True)
    assert canonical_decode(canonical_encode(shuffled)) == {
        "b": 1,
        "aa": [{"x": 3}, {"x": 1, "y": 2}],
        "é": "red",
    }


def test_a_text_leaf_beyond_the_nesting_bound_is_refused() -> None:
    with pytest.raises(MalformedInput, match="nested deeper"):
        canonical_decode(bytes.fromhex("81" * (MAX_DEPTH + 1) + "6161"))
    with pytest.raises(LocalProtocolError, match="nested deeper"):
        value: object = "a"
        for _ in range(MAX_DEPTH + 1):
            value = {"k": value}
        canonical_encode(value)


@given(plain_values)
def test_decode_stored_reads_what_canonical_encode_wrote(value: object) -> None:
    assert decode_stored(canonical_encode(value)) == value


def test_decode_stored_refuses_what_is_not_cbor() -> None:
    with pytest.raises(MalformedInput):
        decode_stored(b"\x18")
