import dataclasses
from collections.abc import Callable
from typing import Any

import cbor2
import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.identity_records import (
    DEVICE_CERTIFICATE_TYPE,
    ENCRYPTION_KEY_BINDING_TYPE,
    BadSignature,
    DeviceCertificate,
    EncryptionKeyBinding,
    MalformedInput,
)
from protocols.peer_id import peer_id_from_ed25519_public_key

IDENTITY_KEY = nacl.signing.SigningKey(bytes(32))
DID = did_from_ed25519_public_key(bytes(IDENTITY_KEY.verify_key))
OTHER_DID = did_from_ed25519_public_key(bytes(nacl.signing.SigningKey(b"\x09" * 32).verify_key))
ROTATED_IDENTITY_KEY = nacl.signing.SigningKey(b"\x0a" * 32)
FIRST_DEVICE_KEY = nacl.signing.SigningKey(b"\x01" * 32)
FIRST_DEVICE = peer_id_from_ed25519_public_key(bytes(FIRST_DEVICE_KEY.verify_key))
SECOND_DEVICE_KEY = nacl.signing.SigningKey(b"\x02" * 32)
THIRD_DEVICE = peer_id_from_ed25519_public_key(
    bytes(nacl.signing.SigningKey(b"\x04" * 32).verify_key)
)
ENCRYPTION_PUBLIC_KEY = bytes(nacl.public.PrivateKey(b"\x03" * 32).public_key)
ISSUED_AT_MS = 1_700_000_000_000

Record = EncryptionKeyBinding | DeviceCertificate


def make_binding(signing_key: nacl.signing.SigningKey = IDENTITY_KEY) -> EncryptionKeyBinding:
    return EncryptionKeyBinding.create(
        signing_key=signing_key,
        did=DID,
        encryption_public_key=ENCRYPTION_PUBLIC_KEY,
        key_version=1,
        issued_at_ms=ISSUED_AT_MS,
    )


def make_first_device_certificate() -> DeviceCertificate:
    return DeviceCertificate.create(
        signing_key=IDENTITY_KEY,
        did=DID,
        device_public_key=bytes(FIRST_DEVICE_KEY.verify_key),
        approver=DID,
        issued_at_ms=ISSUED_AT_MS,
    )


def make_second_device_certificate() -> DeviceCertificate:
    return DeviceCertificate.create(
        signing_key=FIRST_DEVICE_KEY,
        did=DID,
        device_public_key=bytes(SECOND_DEVICE_KEY.verify_key),
        approver=FIRST_DEVICE,
        issued_at_ms=ISSUED_AT_MS + 1,
    )


# (make a record, the public key it verifies under)
RECORDS: list[tuple[Callable[[], Record], bytes]] = [
    (make_binding, bytes(IDENTITY_KEY.verify_key)),
    (make_first_device_certificate, bytes(IDENTITY_KEY.verify_key)),
    (make_second_device_certificate, bytes(FIRST_DEVICE_KEY.verify_key)),
]
RECORD_IDS = ["binding", "first_device", "second_device"]


def wire_fields(record: Record) -> dict[str, Any]:
    fields = canonical_decode(record.to_wire())
    assert isinstance(fields, dict)
    return fields


# --- signing and verifying ------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_created_record_verifies_under_its_signer(
    make: Callable[[], Record], public_key: bytes
) -> None:
    make().verify(public_key)


def test_wrong_key_does_not_verify() -> None:
    with pytest.raises(BadSignature, match="does not verify") as info:
        make_binding().verify(bytes(SECOND_DEVICE_KEY.verify_key))
    assert info.value.code == "bad_signature"
    assert isinstance(info.value, RemoteProtocolError)


def test_binding_by_a_rotated_identity_key_verifies_under_that_key() -> None:
    # After a rotation the identity key is not the DID's inception key; the caller passes it.
    binding = make_binding(ROTATED_IDENTITY_KEY)
    binding.verify(bytes(ROTATED_IDENTITY_KEY.verify_key))
    with pytest.raises(BadSignature):
        binding.verify(bytes(IDENTITY_KEY.verify_key))


TAMPERED_VALUES: dict[str, object] = {
    "did": OTHER_DID,
    "encryption_public_key": bytes(32),
    "device_public_key": bytes(nacl.signing.SigningKey(b"\x05" * 32).verify_key),
    "key_version": 2,
    "issued_at_ms": ISSUED_AT_MS + 2,
}


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_tampering_with_any_field_breaks_the_signature(
    make: Callable[[], Record], public_key: bytes
) -> None:
    record = make()
    for name in [field.name for field in dataclasses.fields(record)]:
        if name == "signature":
            value: object = bytes([record.signature[0] ^ 1]) + record.signature[1:]
        elif isinstance(record, DeviceCertificate) and name == "approver":
            value = DID if record.approver != DID else THIRD_DEVICE
        else:
            value = TAMPERED_VALUES[name]
        changes: dict[str, Any] = {name: value}
        if name == "did" and isinstance(record, DeviceCertificate) and record.approved_by_identity:
            # An identity-approved certificate names its DID twice; change both.
            changes["approver"] = value
        tampered = dataclasses.replace(record, **changes)
        assert tampered != record
        with pytest.raises(BadSignature):
            tampered.verify(public_key)


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_changing_any_wire_byte_is_refused_or_breaks_the_signature(
    make: Callable[[], Record], public_key: bytes
) -> None:
    record = make()
    wire = record.to_wire()
    for position in range(len(wire)):
        for mask in (0x01, 0x80, 0xFF):
            changed = wire[:position] + bytes([wire[position] ^ mask]) + wire[position + 1 :]
            try:
                decoded = type(record).from_wire(changed)
            except MalformedInput:
                continue
            assert decoded != record
            with pytest.raises(BadSignature):
                decoded.verify(public_key)


def test_signature_for_one_record_type_does_not_verify_as_the_other() -> None:
    binding = make_binding()
    certificate = make_first_device_certificate()
    # The binding's own fields, signed under the certificate's type tag.
    fields = canonical_decode(binding.signed_bytes())
    assert isinstance(fields, dict)
    assert fields["type"] == ENCRYPTION_KEY_BINDING_TYPE
    relabelled = canonical_encode({**fields, "type": DEVICE_CERTIFICATE_TYPE})
    forged = dataclasses.replace(binding, signature=IDENTITY_KEY.sign(relabelled).signature)
    with pytest.raises(BadSignature):
        forged.verify(bytes(IDENTITY_KEY.verify_key))
    # A certificate's signature, carried over to a binding by the same key.
    carried = dataclasses.replace(binding, signature=certificate.signature)
    with pytest.raises(BadSignature):
        carried.verify(bytes(IDENTITY_KEY.verify_key))
    # And the other way round.
    carried_back = dataclasses.replace(certificate, signature=binding.signature)
    with pytest.raises(BadSignature):
        carried_back.verify(bytes(IDENTITY_KEY.verify_key))


def test_wire_of_one_type_is_refused_as_the_other() -> None:
    with pytest.raises(MalformedInput, match="record type"):
        DeviceCertificate.from_wire(make_binding().to_wire())
    with pytest.raises(MalformedInput, match="record type"):
        EncryptionKeyBinding.from_wire(make_first_device_certificate().to_wire())


def test_verify_with_a_key_of_the_wrong_length_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        make_binding().verify(bytes(31))


# --- device certificates --------------------------------------------------------------------------


def test_first_device_is_approved_by_the_identity() -> None:
    certificate = make_first_device_certificate()
    assert certificate.approved_by_identity
    assert certificate.device_peer_id == FIRST_DEVICE


def test_second_device_is_approved_by_the_first() -> None:
    certificate = make_second_device_certificate()
    assert not certificate.approved_by_identity
    assert certificate.approver == FIRST_DEVICE
    assert certificate.device_peer_id == peer_id_from_ed25519_public_key(
        bytes(SECOND_DEVICE_KEY.verify_key)
    )


def test_device_approval_refuses_a_key_other_than_the_approvers() -> None:
    certificate = make_second_device_certificate()
    with pytest.raises(BadSignature, match="not the approving device's key"):
        certificate.verify(bytes(IDENTITY_KEY.verify_key))


def test_creating_with_a_key_other_than_the_approving_devices_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="approving device"):
        DeviceCertificate.create(
            signing_key=IDENTITY_KEY,
            did=DID,
            device_public_key=bytes(SECOND_DEVICE_KEY.verify_key),
            approver=FIRST_DEVICE,
            issued_at_ms=ISSUED_AT_MS,
        )


@pytest.mark.parametrize(
    ("approver", "message"),
    [
        (OTHER_DID, "neither the certificate's DID nor a device peer id"),
        ("", "neither the certificate's DID nor a device peer id"),
        ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "SHA-256"),
        (peer_id_from_ed25519_public_key(bytes(SECOND_DEVICE_KEY.verify_key)), "its own"),
    ],
)
def test_approver_must_be_the_did_or_another_device(approver: str, message: str) -> None:
    certificate = make_second_device_certificate()
    with pytest.raises(MalformedInput, match=message):
        dataclasses.replace(certificate, approver=approver)
    fields = wire_fields(certificate)
    with pytest.raises(MalformedInput, match=message):
        DeviceCertificate.from_wire(canonical_encode({**fields, "approver": approver}))


# --- codec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_wire_round_trip(make: Callable[[], Record], public_key: bytes) -> None:
    record = make()
    decoded = type(record).from_wire(record.to_wire())
    assert decoded == record
    assert decoded.to_wire() == record.to_wire()
    decoded.verify(public_key)


def test_wire_is_the_signed_map_plus_the_signature() -> None:
    binding = make_binding()
    assert wire_fields(binding) == {
        "type": ENCRYPTION_KEY_BINDING_TYPE,
        "did": DID,
        "encryption_public_key": ENCRYPTION_PUBLIC_KEY,
        "key_version": 1,
        "issued_at_ms": ISSUED_AT_MS,
        "signature": binding.signature,
    }
    signed = canonical_decode(binding.signed_bytes())
    assert signed == {k: v for k, v in wire_fields(binding).items() if k != "signature"}


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_every_truncation_is_refused(make: Callable[[], Record], public_key: bytes) -> None:
    record = make()
    wire = record.to_wire()
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            type(record).from_wire(wire[:length])


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
@pytest.mark.parametrize("trailing", [b"\x00", b"\xf6", b"\xff\xff"])
def test_trailing_bytes_are_refused(
    make: Callable[[], Record], public_key: bytes, trailing: bytes
) -> None:
    record = make()
    with pytest.raises(MalformedInput, match="trailing bytes"):
        type(record).from_wire(record.to_wire() + trailing)


def _wrong_field_values(record: Record) -> list[tuple[str, object, str]]:
    """(field, a wrong value for it, what the error says) for every field of `record`."""
    cases: list[tuple[str, object, str]] = [
        ("did", 1, "did is a int, expected str"),
        ("did", b"did", "expected str"),
        ("did", "did:web:example.com", "method is 'web'"),
        ("did", "", "not a DID"),
        ("issued_at_ms", -1, "issued_at_ms is -1"),
        ("issued_at_ms", 2**63, "2\\*\\*63 - 1"),
        ("issued_at_ms", True, "issued_at_ms is a bool"),
        ("issued_at_ms", "1", "issued_at_ms is a str"),
        ("issued_at_ms", None, "issued_at_ms is a NoneType"),
        ("signature", bytes(63), "signature is 63 bytes, expected 64"),
        ("signature", bytes(65), "signature is 65 bytes, expected 64"),
        ("signature", "sig", "signature is a str"),
        ("signature", [1], "signature is a list"),
    ]
    if isinstance(record, EncryptionKeyBinding):
        cases += [
            ("encryption_public_key", bytes(31), "31 bytes, expected 32"),
            ("encryption_public_key", bytes(33), "33 bytes, expected 32"),
            ("encryption_public_key", b"", "0 bytes, expected 32"),
            ("encryption_public_key", "key", "expected bytes"),
            ("key_version", -1, "key_version is -1"),
            ("key_version", False, "key_version is a bool"),
            ("key_version", b"\x01", "key_version is a bytes"),
        ]
    else:
        cases += [
            ("device_public_key", bytes(31), "31 bytes, expected 32"),
            ("device_public_key", bytes(64), "64 bytes, expected 32"),
            ("device_public_key", {}, "expected bytes"),
            ("approver", 7, "approver is a int"),
        ]
    return cases


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_wrong_field_values_are_refused_on_the_wire(
    make: Callable[[], Record], public_key: bytes
) -> None:
    record = make()
    fields = wire_fields(record)
    for name, value, message in _wrong_field_values(record):
        with pytest.raises(MalformedInput, match=message):
            type(record).from_wire(canonical_encode({**fields, name: value}))


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_wrong_field_values_are_refused_on_construction(
    make: Callable[[], Record], public_key: bytes
) -> None:
    record = make()
    for name, value, message in _wrong_field_values(record):
        changes: dict[str, Any] = {name: value}
        with pytest.raises(MalformedInput, match=message):
            dataclasses.replace(record, **changes)


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
def test_missing_and_extra_fields_are_refused(
    make: Callable[[], Record], public_key: bytes
) -> None:
    record = make()
    fields = wire_fields(record)
    for name in fields:
        if name == "type":
            continue
        without = {key: value for key, value in fields.items() if key != name}
        with pytest.raises(MalformedInput, match=f"missing \\['{name}'\\]"):
            type(record).from_wire(canonical_encode(without))
    with pytest.raises(MalformedInput, match="unexpected \\['extra'\\]"):
        type(record).from_wire(canonical_encode({**fields, "extra": 1}))


@pytest.mark.parametrize(("make", "public_key"), RECORDS, ids=RECORD_IDS)
@pytest.mark.parametrize("type_tag", [None, "", 1, "vivim.identity.other.v1", "v1"])
def test_wrong_or_missing_type_tag_is_refused(
    make: Callable[[], Record], public_key: bytes, type_tag: object
) -> None:
    record = make()
    fields = wire_fields(record)
    if type_tag is None:
        del fields["type"]
    else:
        fields["type"] = type_tag
    with pytest.raises(MalformedInput, match="record type"):
        type(record).from_wire(canonical_encode(fields))


@pytest.mark.parametrize("value", [[], 1, "record", b"record", None])
def test_a_wire_value_that_is_not_a_map_is_refused(value: object) -> None:
    with pytest.raises(MalformedInput, match="expected a map"):
        EncryptionKeyBinding.from_wire(canonical_encode(value))


def test_non_canonical_wire_is_refused() -> None:
    fields = wire_fields(make_binding())
    # The same map with its keys in reverse order: valid CBOR, not canonical.
    reordered = cbor2.dumps(dict(reversed(fields.items())))
    assert cbor2.loads(reordered) == fields
    with pytest.raises(MalformedInput, match="canonical"):
        EncryptionKeyBinding.from_wire(reordered)


# --- properties -----------------------------------------------------------------------------------

seeds = st.binary(min_size=32, max_size=32)
uints = st.integers(min_value=0, max_value=2**63 - 1)


@given(seeds, st.binary(min_size=32, max_size=32), uints, uints)
def test_binding_round_trip(
    seed: bytes, encryption_public_key: bytes, key_version: int, issued_at_ms: int
) -> None:
    signing_key = nacl.signing.SigningKey(seed)
    binding = EncryptionKeyBinding.create(
        signing_key=signing_key,
        did=did_from_ed25519_public_key(bytes(signing_key.verify_key)),
        encryption_public_key=encryption_public_key,
        key_version=key_version,
        issued_at_ms=issued_at_ms,
    )
    decoded = EncryptionKeyBinding.from_wire(binding.to_wire())
    assert decoded == binding
    decoded.verify(bytes(signing_key.verify_key))


@given(seeds, seeds, st.booleans(), uints)
def test_device_certificate_round_trip(
    identity_seed: bytes, device_seed: bytes, by_identity: bool, issued_at_ms: int
) -> None:
    identity_key = nacl.signing.SigningKey(identity_seed)
    device_public_key = bytes(nacl.signing.SigningKey(device_seed).verify_key)
    did = did_from_ed25519_public_key(bytes(identity_key.verify_key))
    signing_key = identity_key if by_identity else FIRST_DEVICE_KEY
    if not by_identity and device_public_key == bytes(FIRST_DEVICE_KEY.verify_key):
        return
    certificate = DeviceCertificate.create(
        signing_key=signing_key,
        did=did,
        device_public_key=device_public_key,
        approver=did if by_identity else FIRST_DEVICE,
        issued_at_ms=issued_at_ms,
    )
    decoded = DeviceCertificate.from_wire(certificate.to_wire())
    assert decoded == certificate
    assert decoded.approved_by_identity is by_identity
    decoded.verify(bytes(signing_key.verify_key))


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_malformed_input(data: bytes) -> None:
    for record_type in (EncryptionKeyBinding, DeviceCertificate):
        try:
            record = record_type.from_wire(data)
        except MalformedInput:
            continue
        assert record.to_wire() == data
