"""This device's identity on disk: `init` creates it, `run` and `id` load it.

`init` writes everything into a staging directory inside the data directory first and moves the
pieces into place at the end, the key directory last: the keys are what makes a data directory
"initialised", so a crash at any point leaves either no identity (and `init` can simply run again)
or a complete one. Existing keys are never overwritten (node/keys.py opens them with O_EXCL).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nacl.public
import nacl.signing
import nacl.utils

from node.config import CONFIG_FILE, render_default_config_file
from node.errors import NodeError
from node.keys import (
    KeyFile,
    KeyFileError,
    device_key_file,
    encryption_key_file,
    identity_key_file,
)
from node.runtime import TOKEN_FILE, create_token_file, run_lock
from protocols.did import did_from_ed25519_public_key
from protocols.identity_records import DeviceCertificate, EncryptionKeyBinding
from protocols.peer_id import peer_id_from_ed25519_public_key
from store.database import open_database
from store.devices import Credentials, introduce
from store.identity import (
    IdentityRow,
    list_devices,
    load_identity,
    save_identity,
)
from store.peers import record_peer_seen
from store.vault_log import LocalSigner

DATABASE_FILE = "vivim.db"
KEYS_DIR = "keys"
DATA_DIR_MODE = 0o700


class IdentityExists(NodeError):
    """`init` found an identity already; it never overwrites one."""


class NotInitialised(NodeError):
    """The data directory holds no identity yet."""


@dataclass(frozen=True, kw_only=True)
class PublicIdentity:
    did: str
    peer_id: str


@dataclass(frozen=True, kw_only=True)
class LocalIdentity(PublicIdentity):
    device_seed: bytes

    def signer(self) -> LocalSigner:
        """What signs this device's ops: the device key, acting for the DID."""
        return LocalSigner(
            author=self.did,
            device=self.peer_id,
            signing_key=nacl.signing.SigningKey(self.device_seed),
        )


def is_initialised(data_dir: Path) -> bool:
    return (data_dir / KEYS_DIR).exists()


def init_data_dir(data_dir: Path, *, now_ms: int) -> PublicIdentity:
    """Create a new identity, its keys, this device's certificate, config and database."""
    _refuse_existing(data_dir)
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        # The directory holds private keys and the vault: its owner's alone.
        data_dir.chmod(DATA_DIR_MODE)
        # Two `init`s at once must not pair one's keys with the other's database.
        with run_lock(data_dir, holder="vivim-node init"):
            _refuse_existing(data_dir)
            return _create_identity(data_dir, now_ms)
    except OSError as err:
        raise NodeError(
            f"cannot create an identity in {data_dir}: {err.strerror or err}. "
            "Pick a directory you can write with --data-dir or VIVIM_HOME"
        ) from err


def _refuse_existing(data_dir: Path) -> None:
    if is_initialised(data_dir):
        raise IdentityExists(
            f"{data_dir} already holds an identity; `init` never overwrites one. "
            "Use another --data-dir for a new identity"
        )
    if (data_dir / DATABASE_FILE).exists():
        raise IdentityExists(
            f"{data_dir / DATABASE_FILE} exists but {data_dir / KEYS_DIR} does not: restore the "
            "keys from a backup, or move the database away to start a new identity"
        )


def _create_identity(data_dir: Path, now_ms: int) -> PublicIdentity:
    identity_key = nacl.signing.SigningKey.generate()
    encryption_key = nacl.public.PrivateKey.generate()
    device_seed = nacl.utils.random(32)
    device_key = nacl.signing.SigningKey(device_seed)

    identity_public = bytes(identity_key.verify_key)
    device_public = bytes(device_key.verify_key)
    did = did_from_ed25519_public_key(identity_public)
    peer_id = peer_id_from_ed25519_public_key(device_public)
    binding = EncryptionKeyBinding.create(
        signing_key=identity_key,
        did=did,
        encryption_public_key=bytes(encryption_key.public_key),
        key_version=1,
        issued_at_ms=now_ms,
    )
    certificate = DeviceCertificate.create(
        signing_key=identity_key,
        did=did,
        device_public_key=device_public,
        approver=did,
        issued_at_ms=now_ms,
    )

    _install(
        data_dir,
        keys={
            identity_key_file: bytes(identity_key),
            encryption_key_file: bytes(encryption_key),
            device_key_file: device_seed,
        },
        identity=IdentityRow(
            did=did,
            signing_public_key=identity_public,
            encryption_public_key=bytes(encryption_key.public_key),
            encryption_key_binding=binding.to_wire(),
            created_at_ms=now_ms,
        ),
        credentials=Credentials(certificate=certificate.to_wire(), chain=(), rotations=()),
        device_seed=device_seed,
        now_ms=now_ms,
    )
    return PublicIdentity(did=did, peer_id=peer_id)


@dataclass(frozen=True, kw_only=True)
class JoinedIdentity:
    """What a device that joined by pairing keeps (node/join.py checked all of it)."""

    identity: IdentityRow
    credentials: Credentials
    encryption_key: bytes
    device_seed: bytes
    approver: str  # its peer id and where it was reached: the first device to sync with
    approver_addrs: tuple[str, ...]


def join_data_dir(data_dir: Path, joined: JoinedIdentity, *, now_ms: int) -> PublicIdentity:
    """Create the data directory of a device that joined an identity: its device key, the
    identity's encryption key, no identity key (that stays on the first device)."""
    _refuse_existing(data_dir)
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        data_dir.chmod(DATA_DIR_MODE)
        with run_lock(data_dir, holder="vivim-node init --join"):
            _refuse_existing(data_dir)
            _install(
                data_dir,
                keys={
                    encryption_key_file: joined.encryption_key,
                    device_key_file: joined.device_seed,
                },
                identity=joined.identity,
                credentials=joined.credentials,
                device_seed=joined.device_seed,
                now_ms=now_ms,
                known_peers=((joined.approver, joined.approver_addrs),),
            )
    except OSError as err:
        raise NodeError(
            f"cannot create an identity in {data_dir}: {err.strerror or err}. "
            "Pick a directory you can write with --data-dir or VIVIM_HOME"
        ) from err
    key = nacl.signing.SigningKey(joined.device_seed)
    return PublicIdentity(
        did=joined.identity.did, peer_id=peer_id_from_ed25519_public_key(bytes(key.verify_key))
    )


def _install(
    data_dir: Path,
    *,
    keys: dict[Callable[[Path], KeyFile], bytes],
    identity: IdentityRow,
    credentials: Credentials,
    device_seed: bytes,
    now_ms: int,
    known_peers: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> None:
    """Write keys, token, config and database in a staging directory, then move them in place
    (module docstring). The database gets the identity and this device's first op, which
    introduces it with its certificate (store.trust_state), so any replica can check its ops."""
    staging = Path(tempfile.mkdtemp(prefix=".init-", dir=data_dir))
    try:
        for key_file, secret in keys.items():
            key_file(staging).write_new(secret)
        create_token_file(staging / TOKEN_FILE)
        (staging / CONFIG_FILE).write_text(render_default_config_file())
        db = open_database(staging / DATABASE_FILE)
        try:
            save_identity(db, identity)
            seed_key = nacl.signing.SigningKey(device_seed)
            peer_id = peer_id_from_ed25519_public_key(bytes(seed_key.verify_key))
            signer = LocalIdentity(did=identity.did, peer_id=peer_id, device_seed=device_seed)
            introduce(db, signer.signer(), credentials, now_ms)
            for peer_id, addrs in known_peers:
                record_peer_seen(db, peer_id, list(addrs), now_ms, did=identity.did)
        finally:
            db.close()
        # A config.toml the person wrote before `init` is kept; so is an API token.
        for name in (DATABASE_FILE, CONFIG_FILE, TOKEN_FILE):
            if not (data_dir / name).exists():
                os.replace(staging / name, data_dir / name)
        os.replace(staging / KEYS_DIR, data_dir / KEYS_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_local_identity(data_dir: Path) -> LocalIdentity:
    """The DID and this device's private key, for the running node."""
    public = load_public_identity(data_dir)
    seed = device_key_file(data_dir).read()
    # Not used yet by the running node, but every device holds it (sharing decrypts with it):
    # a missing or damaged one is reported at start, not when the first share arrives.
    encryption_key_file(data_dir).read()
    return LocalIdentity(did=public.did, peer_id=public.peer_id, device_seed=seed)


def load_public_identity(data_dir: Path) -> PublicIdentity:
    """The DID and this device's peer id; the device key must be one the database knows."""
    if not is_initialised(data_dir):
        raise NotInitialised(
            f"{data_dir} holds no identity yet: run `vivim-node init` "
            "(or pass the --data-dir you initialised)"
        )
    key_file = device_key_file(data_dir)
    peer_id = peer_id_from_ed25519_public_key(
        bytes(nacl.signing.SigningKey(key_file.read()).verify_key)
    )
    if not (data_dir / DATABASE_FILE).exists():
        raise NotInitialised(
            f"{data_dir / DATABASE_FILE} is missing although keys exist: restore the database "
            "from a backup"
        )
    db = open_database(data_dir / DATABASE_FILE)
    try:
        identity = load_identity(db)
        devices = {device.peer_id for device in list_devices(db)}
    finally:
        db.close()
    if identity is None:
        raise NotInitialised(
            f"{data_dir / DATABASE_FILE} holds no identity although keys exist: restore the "
            "database from a backup"
        )
    if peer_id not in devices:
        raise KeyFileError(
            f"{key_file.path} is the key of device {peer_id}, which the database does not know: "
            "restore the matching key or database from a backup"
        )
    return PublicIdentity(did=identity.did, peer_id=peer_id)
