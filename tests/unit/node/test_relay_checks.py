"""What a relay decides without its database: a sender's rate (a token bucket per DID, on a fake
clock), whether an introduction makes a peer a device of a DID (real certificates, chains and
identity key rotations, as protocols.trust counts them), and the sender's retry backoff."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.mailbox_outbox import RETRY_MAX_S, RETRY_MIN_S, retry_delay_s
from node.relay import RateLimiter, Refusal, check_introduction
from protocols.canonical import canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.mailbox import Introduce, RefusalCode
from protocols.peer_id import peer_id_from_ed25519_public_key

T0 = 1_700_000_000_000
ROTATED_AT = T0 + 10_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the sender rate -----------------------------------------------------------------------------


def allowed(limiter: RateLimiter, key: str, times: int) -> int:
    return sum(limiter.allow(key) for _ in range(times))


def test_a_burst_is_allowed_at_once_and_then_nothing_until_tokens_come_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("did:a") for _ in range(5)] == [True, True, True, False, False]
    clock.now = 0.25  # half a token
    assert not limiter.allow("did:a")
    clock.now = 0.5  # the refused request above did not spend the half token
    assert limiter.allow("did:a")
    assert not limiter.allow("did:a")


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    # Times and rates that floats hold exactly.
    limiter = RateLimiter(rate=8.0, burst=5, clock=clock)
    assert allowed(limiter, "did:a", 10) == 5
    clock.now = 0.375  # three tokens
    assert allowed(limiter, "did:a", 10) == 3
    clock.now = 1000.0  # a long pause fills the bucket only to the burst
    assert allowed(limiter, "did:a", 100) == 5
    # At a steady pace of the rate, every request passes.
    for step in range(1, 50):
        clock.now = 1000.0 + step * 0.125
        assert limiter.allow("did:a"), step
    assert not limiter.allow("did:a")


def test_each_key_has_its_own_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    assert allowed(limiter, "did:a", 5) == 2
    assert allowed(limiter, "did:b", 5) == 2  # a's exhaustion costs b nothing
    clock.now = 1.0
    assert allowed(limiter, "did:a", 5) == 1
    assert allowed(limiter, "did:b", 5) == 1
    assert allowed(limiter, "did:c", 5) == 2  # a new key starts full, whatever the time


def test_with_no_rate_only_the_burst_is_ever_allowed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=0.0, burst=3, clock=clock)
    assert allowed(limiter, "did:a", 5) == 3
    clock.now = 10_000.0
    assert allowed(limiter, "did:a", 5) == 0


@given(
    rate=st.floats(min_value=0.1, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=60),
)
def test_never_more_than_the_burst_plus_what_the_rate_refilled(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    passed = 0
    for gap in gaps:
        clock.now += gap
        passed += limiter.allow("did:a")
    assert passed <= burst + rate * clock.now + 1e-6
    assert passed <= len(gaps)


# --- introductions -------------------------------------------------------------------------------


def key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([seed]) * 32)


IDENTITY = key(1)
DID = did_from_ed25519_public_key(bytes(IDENTITY.verify_key))
NEW_IDENTITY = key(2)  # the identity key after the rotation, version 2
LAPTOP, PHONE, TABLET = key(11), key(12), key(13)


def peer(device: nacl.signing.SigningKey) -> str:
    return peer_id_from_ed25519_public_key(bytes(device.verify_key))


def certificate(
    device: nacl.signing.SigningKey,
    *,
    by: nacl.signing.SigningKey = IDENTITY,
    approver: str = DID,
    did: str = DID,
    at: int = T0,
) -> bytes:
    return DeviceCertificate.create(
        signing_key=by,
        did=did,
        device_public_key=bytes(device.verify_key),
        approver=approver,
        issued_at_ms=at,
    ).to_wire()


ROTATION = IdentityKeyRotation.create(
    signing_key=IDENTITY,
    did=DID,
    new_public_key=bytes(NEW_IDENTITY.verify_key),
    key_version=2,
    rotated_at_ms=ROTATED_AT,
).to_wire()


def introduce(
    own: bytes, chain: tuple[bytes, ...] = (), rotations: tuple[bytes, ...] = ()
) -> Introduce:
    return Introduce(certificate=own, chain=chain, rotations=rotations)


def refusal_code(introduction: Introduce, peer_id: str) -> str:
    with pytest.raises(Refusal) as caught:
        check_introduction(introduction, peer_id)
    return caught.value.code


def test_a_device_certified_by_the_identity_key_is_a_device_of_its_did() -> None:
    assert check_introduction(introduce(certificate(LAPTOP)), peer(LAPTOP)).did == DID
    # Records that do not matter do not hurt: a chain of others, a rotation dated later.
    extra = introduce(certificate(LAPTOP), (certificate(PHONE),), (ROTATION,))
    assert check_introduction(extra, peer(LAPTOP)).did == DID


def test_a_device_certified_by_another_device_needs_that_devices_certificate() -> None:
    phone = certificate(PHONE, by=LAPTOP, approver=peer(LAPTOP), at=T0 + 1)
    assert check_introduction(introduce(phone, (certificate(LAPTOP),)), peer(PHONE)).did == DID
    assert refusal_code(introduce(phone), peer(PHONE)) == RefusalCode.UNAUTHORIZED
    # Two steps: the tablet approved by the phone, approved by the laptop.
    tablet = certificate(TABLET, by=PHONE, approver=peer(PHONE), at=T0 + 2)
    full = (phone, certificate(LAPTOP))
    assert check_introduction(introduce(tablet, full), peer(TABLET)).did == DID
    # The approvers up the chain, which the relay checks against the revoked devices.
    approvers = check_introduction(introduce(tablet, full), peer(TABLET)).approvers
    assert peer(PHONE) in approvers and peer(LAPTOP) in approvers
    assert peer(TABLET) not in approvers
    assert refusal_code(introduce(tablet, (phone,)), peer(TABLET)) == RefusalCode.UNAUTHORIZED
    assert refusal_code(introduce(tablet, (certificate(LAPTOP),)), peer(TABLET)) == (
        RefusalCode.UNAUTHORIZED
    )


def test_a_certificate_of_another_peer_is_refused() -> None:
    laptop = introduce(certificate(LAPTOP))
    assert refusal_code(laptop, peer(PHONE)) == RefusalCode.UNAUTHORIZED
    # Nor does a chain that holds the peer's certificate make someone else's certificate its own.
    phone_in_chain = introduce(certificate(LAPTOP), (certificate(PHONE),))
    assert refusal_code(phone_in_chain, peer(PHONE)) == RefusalCode.UNAUTHORIZED


def test_a_certificate_not_signed_by_the_identity_key_is_refused() -> None:
    # Signed by the device itself, claiming the identity approved it.
    forged = certificate(LAPTOP, by=LAPTOP)
    assert refusal_code(introduce(forged), peer(LAPTOP)) == RefusalCode.UNAUTHORIZED
    # Approved by a device that no certificate given makes trusted.
    orphan = certificate(PHONE, by=TABLET, approver=peer(TABLET))
    assert refusal_code(introduce(orphan, (certificate(LAPTOP),)), peer(PHONE)) == (
        RefusalCode.UNAUTHORIZED
    )


def test_the_did_is_the_certificates_own() -> None:
    other_identity = key(3)
    other_did = did_from_ed25519_public_key(bytes(other_identity.verify_key))
    theirs = certificate(PHONE, by=other_identity, approver=other_did, did=other_did)
    assert check_introduction(introduce(theirs), peer(PHONE)).did == other_did
    # A chain through a device of another DID does not reach ours.
    crossing = certificate(TABLET, by=PHONE, approver=peer(PHONE))
    assert refusal_code(introduce(crossing, (theirs,)), peer(TABLET)) == RefusalCode.UNAUTHORIZED


@pytest.mark.parametrize(
    "introduction",
    [
        introduce(b"\x00garbage"),
        introduce(canonical_encode({"type": "device_certificate"})),
        introduce(ROTATION),  # a record, but not a certificate
        introduce(certificate(LAPTOP), (b"garbage",)),
        introduce(certificate(LAPTOP), (), (b"garbage",)),
        introduce(certificate(LAPTOP), (), (certificate(PHONE),)),  # not a rotation
        introduce(certificate(LAPTOP) + b"\x00"),  # trailing bytes
    ],
)
def test_credentials_that_do_not_decode_are_malformed(introduction: Introduce) -> None:
    assert refusal_code(introduction, peer(LAPTOP)) == RefusalCode.MALFORMED


def test_after_a_rotation_certificates_need_the_key_in_force_at_their_date() -> None:
    after = ROTATED_AT + 1
    # The new key certifies after the rotation: it counts only with the rotation shown.
    by_new_key = certificate(PHONE, by=NEW_IDENTITY, at=after)
    assert check_introduction(introduce(by_new_key, (), (ROTATION,)), peer(PHONE)).did == DID
    assert refusal_code(introduce(by_new_key), peer(PHONE)) == RefusalCode.UNAUTHORIZED
    # The new key dated before it took over does not count.
    early = certificate(PHONE, by=NEW_IDENTITY, at=ROTATED_AT - 1)
    assert refusal_code(introduce(early, (), (ROTATION,)), peer(PHONE)) == RefusalCode.UNAUTHORIZED
    # The retired key signing after its retirement does not count...
    by_retired = certificate(TABLET, by=IDENTITY, at=after)
    assert refusal_code(introduce(by_retired, (), (ROTATION,)), peer(TABLET)) == (
        RefusalCode.UNAUTHORIZED
    )
    # ...but what it signed while in force still does (protocols.trust: a retired key's
    # signatures count for times before its retirement).
    before = certificate(TABLET, by=IDENTITY, at=ROTATED_AT - 1)
    assert check_introduction(introduce(before, (), (ROTATION,)), peer(TABLET)).did == DID
    # And a device chain through a certificate of the new key needs the rotation too.
    tablet = certificate(TABLET, by=PHONE, approver=peer(PHONE), at=after + 1)
    introduction = check_introduction(introduce(tablet, (by_new_key,), (ROTATION,)), peer(TABLET))
    assert introduction.did == DID
    assert refusal_code(introduce(tablet, (by_new_key,)), peer(TABLET)) == RefusalCode.UNAUTHORIZED


def test_a_rotation_the_relay_saw_before_cannot_be_left_out() -> None:
    by_retired = certificate(TABLET, by=IDENTITY, at=ROTATED_AT + 1)
    # Without the rotation, the retired key looks current and its certificate passes...
    assert check_introduction(introduce(by_retired), peer(TABLET)).did == DID
    # ...but a relay that saw the rotation adds it, and the certificate no longer counts.
    with pytest.raises(Refusal) as caught:
        check_introduction(introduce(by_retired), peer(TABLET), known_rotations=(ROTATION,))
    assert caught.value.code == RefusalCode.UNAUTHORIZED
    # The rotations that counted come back, for the relay to keep.
    by_new_key = certificate(PHONE, by=NEW_IDENTITY, at=ROTATED_AT + 1)
    assert check_introduction(introduce(by_new_key, (), (ROTATION,)), peer(PHONE)).rotations == (
        ROTATION,
    )


def test_a_rotation_not_signed_by_the_key_it_retires_does_not_count() -> None:
    forged = IdentityKeyRotation.create(
        signing_key=NEW_IDENTITY,  # should be the inception key
        did=DID,
        new_public_key=bytes(NEW_IDENTITY.verify_key),
        key_version=2,
        rotated_at_ms=ROTATED_AT,
    ).to_wire()
    by_new_key = certificate(PHONE, by=NEW_IDENTITY, at=ROTATED_AT + 1)
    assert refusal_code(introduce(by_new_key, (), (forged,)), peer(PHONE)) == (
        RefusalCode.UNAUTHORIZED
    )
    # A forged rotation does not retire the inception key either.
    by_inception = certificate(TABLET, at=ROTATED_AT + 1)
    assert check_introduction(introduce(by_inception, (), (forged,)), peer(TABLET)).did == DID


# --- the sender's retry backoff ------------------------------------------------------------------


def test_the_retry_delay_doubles_from_the_minimum_up_to_the_maximum() -> None:
    top = [retry_delay_s(n, lambda: 1.0) for n in range(11)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert [retry_delay_s(n, lambda: 0.0) for n in range(3)] == [0.5, 1.0, 2.0]
    assert retry_delay_s(0, lambda: 0.5) == 0.75
    assert retry_delay_s(10**9, lambda: 1.0) == RETRY_MAX_S
    assert retry_delay_s(10**9, lambda: 0.0) == RETRY_MAX_S / 2


@given(
    attempts=st.integers(min_value=0, max_value=10**6),
    rand=st.floats(min_value=0.0, max_value=1.0),
)
def test_the_retry_delay_is_bounded_and_grows_with_attempts(attempts: int, rand: float) -> None:
    delay = retry_delay_s(attempts, lambda: rand)
    assert RETRY_MIN_S / 2 <= delay <= RETRY_MAX_S
    assert retry_delay_s(attempts + 1, lambda: rand) >= delay
    assert delay >= retry_delay_s(max(0, attempts - 1), lambda: rand)
