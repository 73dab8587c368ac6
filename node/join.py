"""`vivim-node init --join CODE`: make this device a device of an existing identity.

A new device key is made, a short-lived libp2p host with it dials the approving device named in
the code and pairs (node/pairing.py); everything the approver sends is checked here before
anything is written: the certificate is for this device's key and by the code's approver, the
chain reaches the identity key valid at each certificate's date, the encryption key binding is
signed by the identity key, and the sealed encryption key opens and matches it. Only then is
the data directory created (node.identity.join_data_dir); a refusal or a failed check writes
nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import nacl.exceptions
import nacl.public
import nacl.signing
import nacl.utils
import trio

from node.errors import NodeError
from node.identity import JoinedIdentity, PublicIdentity, _refuse_existing, join_data_dir
from node.pairing import PairingFailed, run_joiner
from protocols.errors import ProtocolError
from protocols.identity_records import DeviceCertificate, EncryptionKeyBinding, IdentityKeyRotation
from protocols.pairing import PairingCode, Welcome
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.trust import IdentityKeys, compute_trust
from store.devices import Credentials
from store.identity import IdentityRow

# The joining host closes its connection when done; bounded like the node's shutdown.
HOST_CLOSE_TIMEOUT_S = 1.0


def join(data_dir: Path, code_text: str) -> PublicIdentity:
    """Pair with the approving device and create this device's data directory."""
    code = PairingCode.from_text(code_text)
    now = int(time.time() * 1000)
    _refuse_existing(data_dir)
    device_seed = nacl.utils.random(32)
    # An expired code is still taken to the approver, whose clock decides (and who then logs
    # the refusal too); only if it cannot be reached does our own clock explain why.
    try:
        welcome, box_key = trio.run(_pair, code, device_seed)
    except PairingFailed as err:
        if code.is_expired(now) and err.unreachable:
            raise PairingFailed(
                f"{err} (this pairing code has also expired: run `vivim-node device pair` on "
                "the approving device for a new one)"
            ) from err
        raise
    joined = check_welcome(code, welcome, box_key, device_seed, now)
    return join_data_dir(data_dir, joined, now_ms=now)


async def _pair(code: PairingCode, device_seed: bytes) -> tuple[Welcome, nacl.public.PrivateKey]:
    from node.host import build_host

    host = build_host(device_seed)
    peer_id = peer_id_from_ed25519_public_key(
        bytes(nacl.signing.SigningKey(device_seed).verify_key)
    )
    async with host.run([]):
        try:
            return await run_joiner(host, code, peer_id)
        finally:
            with trio.move_on_after(HOST_CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                await host.close()


def check_welcome(
    code: PairingCode,
    welcome: Welcome,
    box_key: nacl.public.PrivateKey,
    device_seed: bytes,
    now_ms: int,
) -> JoinedIdentity:
    """Everything the approver sent, checked (module docstring); `PairingFailed` otherwise."""
    device_public = bytes(nacl.signing.SigningKey(device_seed).verify_key)
    peer_id = peer_id_from_ed25519_public_key(device_public)
    try:
        certificate = DeviceCertificate.from_wire(welcome.certificate)
        chain = [DeviceCertificate.from_wire(wire) for wire in welcome.chain]
        rotations = [IdentityKeyRotation.from_wire(w) for w in welcome.identity_rotations]
        binding = EncryptionKeyBinding.from_wire(welcome.encryption_key_binding)
    except ProtocolError as err:
        raise _bad(f"a record does not decode: {err}") from err
    if (
        certificate.device_public_key != device_public
        or certificate.did != code.did
        or certificate.approver != code.approver
    ):
        raise _bad("the certificate is not for this device, this identity and that approver")
    keys = IdentityKeys.from_rotations(code.did, rotations)
    state = compute_trust(keys, [certificate, *chain], [])
    if not state.is_trusted(peer_id):
        raise _bad("the certificate chain does not reach the identity key")
    binding_key = keys.key_at(binding.issued_at_ms)
    try:
        if binding.did != code.did or binding_key is None:
            raise _bad("the encryption key binding is not of this identity")
        binding.verify(binding_key.public_key)
        encryption_key = nacl.public.SealedBox(box_key).decrypt(welcome.sealed_encryption_key)
    except (ProtocolError, nacl.exceptions.CryptoError) as err:
        raise _bad(f"the encryption key does not check out: {err}") from err
    public = nacl.public.PrivateKey(encryption_key).public_key
    if bytes(public) != binding.encryption_public_key:
        raise _bad("the sealed encryption key is not the identity's encryption key")
    return JoinedIdentity(
        identity=IdentityRow(
            did=code.did,
            signing_public_key=keys.current.public_key,
            encryption_public_key=binding.encryption_public_key,
            encryption_key_binding=welcome.encryption_key_binding,
            created_at_ms=now_ms,
        ),
        credentials=Credentials(
            certificate=welcome.certificate,
            chain=welcome.chain,
            rotations=welcome.identity_rotations,
        ),
        encryption_key=encryption_key,
        device_seed=device_seed,
        approver=code.approver,
        approver_addrs=code.addrs,
    )


def _bad(why: str) -> NodeError:
    return PairingFailed(
        f"the approving device sent something that does not check out ({why}); nothing was "
        "written. Ask for a new code and try again"
    )
