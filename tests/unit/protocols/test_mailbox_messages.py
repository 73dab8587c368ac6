"""The mailbox protocol's messages and its push notice: the wire form pinned, every truncation,
every bad field refused, the bounds that keep every message inside a frame."""

import dataclasses
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.envelope import MAX_ENVELOPE_BYTES, Envelope, RelayRegistration
from protocols.errors import (
    ClosedEarly,
    FrameTooLarge,
    InvalidDid,
    LocalProtocolError,
    MalformedInput,
    TruncatedFrame,
    UnexpectedMessage,
)
from protocols.framing import NEED_DATA, encode_frame
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.mailbox import (
    MAX_FETCHED_BYTES,
    MAX_FRAME,
    MAX_IDS,
    MAX_REFUSAL_MESSAGE,
    Ack,
    Acked,
    Deposit,
    Fetch,
    Fetched,
    Introduce,
    Introduced,
    List,
    Listed,
    MailboxError,
    Message,
    RefusalCode,
    Register,
    Registered,
    Stored,
    Unregister,
    Unregistered,
    decode_message,
    take_fitting,
)
from protocols.mailbox_messages import MAX_CURSOR_LENGTH
from protocols.mailbox_notice import (
    MAILBOX_NOTICE_PROTOCOL_ID,
    MAX_NOTICE_FRAME,
    Notice,
    NoticeReader,
    encode_notice,
)
from protocols.mailbox_records import MAX_ALLOWED_SENDERS, MAX_REVOKED_DEVICES
from protocols.pairing_messages import MAX_CHAIN, MAX_IDENTITY_ROTATIONS
from protocols.peer_id import peer_id_from_ed25519_public_key


def did(seed: int) -> str:
    return did_from_ed25519_public_key(seed.to_bytes(32, "big"))


RECIPIENT = did(1)
DEVICE_KEY = nacl.signing.SigningKey(b"\x02" * 32)
RELAY = peer_id_from_ed25519_public_key(b"\x03" * 32)
# A real introduction: the identity key (rotated to version 2) certified device 4, which
# certified DEVICE_KEY's device.
IDENTITY_KEY, ROTATED_KEY = (
    nacl.signing.SigningKey(b"\x05" * 32),
    nacl.signing.SigningKey(b"\x06" * 32),
)
APPROVER_KEY = nacl.signing.SigningKey(b"\x04" * 32)
IDENTITY = did_from_ed25519_public_key(bytes(IDENTITY_KEY.verify_key))
ROTATION = IdentityKeyRotation.create(
    signing_key=IDENTITY_KEY,
    did=IDENTITY,
    new_public_key=bytes(ROTATED_KEY.verify_key),
    key_version=2,
    rotated_at_ms=1_600_000_000_000,
).to_wire()
APPROVER_CERTIFICATE = DeviceCertificate.create(
    signing_key=ROTATED_KEY,
    did=IDENTITY,
    device_public_key=bytes(APPROVER_KEY.verify_key),
    approver=IDENTITY,
    issued_at_ms=1_700_000_000_000,
).to_wire()
CERTIFICATE = DeviceCertificate.create(
    signing_key=APPROVER_KEY,
    did=IDENTITY,
    device_public_key=bytes(DEVICE_KEY.verify_key),
    approver=peer_id_from_ed25519_public_key(bytes(APPROVER_KEY.verify_key)),
    issued_at_ms=1_700_000_000_001,
).to_wire()


def envelope(seed: int, size: int = 100, recipient: str = RECIPIENT) -> Envelope:
    return Envelope.build(
        recipient_did=recipient,
        expires_at_ms=1_700_000_000_000 + seed,
        ciphertext=seed.to_bytes(4, "big") * (size // 4),
    )


E1, E2, E3 = envelope(1), envelope(2), envelope(3)
REGISTRATION = RelayRegistration.create(
    signing_key=DEVICE_KEY,
    recipient_did=RECIPIENT,
    relay=RELAY,
    allowed_senders=(did(9),),
    quota_bytes=1 << 20,
    expires_at_ms=2_000_000_000_000,
    issued_at_ms=1_700_000_000_000,
)
MESSAGES: list[Message] = [
    Introduce(certificate=CERTIFICATE, chain=(APPROVER_CERTIFICATE,), rotations=(ROTATION,)),
    Introduce(certificate=APPROVER_CERTIFICATE, chain=(), rotations=()),
    Register(registration=REGISTRATION),
    Unregister(recipient_did=RECIPIENT),
    Deposit(envelopes=(E1,)),
    Deposit(envelopes=(E1, E2, E3)),
    List(recipient_did=RECIPIENT, after="17", limit=100),
    List(recipient_did=RECIPIENT, after=None, limit=1),
    Fetch(ids=(E1.id, E2.id)),
    Ack(ids=(E1.id,)),
    Introduced(did=IDENTITY),
    Registered(),
    Unregistered(),
    Stored(ids=(E1.id,), refused=()),
    Stored(
        ids=(E1.id,),
        refused=((E3.id, "over_quota", "the recipient's quota is full"), (E2.id, "duplicate", "")),
    ),
    Stored(ids=(), refused=((E2.id, "rate_limited", "retry later"),)),
    Listed(ids=(E1.id, E2.id), next_cursor="2"),
    Listed(ids=(), next_cursor=None),
    Fetched(envelopes=(E1, E2)),
    Fetched(envelopes=()),
    Acked(count=1),
    MailboxError(code="over_quota", message="the recipient's quota is full"),
]
IDS = [
    "introduce",
    "introduce_first_device",
    "register",
    "unregister",
    "deposit",
    "deposit_several",
    "list",
    "list_first",
    "fetch",
    "ack",
    "introduced",
    "registered",
    "unregistered",
    "stored",
    "stored_and_refused",
    "stored_none",
    "listed",
    "listed_empty",
    "fetched",
    "fetched_empty",
    "acked",
    "error",
]


def test_the_wire_form_of_each_message() -> None:
    # Built by hand from the protocol's definition, not from the classes.
    expected: dict[str, dict[str, Any]] = {
        "introduce": {
            "type": "vivim.mailbox.introduce.v1",
            "certificate": CERTIFICATE,
            "chain": [APPROVER_CERTIFICATE],
            "rotations": [ROTATION],
        },
        "introduce_first_device": {
            "type": "vivim.mailbox.introduce.v1",
            "certificate": APPROVER_CERTIFICATE,
            "chain": [],
            "rotations": [],
        },
        "introduced": {"type": "vivim.mailbox.introduced.v1", "did": IDENTITY},
        "register": {"type": "vivim.mailbox.register.v1", "registration": REGISTRATION.to_wire()},
        "unregister": {"type": "vivim.mailbox.unregister.v1", "recipient_did": RECIPIENT},
        "deposit": {"type": "vivim.mailbox.deposit.v1", "envelopes": [E1.to_wire()]},
        "deposit_several": {
            "type": "vivim.mailbox.deposit.v1",
            "envelopes": [E1.to_wire(), E2.to_wire(), E3.to_wire()],
        },
        "list": {
            "type": "vivim.mailbox.list.v1",
            "recipient_did": RECIPIENT,
            "after": "17",
            "limit": 100,
        },
        "list_first": {
            "type": "vivim.mailbox.list.v1",
            "recipient_did": RECIPIENT,
            "after": None,
            "limit": 1,
        },
        "fetch": {"type": "vivim.mailbox.fetch.v1", "ids": [E1.id, E2.id]},
        "ack": {"type": "vivim.mailbox.ack.v1", "ids": [E1.id]},
        "registered": {"type": "vivim.mailbox.registered.v1"},
        "unregistered": {"type": "vivim.mailbox.unregistered.v1"},
        "stored": {"type": "vivim.mailbox.stored.v1", "ids": [E1.id], "refused": []},
        # Each refusal an array [id, code, message], in the order the relay gave them.
        "stored_and_refused": {
            "type": "vivim.mailbox.stored.v1",
            "ids": [E1.id],
            "refused": [
                [E3.id, "over_quota", "the recipient's quota is full"],
                [E2.id, "duplicate", ""],
            ],
        },
        "stored_none": {
            "type": "vivim.mailbox.stored.v1",
            "ids": [],
            "refused": [[E2.id, "rate_limited", "retry later"]],
        },
        "listed": {"type": "vivim.mailbox.listed.v1", "ids": [E1.id, E2.id], "next_cursor": "2"},
        "listed_empty": {"type": "vivim.mailbox.listed.v1", "ids": [], "next_cursor": None},
        "fetched": {"type": "vivim.mailbox.fetched.v1", "envelopes": [E1.to_wire(), E2.to_wire()]},
        "fetched_empty": {"type": "vivim.mailbox.fetched.v1", "envelopes": []},
        "acked": {"type": "vivim.mailbox.acked.v1", "count": 1},
        "error": {
            "type": "vivim.mailbox.error.v1",
            "code": "over_quota",
            "message": "the recipient's quota is full",
        },
    }
    for name, message in zip(IDS, MESSAGES, strict=True):
        assert message.to_wire() == canonical_encode(expected[name]), name


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_round_trip_truncations_and_trailing_bytes(message: Message) -> None:
    wire = message.to_wire()
    assert decode_message(wire) == message
    assert type(message).from_wire(wire) == message
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            decode_message(wire[:length])
    for trailing in (b"\x00", wire):
        with pytest.raises(MalformedInput, match="trailing"):
            decode_message(wire + trailing)


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_missing_and_extra_fields_and_other_types_are_refused(message: Message) -> None:
    fields = canonical_decode(message.to_wire())
    assert isinstance(fields, dict)
    for name in fields:
        if name != "type":
            with pytest.raises(MalformedInput, match="missing"):
                decode_message(canonical_encode({k: v for k, v in fields.items() if k != name}))
    with pytest.raises(MalformedInput, match="unexpected"):
        decode_message(canonical_encode({**fields, "extra": 1}))
    for other in MESSAGES:
        if type(other) is not type(message):
            with pytest.raises(MalformedInput, match="expected a"):
                type(message).from_wire(other.to_wire())


@pytest.mark.parametrize(
    "value",
    [[], 1, None, {"type": 1}, {"type": "vivim.mailbox.push.v1"}, {"ids": []}, Notice.TYPE],
)
def test_values_that_are_not_messages_are_refused(value: object) -> None:
    if value == Notice.TYPE:  # a Notice belongs to the notice stream, not the mailbox stream
        value = canonical_decode(Notice(recipient_did=RECIPIENT, count=1).to_wire())
    with pytest.raises(MalformedInput, match="not a mailbox message"):
        decode_message(canonical_encode(value))


def wire_with(original: Message, **changes: object) -> bytes:
    fields = canonical_decode(original.to_wire())
    assert isinstance(fields, dict)
    return canonical_encode({**fields, **changes})


def ids(count: int) -> list[str]:
    return [envelope(seed).id for seed in range(count)]


MISMATCHED_ENVELOPE = canonical_decode(E1.to_wire())
assert isinstance(MISMATCHED_ENVELOPE, dict)
MISMATCHED_ENVELOPE_WIRE = canonical_encode({**MISMATCHED_ENVELOPE, "expires_at_ms": 1})
NAMED = dict(zip(IDS, MESSAGES, strict=True))
INTRODUCE, REGISTER, UNREGISTER, DEPOSIT, LIST, FETCH, ACK = (
    NAMED[name]
    for name in ("introduce", "register", "unregister", "deposit", "list", "fetch", "ack")
)
INTRODUCED, STORED, LISTED, FETCHED, ACKED, ERROR = (
    NAMED[name]
    for name in ("introduced", "stored_and_refused", "listed", "fetched", "acked", "error")
)
MANY_IDS = ids(MAX_IDS + 1)  # E1, E2, E3 among them (seeds 1 to 3)
OTHER_ID = envelope(MAX_IDS + 1).id  # not among them
WRONG_FIELDS: list[tuple[Message, dict[str, Any], type[MalformedInput], str]] = [
    (INTRODUCE, {"certificate": b""}, MalformedInput, "certificate holds an empty byte string"),
    (INTRODUCE, {"certificate": "x"}, MalformedInput, "certificate holds a str, expected bytes"),
    (INTRODUCE, {"certificate": None}, MalformedInput, "certificate holds a NoneType"),
    (INTRODUCE, {"certificate": [CERTIFICATE]}, MalformedInput, "holds a tuple, expected bytes"),
    (
        INTRODUCE,
        {"chain": [APPROVER_CERTIFICATE] * (MAX_CHAIN + 1)},
        MalformedInput,
        "chain has 17 entries, more than 16",
    ),
    (
        INTRODUCE,
        {"chain": APPROVER_CERTIFICATE},
        MalformedInput,
        "chain is a bytes, expected a list",
    ),
    (INTRODUCE, {"chain": [b""]}, MalformedInput, "chain holds an empty byte string"),
    (INTRODUCE, {"chain": [1]}, MalformedInput, "chain holds a int, expected bytes"),
    (
        INTRODUCE,
        {"rotations": [ROTATION] * (MAX_IDENTITY_ROTATIONS + 1)},
        MalformedInput,
        "rotations has 257 entries, more than 256",
    ),
    (INTRODUCE, {"rotations": None}, MalformedInput, "rotations is a NoneType, expected a list"),
    (INTRODUCE, {"rotations": [ROTATION, "x"]}, MalformedInput, "rotations holds a str"),
    (INTRODUCE, {"rotations": [b""]}, MalformedInput, "rotations holds an empty byte string"),
    (INTRODUCED, {"did": RELAY}, InvalidDid, "not a DID"),
    (INTRODUCED, {"did": "did:web:example.com"}, InvalidDid, "method is 'web'"),
    (INTRODUCED, {"did": ""}, InvalidDid, "is not a DID"),
    (INTRODUCED, {"did": 5}, MalformedInput, "did is a int, expected str"),
    (INTRODUCED, {"did": None}, MalformedInput, "did is a NoneType"),
    (REGISTER, {"registration": b"\x00"}, MalformedInput, "not in canonical form|trailing|record"),
    (REGISTER, {"registration": E1.to_wire()}, MalformedInput, "record type"),
    (REGISTER, {"registration": [REGISTRATION.to_wire()]}, MalformedInput, "is a tuple"),
    (REGISTER, {"registration": "x"}, MalformedInput, "registration is a str"),
    (UNREGISTER, {"recipient_did": RELAY}, InvalidDid, "not a DID"),
    (DEPOSIT, {"envelopes": [MISMATCHED_ENVELOPE_WIRE]}, MalformedInput, "does not match"),
    (
        DEPOSIT,
        {"envelopes": [E1.to_wire(), MISMATCHED_ENVELOPE_WIRE]},
        MalformedInput,
        "does not match",
    ),
    (DEPOSIT, {"envelopes": None}, MalformedInput, "envelopes is a NoneType, expected a list"),
    (DEPOSIT, {"envelopes": E1.to_wire()}, MalformedInput, "envelopes is a Envelope, expected a"),
    (DEPOSIT, {"envelopes": []}, MalformedInput, "0 envelopes, expected 1 to 1000"),
    (DEPOSIT, {"envelopes": [b"\x00"] * (MAX_IDS + 1)}, MalformedInput, "1001 entries"),
    (
        DEPOSIT,
        {"envelopes": [E1.to_wire(), E2.to_wire(), E1.to_wire()]},
        MalformedInput,
        "holds an envelope twice",
    ),
    (DEPOSIT, {"envelopes": [E1.id]}, MalformedInput, "envelopes is a str, expected a Envelope"),
    (DEPOSIT, {"envelopes": [[E1.to_wire()]]}, MalformedInput, "envelopes is a tuple"),
    (DEPOSIT, {"envelopes": [b"\x00"]}, MalformedInput, "not in canonical form|trailing|record"),
    (LIST, {"limit": 0}, MalformedInput, "limit is 0, expected 1 to 1000"),
    (LIST, {"limit": MAX_IDS + 1}, MalformedInput, "limit is 1001"),
    (LIST, {"limit": True}, MalformedInput, "limit is a bool"),
    (LIST, {"after": ""}, MalformedInput, "not a cursor"),
    (LIST, {"after": "a b"}, MalformedInput, "not a cursor"),
    (LIST, {"after": "é"}, MalformedInput, "not a cursor"),
    (LIST, {"after": "x" * (MAX_CURSOR_LENGTH + 1)}, MalformedInput, "more than 128"),
    (LIST, {"after": 5}, MalformedInput, "after is a int"),
    (FETCH, {"ids": []}, MalformedInput, "0 ids, expected 1 to 1000"),
    (FETCH, {"ids": ids(MAX_IDS + 1)}, MalformedInput, "1001 ids"),
    (FETCH, {"ids": [E1.id, E1.id]}, MalformedInput, "twice"),
    (FETCH, {"ids": ["bafy"]}, MalformedInput, "not a content id"),
    (FETCH, {"ids": E1.id}, MalformedInput, "ids is a str, expected a list"),
    (ACK, {"ids": []}, MalformedInput, "0 ids"),
    (ACK, {"ids": [1]}, MalformedInput, "not a content id"),
    (STORED, {"ids": ["x"]}, MalformedInput, "not a content id"),
    (STORED, {"ids": E1.id}, MalformedInput, "ids is a str, expected a list"),
    (STORED, {"ids": [E1.id, E1.id]}, MalformedInput, "names an id twice"),
    (STORED, {"ids": MANY_IDS, "refused": []}, MalformedInput, "1001 ids, expected 0 to 1000"),
    (STORED, {"refused": None}, MalformedInput, "refused is a NoneType, expected a list"),
    (STORED, {"refused": [[E1.id, "duplicate", ""]]}, MalformedInput, "each named once"),
    (
        STORED,
        {"refused": [[E2.id, "duplicate", ""], [E2.id, "over_quota", ""]]},
        MalformedInput,
        "each named once",
    ),
    (STORED, {"refused": [["x", "duplicate", ""]]}, MalformedInput, "not a content id"),
    (STORED, {"refused": [[E2.id, "Over quota", ""]]}, MalformedInput, "not like 'over_quota'"),
    (STORED, {"refused": [[E2.id, "", ""]]}, MalformedInput, "not like 'over_quota'"),
    (STORED, {"refused": [[E2.id, "x" * 65, ""]]}, MalformedInput, "code is 65 characters"),
    (STORED, {"refused": [[E2.id, 5, ""]]}, MalformedInput, "code is a int, expected str"),
    (
        STORED,
        {"refused": [[E2.id, "duplicate", "x" * (MAX_REFUSAL_MESSAGE + 1)]]},
        MalformedInput,
        f"message is {MAX_REFUSAL_MESSAGE + 1} characters, more than {MAX_REFUSAL_MESSAGE}",
    ),
    (STORED, {"refused": [[E2.id, "duplicate", b"x"]]}, MalformedInput, "message is a bytes"),
    (STORED, {"refused": [[E2.id, "duplicate"]]}, MalformedInput, r"is \[id, code, message\]"),
    (
        STORED,
        {"refused": [[E2.id, "duplicate", "", ""]]},
        MalformedInput,
        r"is \[id, code, message\]",
    ),
    (STORED, {"refused": [[]]}, MalformedInput, r"is \[id, code, message\]"),
    (STORED, {"refused": [E2.id]}, MalformedInput, r"is \[id, code, message\]"),
    (STORED, {"refused": [{"id": E2.id}]}, MalformedInput, r"is \[id, code, message\]"),
    (
        STORED,
        {"ids": MANY_IDS[:MAX_IDS], "refused": [[OTHER_ID, "duplicate", ""]]},
        MalformedInput,
        "at most 1000 envelopes",
    ),
    (
        STORED,
        {"ids": [], "refused": [[i, "duplicate", ""] for i in MANY_IDS]},
        MalformedInput,
        "at most 1000 envelopes",
    ),
    (LISTED, {"ids": ids(MAX_IDS + 1)}, MalformedInput, "1001 ids, expected 0 to 1000"),
    (LISTED, {"ids": [], "next_cursor": "2"}, MalformedInput, "without ids has no next cursor"),
    (LISTED, {"next_cursor": ""}, MalformedInput, "not a cursor"),
    (FETCHED, {"envelopes": [E1.to_wire(), E1.to_wire()]}, MalformedInput, "twice"),
    (FETCHED, {"envelopes": [E1.id]}, MalformedInput, "envelopes is a str|a str"),
    (FETCHED, {"envelopes": [MISMATCHED_ENVELOPE_WIRE]}, MalformedInput, "does not match"),
    (FETCHED, {"envelopes": [b"\x00"] * (MAX_IDS + 1)}, MalformedInput, "1001 entries"),
    (FETCHED, {"envelopes": E1.to_wire()}, MalformedInput, "expected a list"),
    (ACKED, {"count": -1}, MalformedInput, "count is -1"),
    (ACKED, {"count": MAX_IDS + 1}, MalformedInput, "count is 1001"),
    (ERROR, {"code": "Over quota"}, MalformedInput, "not like"),
    (ERROR, {"code": "x" * 65}, MalformedInput, "more than 64"),
    (ERROR, {"message": "x" * 1001}, MalformedInput, "more than 1000"),
]


@pytest.mark.parametrize(("message", "changes", "error", "match"), WRONG_FIELDS)
def test_wrong_field_values_are_refused(
    message: Message, changes: dict[str, Any], error: type[MalformedInput], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_message(wire_with(message, **changes))


def test_refusal_codes() -> None:
    assert {code.value for code in RefusalCode} == {
        "unregistered_recipient",
        "sender_not_allowed",
        "too_large",
        "over_quota",
        "rate_limited",
        "duplicate",
        "unauthorized",
        "malformed",
        "expired",
    }
    for code in RefusalCode:
        assert decode_message(MailboxError(code=code, message="").to_wire()).code == code


# --- the bounds ---------------------------------------------------------------------------------

LARGEST = envelope(7, size=MAX_ENVELOPE_BYTES, recipient=RECIPIENT)


def test_the_largest_envelope_fits_a_deposit_and_a_fetched() -> None:
    encode_frame(Deposit(envelopes=(LARGEST,)).to_wire(), MAX_FRAME)
    assert len(LARGEST.to_wire()) <= MAX_FETCHED_BYTES
    encode_frame(Fetched(envelopes=(LARGEST,)).to_wire(), MAX_FRAME)


def test_the_largest_registration_fits_a_register() -> None:
    largest = RelayRegistration.create(
        signing_key=DEVICE_KEY,
        recipient_did=RECIPIENT,
        relay=RELAY,
        allowed_senders=tuple(did(seed) for seed in range(2, 2 + MAX_ALLOWED_SENDERS)),
        revoked_devices=tuple(
            peer_id_from_ed25519_public_key(seed.to_bytes(32, "big"))
            for seed in range(MAX_REVOKED_DEVICES)
        ),
        quota_bytes=1 << 20,
        expires_at_ms=2_000_000_000_000,
        issued_at_ms=1_700_000_000_000,
    )
    assert len(largest.revoked_devices) == MAX_REVOKED_DEVICES
    register = Register(registration=largest)
    assert decode_message(register.to_wire()) == register
    assert len(encode_frame(register.to_wire(), MAX_FRAME)) < MAX_FRAME // 16


def full_envelopes() -> tuple[Envelope, ...]:
    """MAX_IDS envelopes filling MAX_FETCHED_BYTES: the most CBOR heads around the most bytes."""
    small = [envelope(seed, size=60) for seed in range(MAX_IDS - 1)]
    room = MAX_FETCHED_BYTES - sum(len(item.to_wire()) for item in small)
    filler = envelope(10_000, size=room - 300)
    filler = envelope(10_000, size=(room - (len(filler.to_wire()) - filler.size)) // 4 * 4)
    return (*small, filler)


def test_a_full_fetched_fits_a_frame() -> None:
    full = Fetched(envelopes=full_envelopes())
    assert MAX_FETCHED_BYTES - 4 < full.wire_bytes <= MAX_FETCHED_BYTES
    encode_frame(full.to_wire(), MAX_FRAME)


def test_the_largest_deposit_fits_a_frame() -> None:
    full = Deposit(envelopes=full_envelopes())
    assert len(full.envelopes) == MAX_IDS
    assert MAX_FETCHED_BYTES - 4 < full.wire_bytes <= MAX_FETCHED_BYTES
    frame = encode_frame(full.to_wire(), MAX_FRAME)
    assert len(frame) <= MAX_FRAME
    assert decode_message(full.to_wire()) == full


HALVES = (envelope(1, size=MAX_ENVELOPE_BYTES // 2 + 4), envelope(2, MAX_ENVELOPE_BYTES // 2))


def test_a_deposit_out_of_its_bounds_cannot_be_built_or_decoded() -> None:
    assert Deposit(envelopes=HALVES).wire_bytes <= MAX_FETCHED_BYTES  # two halves and some fit
    over = (*HALVES, envelope(3, size=40_000))
    with pytest.raises(MalformedInput, match="more than 1081344"):
        Deposit(envelopes=over)
    wire = canonical_encode({"type": Deposit.TYPE, "envelopes": [e.to_wire() for e in over]})
    with pytest.raises(MalformedInput, match="more than 1081344"):
        decode_message(wire)
    with pytest.raises(MalformedInput, match="0 envelopes, expected 1 to 1000"):
        Deposit(envelopes=())
    small = tuple(envelope(seed, size=52) for seed in range(MAX_IDS + 1))
    assert len(Deposit(envelopes=small[:MAX_IDS]).envelopes) == MAX_IDS
    with pytest.raises(MalformedInput, match="1001 envelopes, expected 1 to 1000"):
        Deposit(envelopes=small)
    with pytest.raises(MalformedInput, match="holds an envelope twice"):
        Deposit(envelopes=(E1, E2, E1))
    with pytest.raises(MalformedInput, match="envelopes is a list, expected a list"):
        Deposit(envelopes=[E1])  # type: ignore[arg-type]
    with pytest.raises(MalformedInput, match="envelopes is a bytes, expected a Envelope"):
        Deposit(envelopes=(E1.to_wire(),))  # type: ignore[arg-type]


def test_a_stored_names_at_most_max_ids_envelopes_each_once() -> None:
    refusal = ("over_quota", "full")
    every = ids(MAX_IDS + 1)
    assert len(Stored(ids=tuple(every[:MAX_IDS]), refused=()).ids) == MAX_IDS
    split = Stored(ids=tuple(every[:500]), refused=tuple((i, *refusal) for i in every[500:MAX_IDS]))
    assert decode_message(split.to_wire()) == split
    assert Stored(ids=(), refused=()).to_wire() == canonical_encode(
        {"type": "vivim.mailbox.stored.v1", "ids": [], "refused": []}
    )
    for too_many in (
        {"ids": tuple(every[:500]), "refused": tuple((i, *refusal) for i in every[500:])},
        {"ids": (), "refused": tuple((i, *refusal) for i in every)},
    ):
        with pytest.raises(MalformedInput, match="at most 1000 envelopes, each named once"):
            Stored(**too_many)  # type: ignore[arg-type]
    with pytest.raises(MalformedInput, match="each named once"):
        Stored(ids=(E1.id,), refused=((E1.id, *refusal),))
    with pytest.raises(MalformedInput, match="each named once"):
        Stored(ids=(), refused=((E1.id, *refusal), (E1.id, "duplicate", "")))
    with pytest.raises(MalformedInput, match="names an id twice"):
        Stored(ids=(E1.id, E1.id), refused=())
    with pytest.raises(MalformedInput, match="not like 'over_quota'"):
        Stored(ids=(), refused=((E1.id, "Over Quota", ""),))
    with pytest.raises(MalformedInput, match="message is 1001 characters"):
        Stored(ids=(), refused=((E1.id, "over_quota", "x" * 1001),))
    for entry in ((E1.id, "over_quota"), (E1.id, "over_quota", "", ""), E1.id, None):
        with pytest.raises(MalformedInput, match=r"a refused entry is \[id, code, message\]"):
            Stored(ids=(), refused=(entry,))  # type: ignore[arg-type]
    with pytest.raises(MalformedInput, match="refused is a list, expected a list"):
        Stored(ids=(), refused=[(E1.id, *refusal)])  # type: ignore[arg-type]


def test_the_largest_stored_fits_a_frame() -> None:
    largest = Stored(
        ids=(),
        refused=tuple((i, "x" * 64, "\U0001f600" * MAX_REFUSAL_MESSAGE) for i in ids(MAX_IDS)),
    )
    encode_frame(largest.to_wire(), MAX_FRAME)


def test_a_fetched_over_the_bound_is_refused_and_take_fitting_stops_before_it() -> None:
    halves = HALVES
    half_fetched = Fetched(envelopes=halves)  # two halves and some fit
    with pytest.raises(MalformedInput, match="more than 1081344"):
        Fetched(envelopes=(*halves, envelope(3, size=40_000)))
    assert take_fitting([*halves, envelope(3, size=40_000), E1]) == half_fetched.envelopes
    assert take_fitting([LARGEST, E1]) == (LARGEST, E1)  # 32 KiB to spare
    assert take_fitting([LARGEST, envelope(3, size=40_000), E1]) == (LARGEST,)
    assert take_fitting([]) == ()
    assert len(take_fitting([envelope(seed, size=52) for seed in range(MAX_IDS + 5)])) == MAX_IDS


def test_the_largest_introduction_fits_a_frame() -> None:
    # Bounded by count, not size: the chain and rotations of real records at their limits.
    largest = Introduce(
        certificate=CERTIFICATE,
        chain=(APPROVER_CERTIFICATE,) * MAX_CHAIN,
        rotations=(ROTATION,) * MAX_IDENTITY_ROTATIONS,
    )
    assert decode_message(largest.to_wire()) == largest
    encode_frame(largest.to_wire(), MAX_FRAME)
    with pytest.raises(MalformedInput, match="more than 16"):
        Introduce(certificate=CERTIFICATE, chain=(CERTIFICATE,) * (MAX_CHAIN + 1), rotations=())
    with pytest.raises(MalformedInput, match="more than 256"):
        Introduce(
            certificate=CERTIFICATE, chain=(), rotations=(ROTATION,) * (MAX_IDENTITY_ROTATIONS + 1)
        )


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"chain": [APPROVER_CERTIFICATE]}, "chain is a list, expected a list"),
        ({"rotations": [ROTATION]}, "rotations is a list"),
        ({"certificate": bytearray(CERTIFICATE)}, "certificate holds a bytearray"),
        ({"chain": (APPROVER_CERTIFICATE, b"")}, "chain holds an empty byte string"),
        ({"rotations": (ROTATION.hex(),)}, "rotations holds a str"),
    ],
)
def test_an_introduce_of_the_wrong_types_cannot_be_built(
    arguments: dict[str, Any], match: str
) -> None:
    fields = {"certificate": CERTIFICATE, "chain": (), "rotations": (), **arguments}
    with pytest.raises(MalformedInput, match=match):
        Introduce(**fields)


def test_an_introduced_names_a_did() -> None:
    with pytest.raises(InvalidDid):
        Introduced(did=RELAY)  # a device's peer id is not its DID
    with pytest.raises(MalformedInput, match="did is a bytes"):
        Introduced(did=IDENTITY.encode())  # type: ignore[arg-type]


def test_messages_are_frozen_and_tuples_are_kept() -> None:
    fetch = Fetch(ids=(E1.id,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fetch.ids = ()  # type: ignore[misc]
    with pytest.raises(MalformedInput, match="ids is a list"):
        Fetch(ids=[E1.id])  # type: ignore[arg-type]
    deposit = Deposit(envelopes=(E1, E2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        deposit.envelopes = (E1,)  # type: ignore[misc]
    # A refusal built as a list (as one decodes) is kept as a tuple: one spelling.
    stored = Stored(ids=(E1.id,), refused=([E2.id, "duplicate", ""],))  # type: ignore[arg-type]
    assert stored.refused == ((E2.id, "duplicate", ""),)
    assert stored == Stored(ids=(E1.id,), refused=((E2.id, "duplicate", ""),))
    assert hash(stored) == hash(Stored(ids=(E1.id,), refused=((E2.id, "duplicate", ""),)))
    assert decode_message(stored.to_wire()).refused == stored.refused  # type: ignore[union-attr]


def test_the_single_envelope_deposit_and_stored_of_before_are_refused() -> None:
    # The first wire forms: a Deposit of one `envelope`, a Stored of one `id`.
    old_deposit = {"type": "vivim.mailbox.deposit.v1", "envelope": E1.to_wire()}
    with pytest.raises(MalformedInput, match=r"missing \['envelopes'\], unexpected \['envelope'\]"):
        decode_message(canonical_encode(old_deposit))
    old_stored = {"type": "vivim.mailbox.stored.v1", "id": E1.id}
    with pytest.raises(MalformedInput, match=r"missing \['ids', 'refused'\], unexpected \['id'\]"):
        decode_message(canonical_encode(old_stored))


def stored_of(outcomes: list[tuple[str, tuple[str, str] | None]]) -> Stored:
    """The Stored of these outcomes: each id stored (None) or refused with (code, message)."""
    return Stored(
        ids=tuple(i for i, refusal in outcomes if refusal is None),
        refused=tuple((i, *refusal) for i, refusal in outcomes if refusal is not None),
    )


blobs = st.lists(st.binary(min_size=1, max_size=40), max_size=4).map(tuple)
messages = st.one_of(
    st.builds(
        Introduce, certificate=st.binary(min_size=1, max_size=200), chain=blobs, rotations=blobs
    ),
    st.builds(Introduced, did=st.integers(1, 2**64).map(did)),
    st.builds(Unregister, recipient_did=st.integers(1, 2**64).map(did)),
    st.builds(
        List,
        recipient_did=st.integers(1, 2**64).map(did),
        after=st.none() | st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True),
        limit=st.integers(1, MAX_IDS),
    ),
    st.builds(Fetch, ids=st.lists(st.sampled_from(ids(20)), min_size=1, unique=True).map(tuple)),
    st.builds(Ack, ids=st.lists(st.sampled_from(ids(20)), min_size=1, unique=True).map(tuple)),
    st.builds(
        Deposit,
        envelopes=st.lists(st.integers(0, 50), unique=True, min_size=1, max_size=5).map(
            lambda seeds: tuple(envelope(seed) for seed in seeds)
        ),
    ),
    st.lists(
        st.tuples(
            st.sampled_from(ids(20)),
            st.none()
            | st.tuples(
                st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True), st.text(max_size=100)
            ),
        ),
        unique_by=lambda outcome: outcome[0],
        max_size=6,
    ).map(stored_of),
    st.builds(
        Fetched,
        envelopes=st.lists(st.integers(0, 50), unique=True, max_size=5).map(
            lambda seeds: tuple(envelope(seed) for seed in seeds)
        ),
    ),
    st.builds(
        Listed,
        ids=st.lists(st.sampled_from(ids(20)), min_size=1, unique=True).map(tuple),
        next_cursor=st.none() | st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    ),
    st.builds(Acked, count=st.integers(0, MAX_IDS)),
    st.builds(
        MailboxError,
        code=st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
        message=st.text(max_size=1000),
    ),
)


@settings(max_examples=150)
@given(messages)
def test_message_round_trip(message: Message) -> None:
    wire = message.to_wire()
    assert decode_message(wire) == message
    assert canonical_encode(canonical_decode(wire)) == wire


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_malformed_input(data: bytes) -> None:
    try:
        message = decode_message(data)
    except MalformedInput:
        return
    assert message.to_wire() == data


# --- the push notice ----------------------------------------------------------------------------


def test_a_notice_is_one_frame() -> None:
    assert MAILBOX_NOTICE_PROTOCOL_ID == "/vivim/mailbox/notice/1.0.0"
    frame = encode_notice(RECIPIENT, 3)
    assert frame == encode_frame(
        canonical_encode(
            {"type": "vivim.mailbox.notice.v1", "recipient_did": RECIPIENT, "count": 3}
        ),
        MAX_NOTICE_FRAME,
    )
    for chunk in (len(frame), 1):
        reader = NoticeReader()
        events = []
        for start in range(0, len(frame), chunk):
            reader.receive_data(frame[start : start + chunk])
            events.append(reader.next_event())
        reader.receive_data(b"")
        assert [event for event in events if event is not NEED_DATA] == [
            Notice(recipient_did=RECIPIENT, count=3)
        ]
        assert reader.noticed
        assert reader.next_event() is NEED_DATA


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", ClosedEarly),
        (encode_notice(RECIPIENT, 3)[:-1], TruncatedFrame),
        (encode_notice(RECIPIENT, 3) + b"\x00", UnexpectedMessage),
        (encode_frame(Registered().to_wire(), MAX_NOTICE_FRAME), MalformedInput),
        (encode_frame(b"x" * 2000, 4000), FrameTooLarge),
        (
            encode_frame(
                canonical_encode(
                    {"type": "vivim.mailbox.notice.v1", "recipient_did": RECIPIENT, "count": -1}
                ),
                MAX_NOTICE_FRAME,
            ),
            MalformedInput,
        ),
    ],
    ids=["empty", "truncated", "trailing", "not_a_notice", "too_large", "bad_count"],
)
def test_a_notice_stream_that_is_not_one_notice_is_refused(
    data: bytes, error: type[Exception]
) -> None:
    reader = NoticeReader()
    if data:
        reader.receive_data(data)
    reader.receive_data(b"")
    with pytest.raises(error):
        while reader.next_event() is not NEED_DATA or not reader.noticed:
            pass
    with pytest.raises(error):  # and so it stays
        reader.next_event()


def test_impossible_notices_are_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="cannot send this notice"):
        encode_notice(RELAY, 1)
    with pytest.raises(LocalProtocolError):
        encode_notice(RECIPIENT, -1)
