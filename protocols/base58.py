"""Base58 with the bitcoin alphabet ("base58btc"), the text form of DIDs and libp2p peer ids.

Written here rather than imported because `protocols/` may depend on the stdlib, PyNaCl and cbor2
only. The encoding is a bijection between byte strings and strings over the alphabet: each leading
zero byte becomes a leading '1' and the rest is the big-endian number written in base 58, which
never starts with '1'. So a decoded value re-encodes to exactly the text it came from, and two
different texts never name the same bytes.

Both directions are quadratic in the length of their input; callers that decode text from a peer
bound its length first (a DID or a peer id is under 60 characters).
"""

from protocols.errors import MalformedInput

__all__ = ["MalformedInput", "b58decode", "b58encode"]

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

_DIGIT_OF = {char: digit for digit, char in enumerate(ALPHABET)}


def b58encode(data: bytes) -> str:
    """Encode `data` as base58btc text."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(ALPHABET[digit])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Decode base58btc `text`; raises `MalformedInput` on a character outside the alphabet."""
    zeros = len(text) - len(text.lstrip("1"))
    number = 0
    for position, char in enumerate(text):
        digit = _DIGIT_OF.get(char)
        if digit is None:
            raise MalformedInput(f"character {char!r} at {position} is not in the base58 alphabet")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * zeros + body
