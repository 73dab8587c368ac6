"""The pairing code of `/vivim/pair/1.0.0`: what the approver shows and the joiner types in.

A module of its own because the code lives apart from any session: the approving node makes,
keeps and shows codes, `init --join` parses one, and its text form (base32 with a checksum) is
for people, not the wire. It also holds the codec helpers the messages in
`protocols.pairing_messages` share with it. Import these names from `protocols.pairing`.
"""

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import ed25519_public_key_from_did
from protocols.errors import InvalidPairingCode, MalformedInput
from protocols.peer_id import ed25519_public_key_from_peer_id

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CHECKSUM_LENGTH",
    "CODE_ID_LENGTH",
    "CODE_PREFIX",
    "CODE_TYPE",
    "MAX_ADDRS",
    "MAX_ADDR_LENGTH",
    "MAX_CODE_TEXT_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_UINT",
    "SECRET_LENGTH",
    "PairingCode",
]

CODE_TYPE = "vivim.pair.code.v1"
CODE_PREFIX = "vivim-pair:"
CODE_ID_LENGTH = 8
SECRET_LENGTH = 32  # 256 bits: no guessing, online or offline, so no attempt counting is needed
CHECKSUM_LENGTH = 4
MAX_ADDRS = 8
MAX_ADDR_LENGTH = 256
# The text of a code with 8 addresses of 256 characters is about 3,750 characters.
MAX_CODE_TEXT_LENGTH = 4096
# DIDs and peer ids are some 50 characters; their parsers refuse more than 128.
MAX_ID_LENGTH = 128
MAX_UINT = 2**63 - 1  # the store keeps times in SQLite INTEGER columns, signed 64-bit
_BASE32 = re.compile(r"[a-z2-7]*")

_D = TypeVar("_D", bound="DataclassInstance")


# --- codecs ---------------------------------------------------------------------------------------


def _wire_map(type_name: str, value: "DataclassInstance") -> dict[str, object]:
    """`{"type": type_name, field: value, ...}`, tuples as CBOR arrays."""
    fields: dict[str, object] = {"type": type_name}
    for item in dataclasses.fields(value):
        field_value = getattr(value, item.name)
        fields[item.name] = list(field_value) if isinstance(field_value, tuple) else field_value
    return fields


def _from_map(cls: type[_D], value: object, type_name: str) -> _D:
    """Build `cls` from its wire map: exactly `type` and the class's fields; it checks the rest."""
    if not isinstance(value, dict):
        raise MalformedInput(f"a {type_name} is a map, not a {type(value).__name__}")
    if value.get("type") != type_name:
        raise MalformedInput(f"type is {value.get('type')!r:.60}, expected {type_name!r}")
    expected = {"type"} | {item.name for item in dataclasses.fields(cls)}
    if value.keys() != expected:
        missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
        raise MalformedInput(
            f"{type_name} fields wrong: missing {missing}, unexpected {extra!s:.200}"
        )
    arguments: dict[str, Any] = {
        name: tuple(item) if isinstance(item, list) else item
        for name, item in value.items()
        if name != "type"
    }
    constructor: Callable[..., _D] = cls
    return constructor(**arguments)


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected bytes")
    if len(value) != length:
        raise MalformedInput(f"{name} is {len(value)} bytes, expected {length}")


def _check_str(name: str, value: object, most: int) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    if len(value) > most:
        raise MalformedInput(f"{name} is {len(value)} characters, more than {most}")
    return value


# --- the pairing code -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PairingCode:
    """What the approver shows and the joiner types in; `to_text` is how a person carries it.

    The text is `vivim-pair:` + lower-case base32 (no padding) of the code's canonical CBOR map
    followed by the first 4 bytes of its SHA-256. The checksum turns a mistyped character into
    "copy it again" here, rather than a MAC that fails on the approver later. `from_text` also
    accepts the text upper-cased (base32 is case-blind; QR codes encode upper case compactly).

    `secret` is left out of the repr, so that logging a code does not log its secret.
    """

    did: str
    approver: str
    addrs: tuple[str, ...]
    code_id: bytes
    secret: bytes = field(repr=False)
    expires_at_ms: int

    def __post_init__(self) -> None:
        try:
            ed25519_public_key_from_did(_check_str("did", self.did, MAX_ID_LENGTH))
            ed25519_public_key_from_peer_id(_check_str("approver", self.approver, MAX_ID_LENGTH))
            _check_addrs(self.addrs)
            _check_bytes("code_id", self.code_id, CODE_ID_LENGTH)
            _check_bytes("secret", self.secret, SECRET_LENGTH)
            expires = self.expires_at_ms
            if not isinstance(expires, int) or isinstance(expires, bool):
                raise MalformedInput(f"expires_at_ms is a {type(expires).__name__}, expected int")
            if not 0 <= expires <= MAX_UINT:
                raise MalformedInput(f"expires_at_ms is {expires}, expected 0 to 2**63 - 1")
        except MalformedInput as err:
            raise InvalidPairingCode(
                f"the pairing code is not valid ({err}): ask the other device for a new code"
            ) from err

    def is_expired(self, now_ms: int) -> bool:
        """Whether the code is expired at `now_ms`: it is valid strictly before `expires_at_ms`."""
        return now_ms >= self.expires_at_ms

    def to_text(self) -> str:
        cbor = canonical_encode(_wire_map(CODE_TYPE, self))
        body = base64.b32encode(cbor + _checksum(cbor)).decode("ascii").rstrip("=").lower()
        return CODE_PREFIX + body

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse a code a person pasted; `InvalidPairingCode`, with what to do, if it is not one."""
        if not isinstance(text, str):
            raise InvalidPairingCode(f"not a vivim pairing code: it is a {type(text).__name__}")
        text = text.strip().lower()
        if not text.startswith(CODE_PREFIX):
            raise InvalidPairingCode("not a vivim pairing code: it must start with vivim-pair:")
        if len(text) > MAX_CODE_TEXT_LENGTH:
            raise InvalidPairingCode(
                f"the pairing code is longer than {MAX_CODE_TEXT_LENGTH} characters: "
                "copy the code alone"
            )
        data = _base32_decode(text[len(CODE_PREFIX) :])
        cbor, checksum = data[:-CHECKSUM_LENGTH], data[-CHECKSUM_LENGTH:]
        if not cbor or checksum != _checksum(cbor):
            raise InvalidPairingCode(
                "the pairing code is damaged (checksum does not match): copy it again"
            )
        try:
            return _from_map(cls, canonical_decode(cbor), CODE_TYPE)
        except InvalidPairingCode:
            raise
        except MalformedInput as err:
            raise InvalidPairingCode(
                f"the pairing code is not valid ({err}); it may come from another version of "
                "vivim: ask the other device for a new code"
            ) from err


def _check_addrs(addrs: object) -> None:
    if not isinstance(addrs, tuple):
        raise MalformedInput(f"addrs is a {type(addrs).__name__}, expected a list")
    if not 1 <= len(addrs) <= MAX_ADDRS:
        raise MalformedInput(f"addrs has {len(addrs)} addresses, expected 1 to {MAX_ADDRS}")
    for addr in addrs:
        _check_str("an address", addr, MAX_ADDR_LENGTH)
        # Multiaddrs are ASCII without spaces; that also keeps the code's text length bounded.
        if not (addr.startswith("/") and addr.isascii() and addr.isprintable() and " " not in addr):
            raise MalformedInput(f"{addr!r:.60} is not a multiaddr")


def _checksum(cbor: bytes) -> bytes:
    return hashlib.sha256(cbor).digest()[:CHECKSUM_LENGTH]


def _base32_decode(body: str) -> bytes:
    """Lower-case unpadded base32, in its one spelling (unused trailing bits zero)."""
    damaged = InvalidPairingCode(
        "the pairing code is damaged (it has characters a code cannot have, or is cut short): "
        "copy it again"
    )
    if _BASE32.fullmatch(body) is None or len(body) % 8 in (1, 3, 6):
        raise damaged
    try:
        data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error as err:
        raise damaged from err
    if base64.b32encode(data).decode("ascii").rstrip("=").lower() != body:
        raise damaged
    return data
