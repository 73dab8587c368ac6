"""Sealed mail: letters signed for one recipient, envelopes a relay can neither read nor alter
unnoticed, and the signed registration and relay list records."""

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id_of_bytes
from protocols.did import did_from_ed25519_public_key
from protocols.envelope import (
    DEFAULT_TTL_MS,
    ENVELOPE_TYPE,
    LETTER_TYPE,
    MAX_ENVELOPE_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_TYPE_LENGTH,
    SEAL_OVERHEAD,
    BadSignature,
    Envelope,
    EnvelopeTooLarge,
    EnvelopeUnreadable,
    Letter,
    MalformedInput,
    RelayList,
    RelayRegistration,
    open_envelope,
    seal,
)
from protocols.errors import InvalidDid, InvalidPeerId, LocalProtocolError, RemoteProtocolError
from protocols.mailbox_records import (
    MAX_ALLOWED_SENDERS,
    MAX_RELAYS,
    MAX_REVOKED_DEVICES,
    REGISTRATION_TYPE,
    RELAY_LIST_TYPE,
)
from protocols.pairing_code import MAX_ADDRS
from protocols.peer_id import peer_id_from_ed25519_public_key


def signing_key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed.to_bytes(32, "big"))


def did(seed: int) -> str:
    return did_from_ed25519_public_key(bytes(signing_key(seed).verify_key))


def device(key: nacl.signing.SigningKey) -> str:
    return peer_id_from_ed25519_public_key(bytes(key.verify_key))


SENDER_DID, RECIPIENT_DID, OTHER_DID = did(1), did(2), did(3)
SENDER_DEVICE_KEY, RECIPIENT_DEVICE_KEY = signing_key(11), signing_key(12)
SENDER_DEVICE, RECIPIENT_DEVICE = device(SENDER_DEVICE_KEY), device(RECIPIENT_DEVICE_KEY)
RELAY, OTHER_RELAY = device(signing_key(21)), device(signing_key(22))
REVOKED_DEVICE = device(signing_key(13))  # a device of the recipient, revoked
RECIPIENT_X25519 = nacl.public.PrivateKey(b"\x07" * 32)
OTHER_X25519 = nacl.public.PrivateKey(b"\x08" * 32)
EPHEMERAL = b"\x09" * 32
NOW_MS = 1_700_000_000_000
EXPIRES_AT_MS = NOW_MS + DEFAULT_TTL_MS
# Points of order 1 and 8 on Curve25519: X25519 with them gives zero, which libsodium refuses.
LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little")]


def make_letter(recipient_did: str = RECIPIENT_DID, payload: bytes = b"ops...") -> Letter:
    return Letter.create(
        signing_key=SENDER_DEVICE_KEY,
        recipient_did=recipient_did,
        sender_did=SENDER_DID,
        payload_type="sync.ops",
        payload=payload,
        created_at_ms=NOW_MS,
    )


def make_envelope(letter: Letter | None = None, ephemeral: bytes = EPHEMERAL) -> Envelope:
    return seal(
        letter or make_letter(),
        recipient_did=RECIPIENT_DID,
        recipient_x25519_public_key=bytes(RECIPIENT_X25519.public_key),
        expires_at_ms=EXPIRES_AT_MS,
        ephemeral_private_key=ephemeral,
    )


def open_ours(envelope: Envelope, recipient_did: str = RECIPIENT_DID) -> Letter:
    return open_envelope(
        envelope, recipient_did=recipient_did, recipient_x25519_private_key=bytes(RECIPIENT_X25519)
    )


def seal_by_hand(
    plaintext: bytes, recipient_did: str, recipient_public_key: bytes, expires_at_ms: int
) -> Envelope:
    """The construction written out from the module docstring, not from the module: it pins the
    format, and it seals what `seal` refuses to (a letter signed for someone else)."""
    ephemeral_public = nacl.bindings.crypto_scalarmult_base(EPHEMERAL)
    shared = nacl.bindings.crypto_scalarmult(EPHEMERAL, recipient_public_key)
    header = canonical_encode(
        {
            "type": "vivim.mailbox.seal.v1",
            "recipient_did": recipient_did,
            "expires_at_ms": expires_at_ms,
        }
    )
    key = hashlib.blake2b(
        ephemeral_public + recipient_public_key + header,
        digest_size=32,
        key=shared,
        person=b"vivim.mbox.key",
    ).digest()
    nonce = hashlib.blake2b(ephemeral_public, digest_size=24, person=b"vivim.mbox.nonce").digest()
    box = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext
    return Envelope.build(
        recipient_did=recipient_did,
        expires_at_ms=expires_at_ms,
        ciphertext=ephemeral_public + box,
    )


# --- sealing and opening --------------------------------------------------------------------------


def test_a_sealed_letter_opens_for_its_recipient() -> None:
    letter = make_letter()
    envelope = make_envelope(letter)
    assert open_ours(envelope) == letter
    assert envelope.recipient_did == RECIPIENT_DID
    assert envelope.expires_at_ms == EXPIRES_AT_MS
    assert envelope.size == len(envelope.ciphertext) == len(letter.to_wire()) + SEAL_OVERHEAD
    letter.verify(RECIPIENT_DID)


def test_the_construction_is_the_documented_one() -> None:
    letter = make_letter()
    assert make_envelope(letter) == seal_by_hand(
        letter.to_wire(), RECIPIENT_DID, bytes(RECIPIENT_X25519.public_key), EXPIRES_AT_MS
    )


def test_sealing_is_deterministic_in_its_arguments() -> None:
    assert make_envelope() == make_envelope()
    other = make_envelope(ephemeral=b"\x0a" * 32)
    assert other.ciphertext[:32] != make_envelope().ciphertext[:32]
    assert other.id != make_envelope().id
    assert open_ours(other) == make_letter()


def test_the_relay_sees_nothing_of_the_letter() -> None:
    payload = b"a distinctive payload " * 8
    wire = make_envelope(make_letter(payload=payload)).to_wire()
    for secret in (payload[:16], SENDER_DID.encode(), SENDER_DEVICE.encode(), b"sync.ops"):
        assert secret not in wire
    fields = canonical_decode(wire)
    assert isinstance(fields, dict)
    assert fields.keys() == {"type", "id", "recipient_did", "expires_at_ms", "ciphertext"}


def test_the_id_is_the_content_id_of_the_other_fields() -> None:
    envelope = make_envelope()
    content = canonical_encode(
        {
            "type": ENVELOPE_TYPE,
            "recipient_did": RECIPIENT_DID,
            "expires_at_ms": EXPIRES_AT_MS,
            "ciphertext": envelope.ciphertext,
        }
    )
    assert envelope.id == content_id_of_bytes(content)
    content_fields = canonical_decode(content)
    assert isinstance(content_fields, dict)
    assert canonical_decode(envelope.to_wire()) == {**content_fields, "id": envelope.id}


@pytest.mark.parametrize(
    "changes",
    [{"recipient_did": OTHER_DID}, {"expires_at_ms": EXPIRES_AT_MS + 1}, {"ciphertext": b"x" * 60}],
    ids=["recipient", "expiry", "ciphertext"],
)
def test_a_relay_visible_field_changed_under_its_id_is_refused(changes: dict[str, Any]) -> None:
    envelope = make_envelope()
    with pytest.raises(MalformedInput, match="does not match its content"):
        dataclasses.replace(envelope, **changes)
    fields = canonical_decode(envelope.to_wire())
    assert isinstance(fields, dict)
    with pytest.raises(MalformedInput, match="does not match its content"):
        Envelope.from_wire(canonical_encode({**fields, **changes}))


@pytest.mark.parametrize(
    ("recipient_did", "expires_at_ms"),
    [(RECIPIENT_DID, EXPIRES_AT_MS + 1), (RECIPIENT_DID, NOW_MS), (OTHER_DID, EXPIRES_AT_MS)],
    ids=["expiry_extended", "expiry_shortened", "re_addressed"],
)
def test_a_relay_visible_field_changed_with_a_new_id_does_not_open(
    recipient_did: str, expires_at_ms: int
) -> None:
    # The relay recomputes the id; the key is bound to the fields, so the box no longer opens.
    altered = Envelope.build(
        recipient_did=recipient_did,
        expires_at_ms=expires_at_ms,
        ciphertext=make_envelope().ciphertext,
    )
    with pytest.raises(EnvelopeUnreadable) as info:
        open_ours(altered, recipient_did=recipient_did)
    assert isinstance(info.value.__cause__, nacl.exceptions.CryptoError)
    assert info.value.code == "envelope_unreadable"
    assert isinstance(info.value, RemoteProtocolError)


def test_any_ciphertext_byte_flipped_does_not_open() -> None:
    envelope = make_envelope(make_letter(payload=b""))
    for position in range(envelope.size):
        ciphertext = bytearray(envelope.ciphertext)
        ciphertext[position] ^= 0x01
        flipped = Envelope.build(
            recipient_did=RECIPIENT_DID, expires_at_ms=EXPIRES_AT_MS, ciphertext=bytes(ciphertext)
        )
        with pytest.raises(EnvelopeUnreadable):
            open_ours(flipped)


def test_an_envelope_addressed_to_another_did_is_unreadable() -> None:
    with pytest.raises(EnvelopeUnreadable, match="addressed to another DID"):
        open_ours(make_envelope(), recipient_did=OTHER_DID)


def test_the_wrong_private_key_cannot_open() -> None:
    with pytest.raises(EnvelopeUnreadable, match="does not open with our key"):
        open_envelope(
            make_envelope(),
            recipient_did=RECIPIENT_DID,
            recipient_x25519_private_key=bytes(OTHER_X25519),
        )


def test_a_letter_re_addressed_to_another_did_does_not_verify() -> None:
    letter = make_letter(recipient_did=RECIPIENT_DID)
    with pytest.raises(BadSignature):
        letter.verify(OTHER_DID)
    # `seal` refuses to seal it to anyone else ...
    with pytest.raises(LocalProtocolError, match="not signed for this recipient"):
        seal(
            letter,
            recipient_did=OTHER_DID,
            recipient_x25519_public_key=bytes(OTHER_X25519.public_key),
            expires_at_ms=EXPIRES_AT_MS,
            ephemeral_private_key=EPHEMERAL,
        )
    # ... and a recipient who re-seals it by hand to a third person is caught on opening.
    forwarded = seal_by_hand(
        letter.to_wire(), OTHER_DID, bytes(OTHER_X25519.public_key), EXPIRES_AT_MS
    )
    with pytest.raises(EnvelopeUnreadable, match="does not verify for us") as info:
        open_envelope(
            forwarded, recipient_did=OTHER_DID, recipient_x25519_private_key=bytes(OTHER_X25519)
        )
    assert isinstance(info.value.__cause__, BadSignature)


def test_a_forged_letter_inside_a_good_seal_is_unreadable() -> None:
    letter = make_letter()
    forged = dataclasses.replace(letter, payload=b"something else")
    envelope = seal_by_hand(
        forged.to_wire(), RECIPIENT_DID, bytes(RECIPIENT_X25519.public_key), EXPIRES_AT_MS
    )
    with pytest.raises(EnvelopeUnreadable, match="does not verify"):
        open_ours(envelope)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x00",
        b"not cbor",
        canonical_encode({"type": LETTER_TYPE}),
        make_letter().to_wire() + b"\x00",
    ],
)
def test_a_seal_around_no_letter_is_unreadable(plaintext: bytes) -> None:
    envelope = seal_by_hand(
        plaintext, RECIPIENT_DID, bytes(RECIPIENT_X25519.public_key), EXPIRES_AT_MS
    )
    with pytest.raises(EnvelopeUnreadable, match="no valid letter") as info:
        open_ours(envelope)
    assert isinstance(info.value.__cause__, MalformedInput)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_keys(point: bytes) -> None:
    with pytest.raises(LocalProtocolError, match="low order"):
        seal(
            make_letter(),
            recipient_did=RECIPIENT_DID,
            recipient_x25519_public_key=point,
            expires_at_ms=EXPIRES_AT_MS,
            ephemeral_private_key=EPHEMERAL,
        )
    # An envelope whose ephemeral key is of low order opens to nothing.
    envelope = Envelope.build(
        recipient_did=RECIPIENT_DID,
        expires_at_ms=EXPIRES_AT_MS,
        ciphertext=point + make_envelope().ciphertext[32:],
    )
    with pytest.raises(EnvelopeUnreadable):
        open_ours(envelope)


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_envelope(ephemeral=bytes(31)),
        lambda: make_envelope(ephemeral="x" * 32),  # type: ignore[arg-type]
        lambda: seal(
            make_letter(),
            recipient_did=RECIPIENT_DID,
            recipient_x25519_public_key=bytes(33),
            expires_at_ms=1,
            ephemeral_private_key=EPHEMERAL,
        ),
        lambda: seal(
            make_letter(),
            recipient_did=RECIPIENT_DID,
            recipient_x25519_public_key=bytes(RECIPIENT_X25519.public_key),
            expires_at_ms=-1,
            ephemeral_private_key=EPHEMERAL,
        ),
        lambda: open_envelope(
            make_envelope(), recipient_did=RECIPIENT_DID, recipient_x25519_private_key=bytes(16)
        ),
    ],
    ids=["short_ephemeral", "str_ephemeral", "long_public_key", "negative_expiry", "short_private"],
)
def test_impossible_arguments_are_a_local_error(call: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        call()


def test_the_largest_letter_seals_within_the_bound() -> None:
    letter = Letter.create(
        signing_key=SENDER_DEVICE_KEY,
        recipient_did=RECIPIENT_DID,
        sender_did=SENDER_DID,
        payload_type="x" * MAX_PAYLOAD_TYPE_LENGTH,
        payload=bytes(MAX_PAYLOAD_BYTES),
        created_at_ms=2**63 - 1,
    )
    envelope = make_envelope(letter)
    assert envelope.size <= MAX_ENVELOPE_BYTES
    assert open_ours(envelope) == letter
    with pytest.raises(LocalProtocolError, match="more than"):
        make_letter(payload=bytes(MAX_PAYLOAD_BYTES + 1))


def test_envelope_size_bounds() -> None:
    build = Envelope.build
    largest = build(
        recipient_did=RECIPIENT_DID, expires_at_ms=1, ciphertext=bytes(MAX_ENVELOPE_BYTES)
    )
    assert largest.size == MAX_ENVELOPE_BYTES
    with pytest.raises(EnvelopeTooLarge, match="more than 1048576") as info:
        build(
            recipient_did=RECIPIENT_DID, expires_at_ms=1, ciphertext=bytes(MAX_ENVELOPE_BYTES + 1)
        )
    assert info.value.code == "too_large"
    assert isinstance(info.value, MalformedInput)
    with pytest.raises(MalformedInput, match="too short"):
        build(recipient_did=RECIPIENT_DID, expires_at_ms=1, ciphertext=bytes(SEAL_OVERHEAD))


def test_expiry() -> None:
    envelope = make_envelope()
    assert not envelope.is_expired(EXPIRES_AT_MS - 1)
    assert envelope.is_expired(EXPIRES_AT_MS)


# --- letters --------------------------------------------------------------------------------------


def test_the_letter_signature_covers_every_field_and_the_recipient() -> None:
    letter = make_letter()
    signed = canonical_decode(letter.signed_bytes(RECIPIENT_DID))
    assert isinstance(signed, dict)
    assert signed == {
        "type": LETTER_TYPE,
        "recipient_did": RECIPIENT_DID,
        "sender_did": SENDER_DID,
        "sender_device": SENDER_DEVICE,
        "payload_type": "sync.ops",
        "payload": b"ops...",
        "created_at_ms": NOW_MS,
    }
    assert canonical_decode(letter.to_wire()) == {
        **{k: v for k, v in signed.items() if k != "recipient_did"},
        "signature": letter.signature,
    }
    tampered_values = {
        "sender_did": OTHER_DID,
        "sender_device": RECIPIENT_DEVICE,
        "payload_type": "sync.other",
        "payload": b"ops..!",
        "created_at_ms": NOW_MS + 1,
        "signature": bytes([letter.signature[0] ^ 1]) + letter.signature[1:],
    }
    for name, value in tampered_values.items():
        with pytest.raises(BadSignature):
            dataclasses.replace(letter, **{name: value}).verify(RECIPIENT_DID)


def test_a_letter_is_signed_by_its_device_key() -> None:
    letter = make_letter()
    assert letter.sender_device == SENDER_DEVICE
    # Signed by another key but claiming the sender's device: refused.
    impostor = Letter.create(
        signing_key=RECIPIENT_DEVICE_KEY,
        recipient_did=RECIPIENT_DID,
        sender_did=SENDER_DID,
        payload_type="sync.ops",
        payload=b"ops...",
        created_at_ms=NOW_MS,
    )
    with pytest.raises(BadSignature):
        dataclasses.replace(impostor, sender_device=SENDER_DEVICE).verify(RECIPIENT_DID)


@pytest.mark.parametrize(
    "payload_type", ["", "Sync.ops", "sync..ops", ".sync", "sync.", "sync ops", "x" * 65, "1sync"]
)
def test_bad_payload_types_are_refused(payload_type: str) -> None:
    with pytest.raises(MalformedInput, match="payload_type"):
        dataclasses.replace(make_letter(), payload_type=payload_type)


def test_create_refuses_a_recipient_that_is_not_a_did() -> None:
    with pytest.raises(LocalProtocolError, match="cannot write this letter"):
        make_letter(recipient_did="did:web:example.com")


# --- signed mailbox records -----------------------------------------------------------------------


def make_registration(**changes: Any) -> RelayRegistration:
    arguments: dict[str, Any] = {
        "signing_key": RECIPIENT_DEVICE_KEY,
        "recipient_did": RECIPIENT_DID,
        "relay": RELAY,
        "allowed_senders": (SENDER_DID, OTHER_DID),
        "revoked_devices": (REVOKED_DEVICE,),
        "quota_bytes": 64 * 1024 * 1024,
        "expires_at_ms": EXPIRES_AT_MS,
        "issued_at_ms": NOW_MS,
        **changes,
    }
    return RelayRegistration.create(**arguments)


def make_relay_list(**changes: Any) -> RelayList:
    arguments: dict[str, Any] = {
        "signing_key": RECIPIENT_DEVICE_KEY,
        "recipient_did": RECIPIENT_DID,
        "relays": (
            (RELAY, ("/ip4/127.0.0.1/tcp/4001",)),
            (OTHER_RELAY, ("/dns4/r.example/tcp/1",)),
        ),
        "version": 3,
        "issued_at_ms": NOW_MS,
        **changes,
    }
    return RelayList.create(**arguments)


Record = Letter | Envelope | RelayRegistration | RelayList
CODEC_RECORDS: list[Callable[[], Record]] = [
    make_letter,
    make_envelope,
    make_registration,
    make_relay_list,
]
CODEC_IDS = ["letter", "envelope", "registration", "relay_list"]


def test_registration() -> None:
    registration = make_registration(allowed_senders=(OTHER_DID, SENDER_DID, OTHER_DID))
    registration.verify()
    assert registration.device == RECIPIENT_DEVICE
    assert registration.allowed_senders == tuple(sorted({SENDER_DID, OTHER_DID}))
    assert registration.allows_sender(RECIPIENT_DID)  # the recipient's own devices, always
    assert registration.allows_sender(SENDER_DID)
    assert not registration.allows_sender(did(99))
    assert not make_registration(allowed_senders=()).allows_sender(SENDER_DID)
    assert not registration.is_expired(EXPIRES_AT_MS - 1)
    assert registration.is_expired(EXPIRES_AT_MS)
    assert canonical_decode(registration.to_wire()) == {
        "type": REGISTRATION_TYPE,
        "recipient_did": RECIPIENT_DID,
        "device": RECIPIENT_DEVICE,
        "relay": RELAY,
        "allowed_senders": sorted([SENDER_DID, OTHER_DID]),
        "revoked_devices": [REVOKED_DEVICE],
        "quota_bytes": 64 * 1024 * 1024,
        "expires_at_ms": EXPIRES_AT_MS,
        "issued_at_ms": NOW_MS,
        "signature": registration.signature,
    }


def test_registration_revoked_devices() -> None:
    default = RelayRegistration.create(
        signing_key=RECIPIENT_DEVICE_KEY,
        recipient_did=RECIPIENT_DID,
        relay=RELAY,
        quota_bytes=1,
        expires_at_ms=EXPIRES_AT_MS,
        issued_at_ms=NOW_MS,
    )
    assert default.revoked_devices == ()  # none unless named
    default.verify()
    revoked = [device(signing_key(seed)) for seed in (31, 32, 33)]
    registration = make_registration(revoked_devices=(revoked[2], revoked[0], revoked[2], *revoked))
    registration.verify()
    assert registration.revoked_devices == tuple(sorted(revoked))  # sorted, unique
    assert RelayRegistration.from_wire(registration.to_wire()) == registration
    wire = canonical_decode(registration.to_wire())
    assert isinstance(wire, dict)
    assert wire["revoked_devices"] == sorted(revoked)
    # The signing device may name itself (a node registering the list it holds); the list is
    # what the signer says, the relay decides what it means.
    make_registration(revoked_devices=(RECIPIENT_DEVICE,)).verify()


@pytest.mark.parametrize(
    "changed",
    [
        (),  # a revoked device strips itself out
        (REVOKED_DEVICE, OTHER_RELAY),  # or one is added
        (OTHER_RELAY,),  # or replaced
    ],
    ids=["removed", "added", "replaced"],
)
def test_the_signature_covers_the_revoked_devices(changed: tuple[str, ...]) -> None:
    registration = make_registration()
    assert registration.revoked_devices == (REVOKED_DEVICE,)
    changed = tuple(sorted(changed))
    tampered = dataclasses.replace(registration, revoked_devices=changed)
    with pytest.raises(BadSignature):
        tampered.verify()
    # And on the wire: the same change under the old signature decodes, and does not verify.
    fields = canonical_decode(registration.to_wire())
    assert isinstance(fields, dict)
    decoded = RelayRegistration.from_wire(
        canonical_encode({**fields, "revoked_devices": list(changed)})
    )
    assert decoded == tampered
    with pytest.raises(BadSignature):
        decoded.verify()


def test_relay_list() -> None:
    relay_list = make_relay_list()
    relay_list.verify()
    assert relay_list.device == RECIPIENT_DEVICE
    assert relay_list.relay_peer_ids == (RELAY, OTHER_RELAY)
    assert canonical_decode(relay_list.to_wire()) == {
        "type": RELAY_LIST_TYPE,
        "recipient_did": RECIPIENT_DID,
        "relays": [[RELAY, ["/ip4/127.0.0.1/tcp/4001"]], [OTHER_RELAY, ["/dns4/r.example/tcp/1"]]],
        "version": 3,
        "issued_at_ms": NOW_MS,
        "device": RECIPIENT_DEVICE,
        "signature": relay_list.signature,
    }
    make_relay_list(relays=()).verify()  # every relay withdrawn


TAMPERED: dict[str, object] = {
    "recipient_did": OTHER_DID,
    "relay": OTHER_RELAY,
    "allowed_senders": (SENDER_DID,),
    "revoked_devices": (),
    "quota_bytes": 1,
    "expires_at_ms": EXPIRES_AT_MS + 1,
    "issued_at_ms": NOW_MS + 1,
    "relays": ((RELAY, ("/ip4/127.0.0.1/tcp/4002",)),),
    "version": 4,
    "device": SENDER_DEVICE,
    "open_until_ms": EXPIRES_AT_MS,
}


def test_an_open_registration_lets_anyone_deposit_until_it_closes() -> None:
    closed = make_registration(allowed_senders=())
    opened = make_registration(allowed_senders=(), open_until_ms=NOW_MS + 1000)
    opened.verify()
    assert not closed.allows_sender(SENDER_DID, NOW_MS)
    assert opened.allows_sender(SENDER_DID, NOW_MS + 999)
    assert not opened.allows_sender(SENDER_DID, NOW_MS + 1000)
    assert not opened.allows_sender(SENDER_DID)  # no time given: only who is listed
    assert RelayRegistration.from_wire(opened.to_wire()) == opened
    # Without it, the record's bytes are what they were before the field existed.
    assert "open_until_ms" not in canonical_decode(closed.to_wire())
    assert canonical_decode(opened.to_wire())["open_until_ms"] == NOW_MS + 1000
    for bad in (NOW_MS, EXPIRES_AT_MS + 1, -1):
        with pytest.raises(LocalProtocolError):
            make_registration(open_until_ms=bad)


@pytest.mark.parametrize("make", [make_registration, make_relay_list], ids=CODEC_IDS[2:])
def test_tampering_with_any_record_field_breaks_the_signature(
    make: Callable[[], RelayRegistration | RelayList],
) -> None:
    record = make()
    for field in dataclasses.fields(record):
        value = TAMPERED.get(field.name, bytes([record.signature[0] ^ 1]) + record.signature[1:])
        tampered = dataclasses.replace(record, **{field.name: value})
        assert tampered != record
        with pytest.raises(BadSignature):
            tampered.verify()


# --- codecs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", CODEC_RECORDS, ids=CODEC_IDS)
def test_wire_round_trip_truncations_and_trailing_bytes(make: Callable[[], Record]) -> None:
    record = make()
    wire = record.to_wire()
    assert type(record).from_wire(wire) == record
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            type(record).from_wire(wire[:length])
    for trailing in (b"\x00", b"\xf6", wire):
        with pytest.raises(MalformedInput, match="trailing"):
            type(record).from_wire(wire + trailing)


@pytest.mark.parametrize("make", CODEC_RECORDS, ids=CODEC_IDS)
def test_missing_extra_fields_and_other_types_are_refused(make: Callable[[], Record]) -> None:
    record = make()
    fields = canonical_decode(record.to_wire())
    assert isinstance(fields, dict)
    for name in fields:
        with pytest.raises(MalformedInput):
            type(record).from_wire(canonical_encode({k: v for k, v in fields.items() if k != name}))
    with pytest.raises(MalformedInput, match="unexpected"):
        type(record).from_wire(canonical_encode({**fields, "extra": 1}))
    for other in CODEC_RECORDS:
        if other is not make:
            with pytest.raises(MalformedInput, match="record type"):
                type(record).from_wire(other().to_wire())


SHA256_PEER_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
WRONG_FIELDS: list[tuple[Callable[[], Record], str, object, type[MalformedInput], str]] = [
    (make_letter, "sender_did", "did:web:x", InvalidDid, "method is 'web'"),
    (make_letter, "sender_device", SHA256_PEER_ID, InvalidPeerId, "sender_device"),
    (make_letter, "sender_device", 5, MalformedInput, "sender_device is a int"),
    (make_letter, "payload_type", "Sync", MalformedInput, "not a dotted name"),
    (make_letter, "payload", "text", MalformedInput, "payload is a str, expected bytes"),
    (make_letter, "payload", bytes(MAX_PAYLOAD_BYTES + 1), EnvelopeTooLarge, "more than"),
    (make_letter, "created_at_ms", -1, MalformedInput, "created_at_ms is -1"),
    (make_letter, "signature", bytes(63), MalformedInput, "63 bytes, expected 64"),
    (make_envelope, "id", "bafy", MalformedInput, "not a content id"),
    (make_envelope, "id", make_registration().relay, MalformedInput, "not a content id"),
    (make_envelope, "recipient_did", RECIPIENT_DEVICE, InvalidDid, "not a DID"),
    (make_envelope, "expires_at_ms", True, MalformedInput, "expires_at_ms is a bool"),
    (make_envelope, "ciphertext", [1], MalformedInput, "ciphertext is a list"),
    (make_registration, "device", "12D3KooW", InvalidPeerId, "device is not a device peer id"),
    (make_registration, "relay", RECIPIENT_DID, InvalidPeerId, "relay"),
    (make_registration, "allowed_senders", "did", MalformedInput, "allowed_senders is a str"),
    (
        make_registration,
        "allowed_senders",
        sorted([OTHER_DID, SENDER_DID], reverse=True),
        MalformedInput,
        "asc",
    ),
    (make_registration, "allowed_senders", [SENDER_DID] * 2, MalformedInput, "ascending"),
    (make_registration, "allowed_senders", [RELAY], InvalidDid, "not a DID"),
    (make_registration, "revoked_devices", RELAY, MalformedInput, "revoked_devices is a str"),
    (make_registration, "revoked_devices", None, MalformedInput, "revoked_devices is a NoneType"),
    (
        make_registration,
        "revoked_devices",
        sorted([RELAY, OTHER_RELAY], reverse=True),
        MalformedInput,
        "revoked_devices is not strictly ascending",
    ),
    (
        make_registration,
        "revoked_devices",
        [REVOKED_DEVICE] * 2,
        MalformedInput,
        "revoked_devices is not strictly ascending",
    ),
    (make_registration, "revoked_devices", [SENDER_DID], InvalidPeerId, "revoked_devices"),
    (make_registration, "revoked_devices", [SHA256_PEER_ID], InvalidPeerId, "revoked_devices"),
    (make_registration, "revoked_devices", [5], MalformedInput, "revoked_devices is a int"),
    (make_registration, "revoked_devices", [[RELAY]], MalformedInput, "revoked_devices is a list"),
    (
        make_registration,
        "revoked_devices",
        [device(signing_key(seed)) for seed in range(MAX_REVOKED_DEVICES + 1)],
        MalformedInput,
        "revoked_devices has more than 256",
    ),
    (make_registration, "quota_bytes", 0, MalformedInput, "quota_bytes is 0"),
    (make_registration, "expires_at_ms", NOW_MS, MalformedInput, "not after issued_at_ms"),
    (make_relay_list, "relays", {}, MalformedInput, "relays is a dict"),
    (make_relay_list, "relays", [RELAY], MalformedInput, "a pair"),
    (make_relay_list, "relays", [[RELAY, ["/a"], 1]], MalformedInput, "a pair"),
    (make_relay_list, "relays", [[RELAY, []]], MalformedInput, "expected 1 to 8"),
    (make_relay_list, "relays", [[RELAY, "/ip4/1.2.3.4"]], MalformedInput, "addrs is a str"),
    (make_relay_list, "relays", [[RELAY, ["ip4"]]], MalformedInput, "not a multiaddr"),
    (make_relay_list, "relays", [[RECIPIENT_DID, ["/a"]]], InvalidPeerId, "a relay"),
    (make_relay_list, "relays", [[RELAY, ["/a"]], [RELAY, ["/b"]]], MalformedInput, "twice"),
    (make_relay_list, "version", -1, MalformedInput, "version is -1"),
]


@pytest.mark.parametrize(("make", "name", "value", "error", "match"), WRONG_FIELDS)
def test_wrong_field_values_are_refused(
    make: Callable[[], Record], name: str, value: object, error: type[MalformedInput], match: str
) -> None:
    record = make()
    fields = canonical_decode(record.to_wire())
    assert isinstance(fields, dict)
    with pytest.raises(error, match=match):
        type(record).from_wire(canonical_encode({**fields, name: value}))


@pytest.mark.parametrize(
    ("revoked", "match"),
    [
        ((RECIPIENT_DID,), "revoked_devices is not a device peer id"),
        (("12D3KooW",), "revoked_devices is not a device peer id"),
        ((SHA256_PEER_ID,), "revoked_devices is not a device peer id"),
        ((b"peer",), "revoked_devices is a bytes, expected str"),
        ((RELAY, 7), "cannot make this registration"),  # cannot even be sorted
    ],
)
def test_create_refuses_revoked_devices_that_are_not_peer_ids(
    revoked: tuple[object, ...], match: str
) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        make_registration(revoked_devices=revoked)


def test_record_list_bounds() -> None:
    senders = tuple(did(seed) for seed in range(100, 100 + MAX_ALLOWED_SENDERS + 1))
    make_registration(allowed_senders=senders[:-1]).verify()
    with pytest.raises(LocalProtocolError, match="more than 256"):
        make_registration(allowed_senders=senders)
    revoked = tuple(device(signing_key(seed)) for seed in range(100, 100 + MAX_REVOKED_DEVICES + 1))
    largest = make_registration(allowed_senders=senders[:-1], revoked_devices=revoked[:-1])
    largest.verify()
    assert RelayRegistration.from_wire(largest.to_wire()) == largest
    with pytest.raises(LocalProtocolError, match="revoked_devices has more than 256"):
        make_registration(revoked_devices=revoked)
    # Duplicates go before the bound is checked: 256 distinct named twice over still fit.
    assert make_registration(revoked_devices=revoked[:-1] * 2).revoked_devices == tuple(
        sorted(revoked[:-1])
    )
    relays = tuple((device(signing_key(seed)), ("/a",) * MAX_ADDRS) for seed in range(17 + 30))
    make_relay_list(relays=relays[:MAX_RELAYS]).verify()
    with pytest.raises(LocalProtocolError, match="more than 16"):
        make_relay_list(relays=relays[: MAX_RELAYS + 1])


seeds = st.integers(min_value=1, max_value=2**64)
dids = seeds.map(did)
devices = seeds.map(lambda seed: device(signing_key(seed)))
uints = st.integers(min_value=0, max_value=2**63 - 1)
addrs = st.lists(st.from_regex(r"/[a-z0-9/.]{1,40}", fullmatch=True), min_size=1, max_size=3)
letters = st.builds(
    lambda key, recipient, sender, kind, payload, at: Letter.create(
        signing_key=signing_key(key),
        recipient_did=recipient,
        sender_did=sender,
        payload_type=kind,
        payload=payload,
        created_at_ms=at,
    ),
    seeds,
    dids,
    dids,
    st.from_regex(r"[a-z][a-z0-9_]{0,10}(\.[a-z][a-z0-9_]{0,10}){0,3}", fullmatch=True),
    st.binary(max_size=200),
    uints,
)
records = st.one_of(
    letters,
    st.builds(
        lambda recipient, at, ciphertext: Envelope.build(
            recipient_did=recipient, expires_at_ms=at, ciphertext=ciphertext
        ),
        dids,
        uints,
        st.binary(min_size=SEAL_OVERHEAD + 1, max_size=200),
    ),
    st.builds(
        lambda key, recipient, relay, senders, revoked, quota, at, ttl: RelayRegistration.create(
            signing_key=signing_key(key),
            recipient_did=recipient,
            relay=relay,
            allowed_senders=tuple(senders),
            revoked_devices=tuple(revoked),
            quota_bytes=quota,
            expires_at_ms=at + ttl,
            issued_at_ms=at,
        ),
        seeds,
        dids,
        devices,
        st.lists(dids, max_size=4),
        st.lists(devices, max_size=4),
        st.integers(min_value=1, max_value=2**63 - 1),
        st.integers(min_value=0, max_value=2**62 - 1),
        st.integers(min_value=1, max_value=2**62 - 1),
    ),
    st.builds(
        lambda key, recipient, relays, version, at: RelayList.create(
            signing_key=signing_key(key),
            recipient_did=recipient,
            relays=tuple((relay, tuple(addresses)) for relay, addresses in relays.items()),
            version=version,
            issued_at_ms=at,
        ),
        seeds,
        dids,
        st.dictionaries(devices, addrs, max_size=3),
        uints,
        uints,
    ),
)


@settings(max_examples=60)
@given(records)
def test_record_round_trip(record: Record) -> None:
    wire = record.to_wire()
    assert type(record).from_wire(wire) == record
    assert canonical_encode(canonical_decode(wire)) == wire


@settings(max_examples=40)
@given(
    sender=seeds,
    recipient=seeds,
    payload=st.binary(max_size=300),
    recipient_private=st.binary(min_size=32, max_size=32),
    ephemeral=st.binary(min_size=32, max_size=32),
    expires_at_ms=uints,
)
def test_seal_open_round_trip(
    sender: int,
    recipient: int,
    payload: bytes,
    recipient_private: bytes,
    ephemeral: bytes,
    expires_at_ms: int,
) -> None:
    private_key = nacl.public.PrivateKey(recipient_private)
    letter = Letter.create(
        signing_key=signing_key(sender),
        recipient_did=did(recipient),
        sender_did=did(sender),
        payload_type="sync.ops",
        payload=payload,
        created_at_ms=NOW_MS,
    )
    envelope = seal(
        letter,
        recipient_did=did(recipient),
        recipient_x25519_public_key=bytes(private_key.public_key),
        expires_at_ms=expires_at_ms,
        ephemeral_private_key=ephemeral,
    )
    assert Envelope.from_wire(envelope.to_wire()) == envelope
    opened = open_envelope(
        envelope, recipient_did=did(recipient), recipient_x25519_private_key=bytes(private_key)
    )
    assert opened == letter


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_an_envelope_or_malformed_input(data: bytes) -> None:
    try:
        envelope = Envelope.from_wire(data)
    except MalformedInput:
        return
    assert envelope.to_wire() == data
