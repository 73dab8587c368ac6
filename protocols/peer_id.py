"""A device's identifier: the libp2p peer id of its Ed25519 key (`12D3KooW...`).

Each device's Ed25519 key is also its libp2p key, so device id = peer id, computed here without
importing libp2p. Per the libp2p peer-id spec (peer-ids/peer-ids.md in github.com/libp2p/specs) the
public key is wrapped in the protobuf `PublicKey {Type = Ed25519 (1), Data = key}`, which for a
32-byte key is always the 36 bytes `08 01 12 20 || key`; keys that serialize to at most 42 bytes use
the identity multihash (code 0x00, then the length 0x24), and the peer id's text is the multihash in
base58btc without a multibase prefix.

Because the multihash is the identity, the key can be read back from the peer id, which is what lets
a peer check a device's signature knowing only its id. Only that legacy base58btc form is accepted:
the CIDv1 form (`bafz...`) and SHA-256 peer ids (`Qm...`, keys of other types) are refused.
"""

import functools

from protocols.base58 import b58decode, b58encode
from protocols.errors import InvalidPeerId, LocalProtocolError, MalformedInput

__all__ = ["InvalidPeerId", "ed25519_public_key_from_peer_id", "peer_id_from_ed25519_public_key"]

ED25519_PUBLIC_KEY_LENGTH = 32
# Protobuf field 1 (varint) = 1 (Ed25519), field 2 (length-delimited) of length 32.
ED25519_PUBLIC_KEY_PROTOBUF_PREFIX = b"\x08\x01\x12\x20"
IDENTITY_MULTIHASH_CODE = b"\x00"
SHA2_256_MULTIHASH_CODE = b"\x12"
# The identity multihash of the 36-byte protobuf: code 0x00, length 0x24, then the protobuf itself.
MULTIHASH_PREFIX = IDENTITY_MULTIHASH_CODE + b"\x24" + ED25519_PUBLIC_KEY_PROTOBUF_PREFIX
# An Ed25519 peer id is 52 characters; longer text is refused before the quadratic base58 decoding.
MAX_PEER_ID_LENGTH = 128


def peer_id_from_ed25519_public_key(public_key: bytes) -> str:
    """The libp2p peer id (`12D3KooW...`) of a 32-byte Ed25519 public key."""
    if len(public_key) != ED25519_PUBLIC_KEY_LENGTH:
        raise LocalProtocolError(
            f"an Ed25519 public key is {ED25519_PUBLIC_KEY_LENGTH} bytes, got {len(public_key)}"
        )
    return b58encode(MULTIHASH_PREFIX + public_key)


# Cached: every op, letter and record names a device by its peer id, a handful of devices sign
# nearly everything, and base58 decoding in Python costs more than the signature check it
# feeds (~20 us). Errors are not cached (lru_cache keeps results only).
@functools.lru_cache(maxsize=4096)
def ed25519_public_key_from_peer_id(peer_id: str) -> bytes:
    """The 32-byte Ed25519 public key inside a libp2p peer id; raises `InvalidPeerId`."""
    if len(peer_id) > MAX_PEER_ID_LENGTH:
        raise InvalidPeerId(
            f"peer id is {len(peer_id)} characters, longer than {MAX_PEER_ID_LENGTH}"
        )
    try:
        multihash = b58decode(peer_id)
    except MalformedInput as err:
        raise InvalidPeerId(f"peer id is not valid base58btc: {err}") from err
    if multihash.startswith(SHA2_256_MULTIHASH_CODE):
        raise InvalidPeerId("peer id is a SHA-256 multihash: the key in it is not an Ed25519 key")
    if not multihash.startswith(IDENTITY_MULTIHASH_CODE):
        raise InvalidPeerId(f"multihash code is {multihash[:1].hex()!r}, expected '00' (identity)")
    if not multihash.startswith(MULTIHASH_PREFIX[:2]):
        raise InvalidPeerId(
            f"identity multihash length is {multihash[1:2].hex()!r}, expected "
            f"{MULTIHASH_PREFIX[1:2].hex()!r} (an Ed25519 public key protobuf)"
        )
    if not multihash.startswith(MULTIHASH_PREFIX):
        raise InvalidPeerId("the public key in the peer id is not an Ed25519 key")
    public_key = multihash[len(MULTIHASH_PREFIX) :]
    if len(public_key) != ED25519_PUBLIC_KEY_LENGTH:
        raise InvalidPeerId(
            f"Ed25519 key in peer id is {len(public_key)} bytes, "
            f"expected {ED25519_PUBLIC_KEY_LENGTH}"
        )
    return public_key
