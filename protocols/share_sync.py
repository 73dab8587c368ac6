"""`/vivim/share/1.0.0`: a friend's device pulls what a grantor shared with its person.

The sharing mesh moves as opaque *items* (share bundles and revocations, `protocols.share_bundle`):
what they hold and how they are checked is the recipient store's business; this module only
carries them. One stream per exchange, one frame each way:

    recipient -> grantor   Pull     who I am (certificate, chain, rotations) and my cursor
    grantor -> recipient   Page     items after the cursor, the next cursor, whether that is all
                        or Refused  code and message (unauthorized, malformed, too_large)

    grantor -> recipient   Hint     "I have something new for you": the receiver pulls

The cursor is the grantor's: an opaque position in its own list of what it shared (a count that
only grows), kept by the recipient per grantor device. The grantor decides what the pulling DID
may see (store.access) and never says anything about the rest: a page holds only the items for
that DID, so a friend without a grant learns nothing about an ACU, not even that it exists.

A Hint carries nothing to verify and has no reply; a lost one costs only the pull on the next
connect. Frames are bounded (`MAX_FRAME`); a page is cut to fit (`fit_page`).
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Final, Self

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import LocalProtocolError, MalformedInput
from protocols.framing import encode_frame
from protocols.pairing_messages import MAX_CHAIN, MAX_IDENTITY_ROTATIONS, _check_blob, _check_blobs

__all__ = [
    "MAX_FRAME",
    "MAX_ITEMS",
    "SHARE_PROTOCOL_ID",
    "Hint",
    "Page",
    "Pull",
    "Refused",
    "decode_reply",
    "decode_request",
    "encode",
    "fit_page",
]

SHARE_PROTOCOL_ID: Final = "/vivim/share/1.0.0"
# A page is at most this many bytes on the wire; one item larger than a page cannot travel (the
# grantor refuses to make such a share: an ACU's ciphertext is bounded by the vault's content
# bounds, far below this).
MAX_FRAME: Final = 4 * 1024 * 1024
MAX_ITEMS: Final = 1000
MAX_MESSAGE: Final = 200
MAX_CURSOR: Final = 2**63 - 1
# What the page's own fields cost on the wire, beside its items (type, keys, heads): generous.
_PAGE_OVERHEAD: Final = 256
# Per item: a CBOR byte-string head (at most 9 bytes).
_ITEM_OVERHEAD: Final = 9

PULL: Final = "vivim.share.pull.v1"
HINT: Final = "vivim.share.hint.v1"
PAGE: Final = "vivim.share.page.v1"
REFUSED: Final = "vivim.share.refused.v1"

# Refusal codes.
UNAUTHORIZED: Final = "unauthorized"
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
CODES: Final = frozenset({UNAUTHORIZED, MALFORMED, TOO_LARGE})


def _check_cursor(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CURSOR:
        raise MalformedInput(f"{name} is not a cursor (an integer from 0 to {MAX_CURSOR})")


@dataclass(frozen=True, kw_only=True)
class _Message:
    TYPE: ClassVar[str]

    def to_wire(self) -> bytes:
        wire: dict[str, object] = {"type": self.TYPE}
        for item in fields(self):
            value = getattr(self, item.name)
            wire[item.name] = list(value) if isinstance(value, tuple) else value
        return canonical_encode(wire)

    @classmethod
    def _from_fields(cls, value: dict[object, object]) -> Self:
        names = {item.name for item in fields(cls)}
        if value.keys() != names | {"type"}:
            missing = sorted(names - value.keys(), key=str)
            extra = sorted(value.keys() - names - {"type"}, key=str)
            raise MalformedInput(
                f"{cls.TYPE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
            )
        arguments = {
            name: tuple(item) if isinstance(item, list) else item
            for name, item in value.items()
            if name != "type"
        }
        try:
            return cls(**arguments)  # type: ignore[arg-type]
        except TypeError as err:
            raise MalformedInput(f"{cls.TYPE}: {err}") from err


@dataclass(frozen=True, kw_only=True)
class Pull(_Message):
    """The puller's device certificate, the chain above it and its identity's key rotations (as
    a first op carries them; the grantor checks they make the stream's peer a device of the
    certificate's DID), and `after`, the cursor it holds for this grantor device."""

    TYPE: ClassVar[str] = PULL
    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]
    after: int

    def __post_init__(self) -> None:
        _check_blob("certificate", self.certificate)
        _check_blobs("chain", self.chain, MAX_CHAIN)
        _check_blobs("rotations", self.rotations, MAX_IDENTITY_ROTATIONS)
        _check_cursor("after", self.after)


@dataclass(frozen=True, kw_only=True)
class Hint(_Message):
    """Something new is here for you: pull."""

    TYPE: ClassVar[str] = HINT


@dataclass(frozen=True, kw_only=True)
class Page(_Message):
    """Items after the cursor asked with, `next` the cursor to ask with next time, `done` when
    nothing more is past `next`."""

    TYPE: ClassVar[str] = PAGE
    items: tuple[bytes, ...]
    next: int
    done: bool

    def __post_init__(self) -> None:
        if not isinstance(self.items, tuple) or len(self.items) > MAX_ITEMS:
            raise MalformedInput(f"items is not a list of at most {MAX_ITEMS} byte strings")
        if not all(isinstance(item, bytes) for item in self.items):
            raise MalformedInput("items holds something other than byte strings")
        _check_cursor("next", self.next)
        if not isinstance(self.done, bool):
            raise MalformedInput("done is not a boolean")


@dataclass(frozen=True, kw_only=True)
class Refused(_Message):
    """Why the grantor will not answer: `code` is one of CODES."""

    TYPE: ClassVar[str] = REFUSED
    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise MalformedInput(f"unknown refusal code {self.code!r:.40}")
        if not isinstance(self.message, str) or len(self.message) > MAX_MESSAGE:
            raise MalformedInput(f"message is not text of at most {MAX_MESSAGE} characters")


_REQUESTS: Final[dict[str, type[Pull] | type[Hint]]] = {PULL: Pull, HINT: Hint}
_REPLIES: Final[dict[str, type[Page] | type[Refused]]] = {PAGE: Page, REFUSED: Refused}


def _decode(data: bytes, types: dict[str, type[_Message]]) -> _Message:
    value = canonical_decode(data)
    if not isinstance(value, dict):
        raise MalformedInput(f"a share message is a map, not a {type(value).__name__}")
    name = value.get("type")
    kind = types.get(name) if isinstance(name, str) else None
    if kind is None:
        raise MalformedInput(f"not a message expected here (type {value.get('type')!r:.60})")
    return kind._from_fields(value)


def decode_request(data: bytes) -> Pull | Hint:
    """The first frame a grantor (for a Pull) or a recipient (for a Hint) reads; `MalformedInput`
    for anything else."""
    message = _decode(data, dict(_REQUESTS))
    assert isinstance(message, Pull | Hint)
    return message


def decode_reply(data: bytes) -> Page | Refused:
    """The frame a puller reads back; `MalformedInput` for anything else."""
    message = _decode(data, dict(_REPLIES))
    assert isinstance(message, Page | Refused)
    return message


def encode(message: Pull | Hint | Page | Refused) -> bytes:
    """`message` framed, ready to write."""
    return encode_frame(message.to_wire(), MAX_FRAME)


def fit_page(items: Sequence[tuple[int, bytes]], after: int, *, more: bool) -> Page:
    """A page of `items` ((cursor, item) in cursor order, all past `after`; `more` if the
    grantor holds others after them), as many as fit in a frame and `MAX_ITEMS`: `next` is the
    cursor of the last one taken. `LocalProtocolError` if the first does not fit alone (the
    grantor must never have made it)."""
    taken: list[bytes] = []
    size = _PAGE_OVERHEAD
    cursor = after
    for position, item in items:
        if len(taken) == MAX_ITEMS or size + len(item) + _ITEM_OVERHEAD > MAX_FRAME:
            break
        taken.append(item)
        size += len(item) + _ITEM_OVERHEAD
        cursor = position
    if items and not taken:
        raise LocalProtocolError(f"a share item of {len(items[0][1])} bytes cannot fit in a page")
    return Page(items=tuple(taken), next=cursor, done=len(taken) == len(items) and not more)
