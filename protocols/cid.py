"""Content ids: CIDv1, dag-cbor codec, sha2-256 multihash, base32 multibase ("bafyrei...").

Every content-addressed thing in the vault (ops, ACUs, conversations, links) is named by the
sha2-256 of its canonical CBOR bytes, spelled as a CIDv1 so that other IPLD/libp2p tools can read
the ids. The format is fixed and small, so it is written out here rather than pulled in through
py-cid (which protocols/ may not import); the tests cross-check it against py-cid.

    cid bytes = 0x01 (CIDv1) | 0x71 (dag-cbor) | 0x12 (sha2-256) | 0x20 (32 bytes) | digest
    text      = "b" + base32(cid bytes), RFC 4648 alphabet, lower case, no padding
"""

import base64
import hashlib
import re
from typing import cast

from protocols.canonical import canonical_encode
from protocols.errors import MalformedInput

__all__ = [
    "CID_PREFIX",
    "check_content_id",
    "content_id",
    "content_id_of_bytes",
    "content_id_of_digest",
    "is_content_id",
    "parse_content_id",
]

CID_VERSION = 0x01
DAG_CBOR = 0x71
SHA2_256 = 0x12
DIGEST_LENGTH = 32
CID_PREFIX = bytes([CID_VERSION, DAG_CBOR, SHA2_256, DIGEST_LENGTH])
MULTIBASE_BASE32 = "b"
# "b" + base32 of 36 bytes without padding.
TEXT_LENGTH = 1 + 58
# 36 bytes are 288 bits; 58 base32 characters hold 290, the last two bits zero.
_PAD_BITS = 2
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]
_SHIFTS = range(280, -10, -10)


def content_id_of_bytes(data: bytes) -> str:
    """The id of bytes that are already canonical CBOR."""
    return content_id_of_digest(hashlib.sha256(data).digest())


def content_id(value: object) -> str:
    """The id of a plain value: the CID of its canonical CBOR encoding."""
    return content_id_of_bytes(canonical_encode(value))


# Exactly the strings `parse_content_id` accepts, checked without decoding (ids are checked for
# every op applied, several per op): "b" + base32 of 01 71 12 20 + 32 digest bytes, 290 bits in
# 58 characters. The prefix fixes "afyrei" and the top two bits of the next character (a-h); the
# last character carries two padding bits, which must be zero. The tests cross-check it with
# parse_content_id.
CONTENT_ID_PATTERN = re.compile(r"bafyrei[a-h][a-z2-7]{50}[aeimquy4]")


def is_content_id(value: object) -> bool:
    """Whether `value` is a content id (the text `content_id` makes), without decoding it."""
    return isinstance(value, str) and CONTENT_ID_PATTERN.fullmatch(value) is not None


def check_content_id(value: object) -> str:
    """`value` if it is a content id; `MalformedInput` otherwise."""
    if not is_content_id(value):
        raise MalformedInput(f"not a content id (CIDv1 base32 'bafyrei...'): {value!r:.80}")
    return cast(str, value)


def parse_content_id(text: str) -> bytes:
    """The sha2-256 digest inside a content id; MalformedInput for anything else."""
    if not isinstance(text, str) or len(text) != TEXT_LENGTH or not text.startswith("b"):
        raise MalformedInput(f"not a content id (CIDv1 base32 'bafyrei...'): {text!r:.80}")
    body = text[1:]
    if body != body.lower():
        raise MalformedInput(f"content id must be lower case: {text!r}")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError as err:
        raise MalformedInput(f"content id is not base32: {text!r}") from err
    if not raw.startswith(CID_PREFIX) or len(raw) != len(CID_PREFIX) + DIGEST_LENGTH:
        raise MalformedInput(f"content id is not a CIDv1 dag-cbor sha2-256: {text!r}")
    if content_id_of_digest(raw[len(CID_PREFIX) :]) != text:
        # Non-zero padding bits in the last base32 character: a second spelling of the same id.
        raise MalformedInput(f"content id is not in canonical base32: {text!r}")
    return raw[len(CID_PREFIX) :]


def content_id_of_digest(digest: bytes) -> str:
    """The id spelling of a sha2-256 digest.

    Every content id is computed on the import hot path (several per ACU), and Python 3.11's
    base64.b32encode is pure Python: reading the 36 bytes as one integer and emitting two
    characters per 10 bits is about twice as fast and gives the same text (the tests compare).
    """
    bits = int.from_bytes(CID_PREFIX + digest, "big") << _PAD_BITS
    return MULTIBASE_BASE32 + "".join([_PAIRS[(bits >> s) & 0x3FF] for s in _SHIFTS])
