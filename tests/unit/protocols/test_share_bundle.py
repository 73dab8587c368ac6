"""ShareBundle: wire form, bounds, and open_bundle's checks (pure, no database)."""

from dataclasses import replace

import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id_of_bytes
from protocols.did import did_from_ed25519_public_key
from protocols.errors import MalformedInput
from protocols.identity_records import DeviceCertificate
from protocols.share_bundle import (
    MAX_BUNDLE_BYTES,
    MAX_CHAIN_LENGTH,
    MAX_CIPHERTEXT_BYTES,
    BundleRefused,
    KeyKind,
    ShareBundle,
    acu_record,
    open_bundle,
)
from protocols.share_crypto import (
    KeyContext,
    encrypt_content,
    wrap_key,
    wrap_with_circle_key,
)
from protocols.sharing import CircleKeyVersion, SharingGrant, TargetKind, circle_id

T0 = 1_700_000_000_000


class Person:
    def __init__(self, seed: int) -> None:
        self.identity = nacl.signing.SigningKey(bytes([seed]) * 32)
        self.did = did_from_ed25519_public_key(bytes(self.identity.verify_key))
        self.device = nacl.signing.SigningKey(bytes([seed + 50]) * 32)
        self.certificate = DeviceCertificate.create(
            signing_key=self.identity,
            did=self.did,
            device_public_key=bytes(self.device.verify_key),
            approver=self.did,
            issued_at_ms=T0 - 1,
        )
        self.x25519 = nacl.public.PrivateKey(bytes([seed + 100]) * 32)


ALICE, BOB, CAROL = Person(1), Person(2), Person(3)
RECORD = acu_record(author=ALICE.did, content="How? Like this.", acu_type="qa", source_time_ms=T0)
ACU_ID = content_id_of_bytes(RECORD)
CONTENT_KEY = bytes([9]) * 32


def direct_bundle(
    recipient: Person = BOB, *, kind: TargetKind = TargetKind.DID, record: bytes = RECORD
) -> ShareBundle:
    grant = SharingGrant.create(
        signing_key=ALICE.device,
        grantor_did=ALICE.did,
        acu_id=content_id_of_bytes(record),
        target_kind=kind,
        target=recipient.did if kind is TargetKind.DID else None,
        issued_at_ms=T0,
    )
    wrapped = wrap_key(
        CONTENT_KEY,
        context=KeyContext.content(acu_id=grant.acu_id, grant_id=grant.id),
        recipient_x25519_public_key=bytes(recipient.x25519.public_key),
        ephemeral_private_key=bytes([5]) * 32,
    )
    return ShareBundle(
        grant=grant.to_wire(),
        ciphertext=encrypt_content(CONTENT_KEY, grant.acu_id, record),
        key_kind=KeyKind.DIRECT,
        wrapped_key=wrapped.to_wire(),
        certificate=ALICE.certificate.to_wire(),
    )


def circle_bundle(
    members: tuple[Person, ...] = (BOB, CAROL), recipient: Person = BOB
) -> ShareBundle:
    circle = circle_id(ALICE.did, bytes(16))
    version = CircleKeyVersion.create(
        signing_key=ALICE.device,
        circle_id=circle,
        owner_did=ALICE.did,
        version=2,
        members=frozenset(member.did for member in members),
        issued_at_ms=T0,
    )
    circle_key = bytes([7]) * 32
    grant = SharingGrant.create(
        signing_key=ALICE.device,
        grantor_did=ALICE.did,
        acu_id=ACU_ID,
        target_kind=TargetKind.CIRCLE,
        target=circle,
        issued_at_ms=T0,
    )
    member_key = wrap_key(
        circle_key,
        context=KeyContext.circle(circle_id=circle, version=2),
        recipient_x25519_public_key=bytes(recipient.x25519.public_key),
        ephemeral_private_key=bytes([6]) * 32,
    )
    return ShareBundle(
        grant=grant.to_wire(),
        ciphertext=encrypt_content(CONTENT_KEY, ACU_ID, RECORD),
        key_kind=KeyKind.CIRCLE,
        circle_version=version.to_wire(),
        circle_key=member_key.to_wire(),
        content_key=wrap_with_circle_key(
            CONTENT_KEY, circle_key, acu_id=ACU_ID, circle_id=circle, circle_key_version=2
        ).to_wire(),
        certificate=ALICE.certificate.to_wire(),
    )


def open_as(bundle: ShareBundle, person: Person, now_ms: int = T0 + 1) -> bytes:
    return open_bundle(
        bundle,
        recipient_did=person.did,
        recipient_x25519_private_key=bytes(person.x25519),
        now_ms=now_ms,
    ).record


# --- wire form ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", [direct_bundle(), circle_bundle()])
def test_round_trip(bundle: ShareBundle) -> None:
    wire = bundle.to_wire()
    assert ShareBundle.from_wire(wire) == bundle
    assert canonical_encode(canonical_decode(wire)) == wire
    assert bundle.id == content_id_of_bytes(wire)


def test_trailing_bytes_and_every_truncation_are_refused() -> None:
    wire = direct_bundle().to_wire()
    with pytest.raises(MalformedInput):
        ShareBundle.from_wire(wire + b"\x00")
    for end in range(0, len(wire), 37):
        with pytest.raises(MalformedInput):
            ShareBundle.from_wire(wire[:end])


@pytest.mark.parametrize(
    "change",
    [
        {"key_kind": "other"},
        {"wrapped_key": None},
        {"circle_version": b"x"},
        {"grant": "text"},
        {"chain": [b"c"] * (MAX_CHAIN_LENGTH + 1)},
        {"extra": 1},
        {"type": "vivim.sharing.grant.v1"},
    ],
)
def test_malformed_fields_are_refused(change: dict[str, object]) -> None:
    fields = canonical_decode(direct_bundle().to_wire())
    assert isinstance(fields, dict)
    with pytest.raises(MalformedInput):
        ShareBundle.from_wire(canonical_encode({**fields, **change}))


def test_size_bounds() -> None:
    with pytest.raises(MalformedInput):
        replace(direct_bundle(), ciphertext=bytes(MAX_CIPHERTEXT_BYTES + 1))
    with pytest.raises(MalformedInput, match="more than"):
        ShareBundle.from_wire(bytes(MAX_BUNDLE_BYTES + 1))
    assert len(replace(direct_bundle(), ciphertext=bytes(MAX_CIPHERTEXT_BYTES)).to_wire()) < (
        MAX_BUNDLE_BYTES
    )


@given(
    ciphertext=st.binary(max_size=200),
    chain=st.lists(st.binary(max_size=50), max_size=3).map(tuple),
)
def test_round_trip_any_bytes(ciphertext: bytes, chain: tuple[bytes, ...]) -> None:
    bundle = replace(direct_bundle(), ciphertext=ciphertext, chain=chain)
    assert ShareBundle.from_wire(bundle.to_wire()) == bundle


# --- opening --------------------------------------------------------------------------------------


def test_direct_and_network_and_circle_bundles_open() -> None:
    assert open_as(direct_bundle(), BOB) == RECORD
    assert open_as(direct_bundle(CAROL, kind=TargetKind.NETWORK), CAROL) == RECORD
    opened = open_bundle(
        circle_bundle(),
        recipient_did=BOB.did,
        recipient_x25519_private_key=bytes(BOB.x25519),
        now_ms=T0,
    )
    assert opened.record == RECORD and opened.content == "How? Like this."
    assert opened.circle_version is not None and opened.circle_key == bytes([7]) * 32


def _forged_version(bundle: ShareBundle) -> ShareBundle:
    assert bundle.circle_version is not None
    version = CircleKeyVersion.from_wire(bundle.circle_version)
    return replace(bundle, circle_version=replace(version, version=3).to_wire())


def _another_authors_record(bundle: ShareBundle) -> ShareBundle:
    record = acu_record(author=BOB.did, content="not hers", acu_type="qa", source_time_ms=T0)
    return direct_bundle(record=record)


@pytest.mark.parametrize(
    ("bundle", "person", "code"),
    [
        (direct_bundle(), CAROL, "not_for_us"),
        (direct_bundle(CAROL, kind=TargetKind.NETWORK), BOB, "unreadable"),
        (circle_bundle(members=(CAROL,)), BOB, "not_for_us"),
        (circle_bundle(recipient=CAROL), BOB, "unreadable"),
        (_forged_version(circle_bundle()), BOB, "forged"),
        (replace(direct_bundle(), certificate=BOB.certificate.to_wire()), BOB, "untrusted_device"),
        (replace(direct_bundle(), grant=b"\xa0"), BOB, "malformed"),
        (
            replace(
                direct_bundle(),
                key_kind=KeyKind.CIRCLE,
                wrapped_key=None,
                **{
                    "circle_version": circle_bundle().circle_version,
                    "circle_key": circle_bundle().circle_key,
                    "content_key": circle_bundle().content_key,
                },
            ),
            BOB,
            "wrong_key_kind",
        ),
        (_another_authors_record(direct_bundle()), BOB, "not_the_author"),
    ],
)
def test_bad_bundles_are_refused(bundle: ShareBundle, person: Person, code: str) -> None:
    with pytest.raises(BundleRefused) as refused:
        open_as(bundle, person)
    assert refused.value.code == code


def test_content_that_is_not_the_grants_acu_is_refused() -> None:
    bundle = direct_bundle()
    other = acu_record(author=ALICE.did, content="other", acu_type="qa", source_time_ms=T0)
    grant = SharingGrant.from_wire(bundle.grant)
    # Encrypted for the grant's ACU id (so it opens) but holding another record.
    swapped = replace(bundle, ciphertext=encrypt_content(CONTENT_KEY, grant.acu_id, other))
    with pytest.raises(BundleRefused) as refused:
        open_as(swapped, BOB)
    assert refused.value.code == "wrong_content"


def test_a_global_grant_is_not_a_bundle() -> None:
    grant = SharingGrant.create(
        signing_key=ALICE.device,
        grantor_did=ALICE.did,
        acu_id=ACU_ID,
        target_kind=TargetKind.GLOBAL,
        issued_at_ms=T0,
    )
    with pytest.raises(BundleRefused) as refused:
        open_as(replace(direct_bundle(), grant=grant.to_wire()), BOB)
    assert refused.value.code == "global"
