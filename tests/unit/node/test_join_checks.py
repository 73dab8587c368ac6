"""What a joining device checks in the approver's Welcome before writing anything."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import nacl.public
import nacl.signing
import pytest

from node.join import check_welcome
from node.pairing import PairingFailed
from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate, EncryptionKeyBinding
from protocols.pairing import PairingCode, Welcome
from protocols.peer_id import peer_id_from_ed25519_public_key

T0 = 1_700_000_000_000


class Setup:
    def __init__(self) -> None:
        self.identity = nacl.signing.SigningKey(bytes([1]) * 32)
        self.did = did_from_ed25519_public_key(bytes(self.identity.verify_key))
        self.approver = nacl.signing.SigningKey(bytes([2]) * 32)
        self.approver_id = peer_id_from_ed25519_public_key(bytes(self.approver.verify_key))
        self.seed = bytes([3]) * 32
        self.encryption = nacl.public.PrivateKey(bytes([4]) * 32)
        self.box = nacl.public.PrivateKey(bytes([5]) * 32)
        self.code = PairingCode(
            did=self.did,
            approver=self.approver_id,
            addrs=("/ip4/127.0.0.1/tcp/1",),
            code_id=bytes(8),
            secret=bytes(32),
            expires_at_ms=T0 + 600_000,
        )

    def certificate(self, device_key: bytes, *, by: nacl.signing.SigningKey | None = None) -> bytes:
        signer = by or self.approver
        return DeviceCertificate.create(
            signing_key=signer,
            did=self.did,
            device_public_key=device_key,
            approver=peer_id_from_ed25519_public_key(bytes(signer.verify_key)),
            issued_at_ms=T0,
        ).to_wire()

    def welcome(self, **changes: object) -> Welcome:
        device_public = bytes(nacl.signing.SigningKey(self.seed).verify_key)
        approver_certificate = DeviceCertificate.create(
            signing_key=self.identity,
            did=self.did,
            device_public_key=bytes(self.approver.verify_key),
            approver=self.did,
            issued_at_ms=T0 - 10,
        ).to_wire()
        binding = EncryptionKeyBinding.create(
            signing_key=self.identity,
            did=self.did,
            encryption_public_key=bytes(self.encryption.public_key),
            key_version=1,
            issued_at_ms=T0 - 20,
        ).to_wire()
        welcome = Welcome(
            did=self.did,
            identity_rotations=(),
            encryption_key_binding=binding,
            certificate=self.certificate(device_public),
            chain=(approver_certificate,),
            sealed_encryption_key=nacl.public.SealedBox(self.box.public_key).encrypt(
                bytes(self.encryption)
            ),
        )
        return dataclasses.replace(welcome, **changes)  # type: ignore[arg-type]

    def check(self, welcome: Welcome) -> object:
        return check_welcome(self.code, welcome, self.box, self.seed, T0 + 1)


def test_a_good_welcome_gives_the_identity_and_the_encryption_key() -> None:
    setup = Setup()
    joined = setup.check(setup.welcome())
    assert joined.identity.did == setup.did  # type: ignore[attr-defined]
    assert joined.encryption_key == bytes(setup.encryption)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        "certificate_for_another_key",
        "certificate_by_another_device",
        "no_chain",
        "binding_signed_by_a_device",
        "sealed_to_another_key",
        "another_encryption_key",
        "garbage_record",
    ],
)
def test_a_welcome_that_does_not_check_out_is_refused(change: str) -> None:
    setup = Setup()
    other = nacl.signing.SigningKey(bytes([9]) * 32)
    other_box = nacl.public.PrivateKey(bytes([8]) * 32)
    changes: dict[str, Callable[[], dict[str, object]]] = {
        "certificate_for_another_key": lambda: {
            "certificate": setup.certificate(bytes(other.verify_key))
        },
        "certificate_by_another_device": lambda: {
            "certificate": setup.certificate(
                bytes(nacl.signing.SigningKey(setup.seed).verify_key), by=other
            )
        },
        "no_chain": lambda: {"chain": ()},
        "binding_signed_by_a_device": lambda: {
            "encryption_key_binding": EncryptionKeyBinding.create(
                signing_key=setup.approver,
                did=setup.did,
                encryption_public_key=bytes(setup.encryption.public_key),
                key_version=1,
                issued_at_ms=T0,
            ).to_wire()
        },
        "sealed_to_another_key": lambda: {
            "sealed_encryption_key": nacl.public.SealedBox(other_box.public_key).encrypt(
                bytes(setup.encryption)
            )
        },
        "another_encryption_key": lambda: {
            "sealed_encryption_key": nacl.public.SealedBox(setup.box.public_key).encrypt(
                bytes(other_box)
            )
        },
        "garbage_record": lambda: {"encryption_key_binding": b"\xa0"},
    }[change]()
    with pytest.raises(PairingFailed, match="does not check out"):
        setup.check(setup.welcome(**changes))  # type: ignore[arg-type]
