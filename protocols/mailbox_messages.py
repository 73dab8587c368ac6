"""The wire messages of `/vivim/mailbox/1.0.0`, their codec and limits.

A module of its own, as for sync and pairing, so that the codecs read and are tested apart from
the turn-taking in `protocols.mailbox`, which re-exports every name here. Each message checks its
fields when it is built, so a message that exists is a valid one, whether we built it or decoded
it; `decode_message` picks the class by the wire map's `type`.

The records a message carries (a `RelayRegistration`, `Envelope`s) travel as their own wire
bytes inside a CBOR byte string, and are decoded, and so checked, with the message: an envelope
whose id does not match its content is refused with the frame that carried it. Signatures are
not checked here; the relay verifies a registration against the recipient's trust chain.

Listing pages through a relay's envelopes for one recipient in arrival order. The cursor is
opaque: the relay chooses it (its arrival sequence number, say) and the client hands it back
as `after`. An opaque position rather than an envelope id, because the client acks what it
fetched before it lists further, and a relay could not find its place after an envelope it has
deleted.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import check_content_id
from protocols.envelope import MAX_ENVELOPE_BYTES, Envelope
from protocols.errors import MalformedInput
from protocols.identity_records import _check_did
from protocols.mailbox_records import RelayRegistration
from protocols.pairing_messages import MAX_CHAIN, MAX_IDENTITY_ROTATIONS, _check_blob, _check_blobs
from protocols.sync_messages import _check_int, _check_str

__all__ = [
    "ACK",
    "ACKED",
    "DEPOSIT",
    "FETCH",
    "FETCHED",
    "INTRODUCE",
    "INTRODUCED",
    "LIST",
    "LISTED",
    "MAILBOX_ERROR",
    "MAX_CURSOR_LENGTH",
    "MAX_ERROR_CODE",
    "MAX_ERROR_MESSAGE",
    "MAX_FETCHED_BYTES",
    "MAX_IDS",
    "MAX_REFUSAL_MESSAGE",
    "REGISTER",
    "REGISTERED",
    "STORED",
    "UNREGISTER",
    "UNREGISTERED",
    "Ack",
    "Acked",
    "Deposit",
    "Fetch",
    "Fetched",
    "Introduce",
    "Introduced",
    "List",
    "Listed",
    "MailboxError",
    "Message",
    "RefusalCode",
    "Register",
    "Registered",
    "Request",
    "Response",
    "Stored",
    "Unregister",
    "Unregistered",
    "decode_message",
]

INTRODUCE = "vivim.mailbox.introduce.v1"
INTRODUCED = "vivim.mailbox.introduced.v1"
REGISTER = "vivim.mailbox.register.v1"
UNREGISTER = "vivim.mailbox.unregister.v1"
DEPOSIT = "vivim.mailbox.deposit.v1"
LIST = "vivim.mailbox.list.v1"
FETCH = "vivim.mailbox.fetch.v1"
ACK = "vivim.mailbox.ack.v1"
REGISTERED = "vivim.mailbox.registered.v1"
UNREGISTERED = "vivim.mailbox.unregistered.v1"
STORED = "vivim.mailbox.stored.v1"
LISTED = "vivim.mailbox.listed.v1"
FETCHED = "vivim.mailbox.fetched.v1"
ACKED = "vivim.mailbox.acked.v1"
MAILBOX_ERROR = "vivim.mailbox.error.v1"

# Ids in one Fetch, Ack or Listed, and a List's largest limit: 1000 ids are 61 KB of CBOR, and a
# thousand 1 KiB envelopes (the benchmark's) fit one Fetched.
MAX_IDS = 1000
# The envelopes of one Fetched, counted as the sum of their wire lengths. Room for the largest
# envelope (its ciphertext and about 250 bytes of fields) with 32 KiB to spare; with the CBOR
# heads of MAX_IDS byte strings (5 bytes each at most) a Fetched stays well inside the frame
# bound, MAX_ENVELOPE_BYTES + 64 KiB (a test builds the largest).
MAX_FETCHED_BYTES = MAX_ENVELOPE_BYTES + 32 * 1024
MAX_CURSOR_LENGTH = 128
MAX_ERROR_CODE = 64
MAX_ERROR_MESSAGE = 1000
# A refusal's message inside a Stored is shorter: MAX_IDS of them, at up to 4 bytes a
# character, must leave the Stored inside the frame bound (a test builds the largest).
MAX_REFUSAL_MESSAGE = 200
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Printable ASCII without spaces: a relay's cursor is a short token, never text for a person.
_CURSOR = re.compile(r"[\x21-\x7e]+")


class RefusalCode(StrEnum):
    """Why a relay refuses a request (a `MailboxError`'s code); the stream goes on after one.

    Other codes travel too: those of the errors in `protocols.errors` (`malformed`,
    `unexpected_message`, `too_large`, ...) when a relay stops a stream, `internal_error`.
    """

    UNREGISTERED_RECIPIENT = "unregistered_recipient"  # no registration for that DID here
    SENDER_NOT_ALLOWED = "sender_not_allowed"  # the registration does not allow the depositor
    TOO_LARGE = "too_large"  # over the relay's size limit
    OVER_QUOTA = "over_quota"  # the recipient's quota is full
    RATE_LIMITED = "rate_limited"  # the depositor sent too much lately: retry later
    DUPLICATE = "duplicate"  # the relay holds (or held) an envelope with that id
    UNAUTHORIZED = "unauthorized"  # not introduced, or not a device of the DID it acts for
    MALFORMED = "malformed"  # a record that does not verify or is not for this relay
    EXPIRED = "expired"  # an envelope or registration already expired


def _check_cursor(name: str, value: object) -> None:
    if value is not None and _CURSOR.fullmatch(_check_str(name, value, MAX_CURSOR_LENGTH)) is None:
        raise MalformedInput(f"{name} {value!r:.60} is not a cursor (printable ASCII, no spaces)")


def _check_ids(name: str, value: object, least: int) -> None:
    """A tuple of `least` to MAX_IDS distinct envelope ids."""
    if not isinstance(value, tuple):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a list")
    if not least <= len(value) <= MAX_IDS:
        raise MalformedInput(f"{name} has {len(value)} ids, expected {least} to {MAX_IDS}")
    for item in value:
        check_content_id(item)
    if len(set(value)) != len(value):
        raise MalformedInput(f"{name} names an id twice")


def _check_envelopes(value: object, least: int) -> None:
    """A tuple of `least` to MAX_IDS distinct envelopes within MAX_FETCHED_BYTES."""
    if not isinstance(value, tuple):
        raise MalformedInput(f"envelopes is a {type(value).__name__}, expected a list")
    if not least <= len(value) <= MAX_IDS:
        raise MalformedInput(f"{len(value)} envelopes, expected {least} to {MAX_IDS}")
    for envelope in value:
        _check_instance("envelopes", envelope, Envelope)
    if len({envelope.id for envelope in value}) != len(value):
        raise MalformedInput("envelopes holds an envelope twice")
    size = sum(len(envelope.to_wire()) for envelope in value)
    if size > MAX_FETCHED_BYTES:
        raise MalformedInput(f"envelopes of {size} bytes, more than {MAX_FETCHED_BYTES}")


def _check_instance(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a {kind.__name__}")


def _wire_item(value: object) -> object:
    """An item of a tuple field as it travels: an envelope as its wire bytes, a tuple (a
    refusal) as an array."""
    if isinstance(value, Envelope):
        return value.to_wire()
    return list(value) if isinstance(value, tuple) else value


class _Wire:
    """`to_wire`/`from_wire`: canonical CBOR of `{"type": TYPE, field: value, ...}`.

    Tuples travel as CBOR arrays; the records named in `_RECORDS` as their wire bytes.
    """

    TYPE: ClassVar[str]
    _RECORDS: ClassVar[Mapping[str, type[Envelope] | type[RelayRegistration]]] = {}

    def to_wire(self) -> bytes:
        wire: dict[str, object] = {"type": self.TYPE}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = [_wire_item(v) for v in value]
            elif isinstance(value, Envelope | RelayRegistration):
                value = value.to_wire()
            wire[item.name] = value
        return canonical_encode(wire)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode this message type's wire bytes; `MalformedInput` for anything else."""
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MalformedInput(f"message is a {message.TYPE}, expected a {cls.TYPE}")
        return message


# --- requests (client -> relay) -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Introduce(_Wire):
    """Who the client is: its device certificate, the chain of certificates above it and the
    identity key rotations, as wire bytes (what a device's first op carries). The relay checks
    that they make the stream's peer a device of the certificate's DID, and from then on acts
    for that DID on this stream: deposits count as that DID's, and list, fetch, ack, register
    and unregister are allowed for its mailbox only. Answered `Introduced` or `unauthorized`."""

    TYPE: ClassVar[str] = INTRODUCE
    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_blob("certificate", self.certificate)
        _check_blobs("chain", self.chain, MAX_CHAIN)
        _check_blobs("rotations", self.rotations, MAX_IDENTITY_ROTATIONS)


@dataclass(frozen=True, kw_only=True)
class Register(_Wire):
    """Hold mail for the registration's recipient, as it says. Answered `Registered`."""

    TYPE: ClassVar[str] = REGISTER
    _RECORDS: ClassVar[Mapping[str, type[Envelope] | type[RelayRegistration]]] = {
        "registration": RelayRegistration
    }
    registration: RelayRegistration

    def __post_init__(self) -> None:
        _check_instance("registration", self.registration, RelayRegistration)


@dataclass(frozen=True, kw_only=True)
class Unregister(_Wire):
    """Hold no more mail for `recipient_did` (sent by one of its devices). `Unregistered`."""

    TYPE: ClassVar[str] = UNREGISTER
    recipient_did: str

    def __post_init__(self) -> None:
        _check_did("recipient_did", self.recipient_did)


@dataclass(frozen=True, kw_only=True)
class Deposit(_Wire):
    """Hold these envelopes (1 to MAX_IDS, distinct, their wire bytes at most
    MAX_FETCHED_BYTES: one envelope of any size fits). Answered `Stored`, which says for each
    whether it is stored or refused, and why. Several at once because a sender usually has
    several for one relay, and each request costs a round trip and a frame each way."""

    TYPE: ClassVar[str] = DEPOSIT
    _RECORDS: ClassVar[Mapping[str, type[Envelope] | type[RelayRegistration]]] = {
        "envelopes": Envelope
    }
    envelopes: tuple[Envelope, ...]

    def __post_init__(self) -> None:
        _check_envelopes(self.envelopes, least=1)

    @property
    def wire_bytes(self) -> int:
        return sum(len(envelope.to_wire()) for envelope in self.envelopes)


@dataclass(frozen=True, kw_only=True)
class List(_Wire):
    """The ids of at most `limit` envelopes held for `recipient_did`, in arrival order, after
    the cursor `after` (None: from the first). Answered `Listed`."""

    TYPE: ClassVar[str] = LIST
    recipient_did: str
    after: str | None
    limit: int

    def __post_init__(self) -> None:
        _check_did("recipient_did", self.recipient_did)
        _check_cursor("after", self.after)
        _check_int("limit", self.limit, 1, MAX_IDS)


@dataclass(frozen=True, kw_only=True)
class Fetch(_Wire):
    """The envelopes with these ids. Answered `Fetched`."""

    TYPE: ClassVar[str] = FETCH
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_ids("ids", self.ids, 1)


@dataclass(frozen=True, kw_only=True)
class Ack(_Wire):
    """These envelopes are applied: delete them. Answered `Acked`."""

    TYPE: ClassVar[str] = ACK
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_ids("ids", self.ids, 1)


# --- responses (relay -> client) ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Introduced(_Wire):
    """The relay accepts the introduction: it knows the stream's peer as a device of `did`."""

    TYPE: ClassVar[str] = INTRODUCED
    did: str

    def __post_init__(self) -> None:
        _check_did("did", self.did)


@dataclass(frozen=True, kw_only=True)
class Registered(_Wire):
    """The relay holds mail for the registration's recipient from now on."""

    TYPE: ClassVar[str] = REGISTERED


@dataclass(frozen=True, kw_only=True)
class Unregistered(_Wire):
    """The relay holds no more mail for the DID (idempotent: also if it held none)."""

    TYPE: ClassVar[str] = UNREGISTERED


@dataclass(frozen=True, kw_only=True)
class Stored(_Wire):
    """The outcome of each deposited envelope: `ids` are stored (durably: they survive a relay
    restart), `refused` are (id, code, message) with a `RefusalCode`. Every envelope of the
    Deposit is in exactly one of the two."""

    TYPE: ClassVar[str] = STORED
    ids: tuple[str, ...]
    refused: tuple[tuple[str, str, str], ...]

    def __post_init__(self) -> None:
        _check_ids("ids", self.ids, 0)
        if not isinstance(self.refused, tuple):
            raise MalformedInput(f"refused is a {type(self.refused).__name__}, expected a list")
        # Decoded entries arrive as arrays: one spelling, tuples.
        object.__setattr__(
            self, "refused", tuple(tuple(e) if isinstance(e, list) else e for e in self.refused)
        )
        for entry in self.refused:
            if not isinstance(entry, tuple) or len(entry) != 3:
                raise MalformedInput("a refused entry is [id, code, message]")
            check_content_id(entry[0])
            if _ERROR_CODE.fullmatch(_check_str("code", entry[1], MAX_ERROR_CODE)) is None:
                raise MalformedInput(f"refusal code {entry[1]!r:.70} is not like 'over_quota'")
            _check_str("message", entry[2], MAX_REFUSAL_MESSAGE)
        every = [*self.ids, *(entry[0] for entry in self.refused)]
        if len(every) > MAX_IDS or len(set(every)) != len(every):
            raise MalformedInput(f"at most {MAX_IDS} envelopes, each named once")


@dataclass(frozen=True, kw_only=True)
class Listed(_Wire):
    """A page of ids in arrival order; `next_cursor` is the `after` of the next page, None when
    this page ends the list. An empty page ends it (else a client would list for ever)."""

    TYPE: ClassVar[str] = LISTED
    ids: tuple[str, ...]
    next_cursor: str | None

    def __post_init__(self) -> None:
        _check_ids("ids", self.ids, 0)
        _check_cursor("next_cursor", self.next_cursor)
        if not self.ids and self.next_cursor is not None:
            raise MalformedInput("a page without ids has no next cursor")


@dataclass(frozen=True, kw_only=True)
class Fetched(_Wire):
    """Envelopes asked for, in the order asked, skipping those the relay no longer holds, and
    stopping before the one that would pass MAX_FETCHED_BYTES; so the client asks again for
    the ids after the last one it got, and an empty answer means the relay holds none of them.
    One envelope always fits."""

    TYPE: ClassVar[str] = FETCHED
    _RECORDS: ClassVar[Mapping[str, type[Envelope] | type[RelayRegistration]]] = {
        "envelopes": Envelope
    }
    envelopes: tuple[Envelope, ...]

    def __post_init__(self) -> None:
        _check_envelopes(self.envelopes, least=0)

    @property
    def wire_bytes(self) -> int:
        """The sum of the envelopes' wire lengths, which MAX_FETCHED_BYTES bounds."""
        return sum(len(envelope.to_wire()) for envelope in self.envelopes)


@dataclass(frozen=True, kw_only=True)
class Acked(_Wire):
    """How many of the acked envelopes the relay deleted (ids it did not hold count nothing:
    acking twice is harmless)."""

    TYPE: ClassVar[str] = ACKED
    count: int

    def __post_init__(self) -> None:
        _check_int("count", self.count, 0, MAX_IDS)


@dataclass(frozen=True, kw_only=True)
class MailboxError(_Wire):
    """The relay's refusal of a request (a `RefusalCode`; the stream goes on), or, sent between
    requests, why it stops. `message` is for a person."""

    TYPE: ClassVar[str] = MAILBOX_ERROR
    code: str
    message: str

    def __post_init__(self) -> None:
        if _ERROR_CODE.fullmatch(_check_str("code", self.code, MAX_ERROR_CODE)) is None:
            raise MalformedInput(f"error code {self.code!r:.70} is not like 'over_quota'")
        _check_str("message", self.message, MAX_ERROR_MESSAGE)


Request = Introduce | Register | Unregister | Deposit | List | Fetch | Ack
Response = Introduced | Registered | Unregistered | Stored | Listed | Fetched | Acked | MailboxError
Message = Request | Response
_MESSAGE_CLASSES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        Introduce,
        Introduced,
        Register,
        Unregister,
        Deposit,
        List,
        Fetch,
        Ack,
        Registered,
        Unregistered,
        Stored,
        Listed,
        Fetched,
        Acked,
        MailboxError,
    )
}


def decode_message(data: bytes) -> Message:
    """The message whose wire bytes are `data`, its class picked by `type`; `MalformedInput`."""
    value = canonical_decode(data)
    type_name = value.get("type") if isinstance(value, dict) else None
    cls = _MESSAGE_CLASSES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MalformedInput(f"not a mailbox message (type {type_name!r:.60})")
    assert isinstance(value, dict)
    expected = {"type"} | {item.name for item in fields(cls)}
    if value.keys() != expected:
        missing, extra = sorted(expected - value.keys()), sorted(value.keys() - expected)
        raise MalformedInput(
            f"{cls.TYPE} fields wrong: missing {missing}, unexpected {extra!s:.200}"
        )
    arguments: dict[str, Any] = {}
    for name, item in value.items():
        if name == "type":
            continue
        record = cls._RECORDS.get(name)
        if record is not None:
            arguments[name] = _decode_records(name, item, record)
        else:
            arguments[name] = tuple(item) if isinstance(item, list) else item
    return cls(**arguments)


def _decode_records(
    name: str, value: object, record: type[Envelope] | type[RelayRegistration]
) -> object:
    """A record's wire bytes decoded, or an array of them as a tuple; anything else as it is,
    for the message's own checks to refuse."""
    if isinstance(value, list):
        if len(value) > MAX_IDS:  # refused before any is decoded
            raise MalformedInput(f"{name} has {len(value)} entries, more than {MAX_IDS}")
        return tuple(_decode_records(name, item, record) for item in value)
    if isinstance(value, bytes):
        return record.from_wire(value)
    return value
