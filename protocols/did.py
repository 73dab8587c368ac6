"""A person's identifier: the `did:key` DID of their inception Ed25519 key.

The W3C CCG did:key method (https://w3c-ccg.github.io/did-method-key/) writes a public key as
`did:key:` + multibase(base58btc, multicodec(ed25519-pub, key)): the multibase prefix is 'z' and the
multicodec prefix of ed25519-pub (0xed) is its unsigned varint, the two bytes 0xed 0x01. Every
Ed25519 DID therefore starts `did:key:z6Mk`.

The DID never changes, even when the identity key is rotated, so the key read back from a DID is
the *inception* key, not necessarily the current one. Only the bare DID is accepted: a DID URL with
a path, query or fragment (`did:key:z6Mk...#z6Mk...`) is refused, so that one person has exactly one
spelling.
"""

from protocols.base58 import b58decode, b58encode
from protocols.errors import InvalidDid, LocalProtocolError, MalformedInput

__all__ = ["InvalidDid", "did_from_ed25519_public_key", "ed25519_public_key_from_did"]

DID_KEY_PREFIX = "did:key:"
BASE58BTC_MULTIBASE = "z"
# Unsigned varint of the multicodec code 0xed (ed25519-pub).
ED25519_PUB_MULTICODEC = b"\xed\x01"
ED25519_PUBLIC_KEY_LENGTH = 32
# An Ed25519 did:key is 56 characters; anything much longer is refused before the (quadratic)
# base58 decoding runs.
MAX_DID_LENGTH = 128


def did_from_ed25519_public_key(public_key: bytes) -> str:
    """The `did:key:z6Mk...` DID of a 32-byte Ed25519 public key."""
    if len(public_key) != ED25519_PUBLIC_KEY_LENGTH:
        raise LocalProtocolError(
            f"an Ed25519 public key is {ED25519_PUBLIC_KEY_LENGTH} bytes, got {len(public_key)}"
        )
    return DID_KEY_PREFIX + BASE58BTC_MULTIBASE + b58encode(ED25519_PUB_MULTICODEC + public_key)


def ed25519_public_key_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key a `did:key` DID is made of; raises `InvalidDid`."""
    if len(did) > MAX_DID_LENGTH:
        raise InvalidDid(f"DID is {len(did)} characters, longer than {MAX_DID_LENGTH}")
    if not did.startswith("did:"):
        raise InvalidDid(f"{did[:16]!r}... is not a DID (expected 'did:key:...')")
    method, colon, _ = did[len("did:") :].partition(":")
    if method != "key":
        raise InvalidDid(f"DID method is {method!r}, expected 'key'")
    if not colon:
        raise InvalidDid("DID has no method-specific identifier after 'did:key'")
    if any(char in did for char in "/?#"):
        raise InvalidDid("a DID URL (path, query or fragment) is not a bare DID")
    multibase_value = did[len(DID_KEY_PREFIX) :]
    if not multibase_value.startswith(BASE58BTC_MULTIBASE):
        raise InvalidDid(f"multibase prefix is {multibase_value[:1]!r}, expected 'z' (base58btc)")
    try:
        multicodec_value = b58decode(multibase_value[1:])
    except MalformedInput as err:
        raise InvalidDid(f"DID is not valid base58btc: {err}") from err
    if not multicodec_value.startswith(ED25519_PUB_MULTICODEC):
        raise InvalidDid(
            f"multicodec prefix is {multicodec_value[:2].hex()!r}, expected 'ed01' (ed25519-pub)"
        )
    public_key = multicodec_value[len(ED25519_PUB_MULTICODEC) :]
    if len(public_key) != ED25519_PUBLIC_KEY_LENGTH:
        raise InvalidDid(
            f"Ed25519 key in DID is {len(public_key)} bytes, expected {ED25519_PUBLIC_KEY_LENGTH}"
        )
    return public_key
