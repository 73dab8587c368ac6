import base58 as reference_base58  # the PyPI `base58` package, already installed for libp2p
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.base58 import ALPHABET, b58decode, b58encode
from protocols.errors import MalformedInput

# Bitcoin Core's vectors: src/test/data/base58_encode_decode.json in github.com/bitcoin/bitcoin.
BITCOIN_CORE_VECTORS = [
    ("", ""),
    ("61", "2g"),
    ("626262", "a3gV"),
    ("636363", "aPEr"),
    ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
    ("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
    ("516b6fcd0f", "ABnLTmg"),
    ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
    ("572e4794", "3EFU7m"),
    ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
    ("10c8511e", "Rt5zm"),
    ("00000000000000000000", "1111111111"),
    (
        "000111d38e5fc9071ffcd20b4a763cc9ae4f252bb4e48fd66a835e252ada93ff480d6dd43dc62a641155a5",
        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
    ),
]


@pytest.mark.parametrize(("data_hex", "text"), BITCOIN_CORE_VECTORS)
def test_bitcoin_core_vectors(data_hex: str, text: str) -> None:
    assert b58encode(bytes.fromhex(data_hex)) == text
    assert b58decode(text) == bytes.fromhex(data_hex)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x00", "1"),
        (b"\x00\x00", "11"),
        (b"\x00\x39", "1z"),
        (b"\x3a", "21"),
        (b"\x00\x3a", "121"),
    ],
)
def test_leading_zero_bytes_are_leading_ones(data: bytes, text: str) -> None:
    assert b58encode(data) == text
    assert b58decode(text) == data


@pytest.mark.parametrize("char", ["0", "O", "I", "l", "+", "/", " ", "\n", "é", "\x00"])
def test_character_outside_alphabet_is_refused(char: str) -> None:
    with pytest.raises(MalformedInput, match="not in the base58 alphabet") as info:
        b58decode("2g" + char + "2g")
    assert info.value.code == "malformed"


def test_alphabet_is_bitcoins() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 58
    assert not set("0OIl") & set(ALPHABET)


@given(st.binary(max_size=100))
def test_round_trip_and_agreement_with_reference(data: bytes) -> None:
    text = b58encode(data)
    assert b58decode(text) == data
    assert text == reference_base58.b58encode(data).decode("ascii")


@given(st.text(alphabet=ALPHABET, max_size=80))
def test_decoding_is_injective(text: str) -> None:
    # Every string over the alphabet decodes to bytes that encode back to the same string, so one
    # value never has two spellings (a DID or peer id is compared as text).
    assert b58encode(b58decode(text)) == text
