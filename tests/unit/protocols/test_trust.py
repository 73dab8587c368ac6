"""Trust chains: certificates, revocations with their cascade, re-approval, key rotation."""

import itertools

import nacl.signing
import pytest

from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.trust import (
    DeviceStatus,
    IdentityKeys,
    Revocation,
    TrustState,
    cascade_of,
    compute_trust,
)

T0 = 1_700_000_000_000


class World:
    """An identity and a few devices, with helpers to certify and revoke."""

    def __init__(self, devices: int = 4) -> None:
        self.identity = nacl.signing.SigningKey(bytes([1]) * 32)
        self.did = did_from_ed25519_public_key(bytes(self.identity.verify_key))
        self.keys = [nacl.signing.SigningKey(bytes([10 + n]) * 32) for n in range(devices)]
        self.ids = [peer_id_from_ed25519_public_key(bytes(k.verify_key)) for k in self.keys]
        self.rotations: list[IdentityKeyRotation] = []
        self.certificates: list[DeviceCertificate] = []
        self.revocations: list[Revocation] = []
        self._order = itertools.count()

    def certify(
        self, device: int, by: int | None, at: int = T0, key: nacl.signing.SigningKey | None = None
    ) -> DeviceCertificate:
        certificate = DeviceCertificate.create(
            signing_key=key or (self.identity if by is None else self.keys[by]),
            did=self.did,
            device_public_key=bytes(self.keys[device].verify_key),
            approver=self.did if by is None else self.ids[by],
            issued_at_ms=at,
        )
        self.certificates.append(certificate)
        return certificate

    def revoke(self, target: int, by: int, cuts: dict[int, int] | None = None) -> None:
        order = next(self._order)
        self.revocations.append(
            Revocation(
                target=self.ids[target],
                revoker=self.ids[by],
                revoked_at_ms=T0 + order,
                cuts={self.ids[d]: seq for d, seq in (cuts or {target: 0}).items()},
                order=(order, self.ids[by], f"op-{order}"),
            )
        )

    def rotate(self, at: int) -> nacl.signing.SigningKey:
        new = nacl.signing.SigningKey(bytes([50 + len(self.rotations)]) * 32)
        self.rotations.append(
            IdentityKeyRotation.create(
                signing_key=self.identity,
                did=self.did,
                new_public_key=bytes(new.verify_key),
                key_version=len(self.rotations) + 2,
                rotated_at_ms=at,
            )
        )
        self.identity = new
        return new

    def state(self) -> TrustState:
        keys = IdentityKeys.from_rotations(self.did, self.rotations)
        return compute_trust(keys, self.certificates, self.revocations)

    def status(self, device: int) -> DeviceStatus | None:
        trust = self.state().devices.get(self.ids[device])
        return None if trust is None else trust.status


def test_a_chain_from_the_identity_key_is_trusted_and_recorded() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, 0)
    world.certify(2, 1)
    state = world.state()
    assert all(state.is_trusted(world.ids[n]) for n in range(3))
    assert state.devices[world.ids[2]].chain == (world.ids[1], world.ids[0], world.did)
    assert state.devices[world.ids[2]].approved_by == world.ids[1]
    assert state.ignored == ()


def test_a_broken_link_trusts_nothing_below_it() -> None:
    world = World()
    world.certify(0, None)
    world.certify(2, 1)  # device 1 was never certified
    assert world.status(0) is DeviceStatus.TRUSTED
    assert world.status(2) is DeviceStatus.UNTRUSTED
    assert not world.state().accepts(world.ids[2], 1)


def test_a_certificate_signed_by_the_wrong_key_does_not_count() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, None, key=world.keys[3])  # claims the identity, signed by a device
    state = world.state()
    assert world.ids[1] not in state.devices
    assert any("not signed" in reason for reason in state.ignored)


def test_approval_cycles_give_no_trust() -> None:
    world = World()
    world.certify(1, 2)
    world.certify(2, 1)
    assert world.status(1) is world.status(2) is DeviceStatus.UNTRUSTED


def test_revocation_cascades_and_cuts_ops_after_the_last_accepted() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, 0)
    world.certify(2, 1)
    assert cascade_of(world.state(), world.ids[1], world.certificates) == [world.ids[2]]
    world.revoke(1, by=0, cuts={1: 7, 2: 3})
    state = world.state()
    revoked, cascaded = state.devices[world.ids[1]], state.devices[world.ids[2]]
    assert revoked.status is DeviceStatus.REVOKED and revoked.revoked_by == world.ids[0]
    assert cascaded.status is DeviceStatus.UNTRUSTED
    assert state.accepts(world.ids[1], 7) and not state.accepts(world.ids[1], 8)
    assert state.accepts(world.ids[2], 3) and not state.accepts(world.ids[2], 4)
    assert state.is_trusted(world.ids[0])


def test_reapproval_by_another_trusted_device_restores_the_cascade_but_not_the_revoked() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, 0)
    world.certify(2, 1)
    world.revoke(1, by=0, cuts={1: 7, 2: 3})
    world.certify(2, 0, at=T0 + 100)
    world.certify(1, 0, at=T0 + 100)  # a revoked device is never trusted again
    state = world.state()
    assert state.is_trusted(world.ids[2]) and state.accepts(world.ids[2], 1000)
    assert state.devices[world.ids[2]].chain == (world.ids[0], world.did)
    assert state.devices[world.ids[1]].status is DeviceStatus.REVOKED


def test_a_device_cannot_revoke_its_approvers_or_itself_nor_an_untrusted_one_anybody() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, 0)
    world.certify(2, 1)
    world.revoke(0, by=2)  # its approver's approver
    world.revoke(2, by=2)  # itself
    world.revoke(0, by=3)  # device 3 has no certificate
    assert all(world.status(n) is DeviceStatus.TRUSTED for n in range(3))
    assert len(world.state().ignored) == 3


def test_the_first_of_two_crossing_revocations_wins() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, None)
    world.revoke(1, by=0)
    world.revoke(0, by=1)  # later: its revoker is revoked by then
    assert world.status(1) is DeviceStatus.REVOKED
    assert world.status(0) is DeviceStatus.TRUSTED


def test_a_revocation_that_arrives_before_the_certificate_still_counts() -> None:
    world = World()
    world.certify(0, None)
    world.revoke(1, by=0, cuts={1: 2})
    assert world.status(1) is DeviceStatus.REVOKED
    world.certify(1, 0)
    assert world.status(1) is DeviceStatus.REVOKED
    assert world.state().accepts(world.ids[1], 2)


def test_the_result_does_not_depend_on_the_order_records_are_given_in() -> None:
    world = World()
    world.certify(0, None)
    world.certify(1, 0)
    world.certify(2, 1)
    world.certify(3, 0)
    world.revoke(1, by=3, cuts={1: 4, 2: 1})
    world.certify(2, 3, at=T0 + 50)
    expected = world.state().devices
    keys = IdentityKeys.from_rotations(world.did, world.rotations)
    for certificates in itertools.permutations(world.certificates):
        state = compute_trust(keys, certificates, reversed(world.revocations))
        assert state.devices == expected


def test_a_rotated_key_signs_from_its_rotation_and_the_retired_one_only_before() -> None:
    world = World()
    old = world.identity
    world.certify(0, None, at=T0)
    new = world.rotate(at=T0 + 1000)
    world.certify(1, None, at=T0 + 2000, key=new)
    world.certify(2, None, at=T0 + 500, key=old)  # signed by the old key while it was in force
    world.certify(3, None, at=T0 + 2000, key=old)  # signed by the old key after it retired
    state = world.state()
    assert state.keys.current.version == 2
    assert state.keys.keys[0].retired_at_ms == T0 + 1000
    assert [world.status(n) for n in range(4)] == [
        DeviceStatus.TRUSTED,
        DeviceStatus.TRUSTED,
        DeviceStatus.TRUSTED,
        None,
    ]


def test_rotations_must_chain_from_the_inception_key() -> None:
    world = World()
    stranger = nacl.signing.SigningKey(bytes([99]) * 32)
    forged = IdentityKeyRotation.create(
        signing_key=stranger,
        did=world.did,
        new_public_key=bytes(stranger.verify_key),
        key_version=2,
        rotated_at_ms=T0,
    )
    skipped = IdentityKeyRotation.create(
        signing_key=world.identity,
        did=world.did,
        new_public_key=bytes(stranger.verify_key),
        key_version=3,
        rotated_at_ms=T0,
    )
    keys = IdentityKeys.from_rotations(world.did, [forged, skipped])
    assert keys.current.version == 1 and len(keys.ignored) == 2


@pytest.mark.parametrize("at", [T0 - 1, T0])
def test_a_rotation_stamped_before_the_key_it_replaces_took_over_is_ignored(at: int) -> None:
    world = World()
    world.rotate(at=T0)
    second = nacl.signing.SigningKey(bytes([77]) * 32)
    world.rotations.append(
        IdentityKeyRotation.create(
            signing_key=world.identity,
            did=world.did,
            new_public_key=bytes(second.verify_key),
            key_version=3,
            rotated_at_ms=at,
        )
    )
    keys = IdentityKeys.from_rotations(world.did, world.rotations)
    assert keys.current.version == 2
