"""End-to-end encryption of shared ACUs: content keys, and keys wrapped for people and circles.

Each shared ACU has its own random 32-byte content key; the ACU travels encrypted with it, and the
key travels wrapped: for a direct recipient with their X25519 key, or for a circle with the
circle's key, which is itself wrapped for each member. Every function is pure: keys, ephemeral
keys and the like are arguments drawn by the edge from the operating system's CSPRNG, never here.
Every primitive is libsodium's XSalsa20-Poly1305 (`SecretBox`) with keys and nonces derived by
keyed BLAKE2b under a personalisation string per use (domain separation), as in
`protocols.envelope`. SecretBox has no associated data, so what a ciphertext belongs to is bound
through its key or nonce: moved elsewhere, it no longer opens.

Content (`encrypt_content` / `decrypt_content`):

    nonce      = BLAKE2b-192(person=CONTENT_NONCE_PERSON, acu_id)
    ciphertext = XSalsa20-Poly1305(content_key, nonce, plaintext)

  The nonce is derived, not random and not carried: a content key encrypts exactly one ACU, and
  an ACU's content is fixed by its id (the id is the hash of the content), so a (key, nonce) pair
  never encrypts two different plaintexts. Even if the edge wrongly reused a content key for a
  second ACU, the nonce would differ with the ACU id. Binding the nonce to the ACU id also means
  a ciphertext presented as another ACU's does not open.

A key for one recipient (`wrap_key` / `unwrap_key`), an ECIES as in `seal`:

    shared        = X25519(ephemeral_private, recipient_public)
    kek           = BLAKE2b-256(key=shared, person=WRAP_KEY_PERSON,
                                ephemeral_public || recipient_public || context)
    nonce         = BLAKE2b-192(person=WRAP_NONCE_PERSON, ephemeral_public)
    encrypted_key = XSalsa20-Poly1305(kek, nonce, key)           -> WrappedKey(encrypted_key,
                                                                      ephemeral_pub_key)
  `context` (`KeyContext`) names what the key is for: a content key of ACU a under grant g
  (`KeyContext.content`), or version v of circle c's key (`KeyContext.circle`). Hashing both
  public keys binds the exchange (X25519 gives one secret for keys differing by a low-order
  point); hashing the context means a wrapped key cannot be moved to another ACU, grant, circle
  or version. A fresh ephemeral key per wrap (the edge's job) makes every KEK single-use, so the
  nonce can derive from the ephemeral key, as libsodium's sealed boxes do.

A content key under a circle key (`wrap_with_circle_key` / `unwrap_with_circle_key`):

    kek           = BLAKE2b-256(key=circle_key, person=CIRCLE_KEY_PERSON, context)
    nonce         = BLAKE2b-192(key=kek, person=CIRCLE_NONCE_PERSON, content_key)
    encrypted_key = XSalsa20-Poly1305(kek, nonce, content_key)   -> CircleWrappedKey(encrypted_key,
                                                                      nonce)
  with context = (ACU id, circle id, circle key version). The circle key wraps many content keys
  and no ephemeral key makes each wrap unique, so the nonce is derived from the context (through
  the KEK) *and* the content key it encrypts (a synthetic IV, as in SIV): one nonce per (context,
  content key), so even two different content keys wrapped for the same ACU and circle version
  never share a nonce. The receiver cannot derive it before decrypting, so it travels (24 bytes)
  and is checked again after decrypting.

Every failure to open (a flipped byte anywhere, the wrong key, another context, a low-order
ephemeral key) raises one error, `ShareUnreadable`, so the reasons cannot be told apart; the
cause is chained for the log.
"""

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Self

import nacl.bindings
import nacl.exceptions
import nacl.secret

from protocols.canonical import canonical_encode
from protocols.cid import check_content_id
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.identity_records import _check_bytes, _check_uint, _decode_fields, _take

__all__ = [
    "CIRCLE_WRAPPED_KEY_TYPE",
    "KEY_LENGTH",
    "WRAPPED_KEY_LENGTH",
    "WRAPPED_KEY_TYPE",
    "CircleWrappedKey",
    "KeyContext",
    "ShareUnreadable",
    "WrappedKey",
    "decrypt_content",
    "encrypt_content",
    "unwrap_key",
    "unwrap_with_circle_key",
    "wrap_key",
    "wrap_with_circle_key",
]

WRAPPED_KEY_TYPE: Final = "vivim.sharing.wrapped_key.v1"
CIRCLE_WRAPPED_KEY_TYPE: Final = "vivim.sharing.circle_wrapped_key.v1"
KEY_CONTEXT_TYPE: Final = "vivim.sharing.key_context.v1"
# BLAKE2b personalisation strings (at most 16 bytes), one per derivation.
CONTENT_NONCE_PERSON: Final = b"vivim.shr.cnonce"
WRAP_KEY_PERSON: Final = b"vivim.shr.wkey"
WRAP_NONCE_PERSON: Final = b"vivim.shr.wnonce"
CIRCLE_KEY_PERSON: Final = b"vivim.shr.ckey"
CIRCLE_NONCE_PERSON: Final = b"vivim.shr.cnon2"

# Content keys, circle keys and X25519 keys are all 32 bytes; a wrapped key is one plus the MAC.
KEY_LENGTH: Final = nacl.secret.SecretBox.KEY_SIZE
NONCE_LENGTH: Final = nacl.secret.SecretBox.NONCE_SIZE
WRAPPED_KEY_LENGTH: Final = KEY_LENGTH + nacl.secret.SecretBox.MACBYTES


class ShareUnreadable(RemoteProtocolError):
    """Shared content or a wrapped key does not open with the key and context given: altered,
    wrapped for someone else, moved to another ACU, grant or circle version, or garbage."""

    code = "share_unreadable"


@dataclass(frozen=True, kw_only=True)
class KeyContext:
    """What a wrapped key is for; hashed into the key that wraps it. Build it with `content` or
    `circle`; `to_bytes` is its canonical CBOR."""

    purpose: str
    fields: tuple[tuple[str, str | int], ...]

    @classmethod
    def content(cls, *, acu_id: str, grant_id: str) -> Self:
        """The content key of ACU `acu_id`, delivered under grant `grant_id`."""
        _local(check_content_id, acu_id)
        _local(check_content_id, grant_id)
        return cls(purpose="content_key", fields=(("acu_id", acu_id), ("grant_id", grant_id)))

    @classmethod
    def circle(cls, *, circle_id: str, version: int) -> Self:
        """Version `version` of circle `circle_id`'s key, wrapped for one member."""
        _local(check_content_id, circle_id)
        _local(_check_uint, "version", version)
        return cls(purpose="circle_key", fields=(("circle_id", circle_id), ("version", version)))

    def to_bytes(self) -> bytes:
        return canonical_encode(
            {"type": KEY_CONTEXT_TYPE, "purpose": self.purpose, **dict(self.fields)}
        )


@dataclass(frozen=True, kw_only=True)
class WrappedKey:
    """A key wrapped for one X25519 key: `encrypted_key` (48 bytes) and the wrap's
    `ephemeral_pub_key` (32). The context is not carried: the receiver knows what it expects."""

    encrypted_key: bytes
    ephemeral_pub_key: bytes

    def __post_init__(self) -> None:
        _check_bytes("encrypted_key", self.encrypted_key, WRAPPED_KEY_LENGTH)
        _check_bytes("ephemeral_pub_key", self.ephemeral_pub_key, KEY_LENGTH)

    def to_wire(self) -> bytes:
        return canonical_encode(
            {
                "type": WRAPPED_KEY_TYPE,
                "encrypted_key": self.encrypted_key,
                "ephemeral_pub_key": self.ephemeral_pub_key,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`."""
        fields = _decode_fields(data, WRAPPED_KEY_TYPE, ("encrypted_key", "ephemeral_pub_key"))
        return cls(
            encrypted_key=_take(fields, "encrypted_key", bytes),
            ephemeral_pub_key=_take(fields, "ephemeral_pub_key", bytes),
        )


@dataclass(frozen=True, kw_only=True)
class CircleWrappedKey:
    """A content key wrapped with a circle key: `encrypted_key` (48 bytes) and its synthetic
    `nonce` (24). The ACU id, circle id and version are not carried."""

    encrypted_key: bytes
    nonce: bytes

    def __post_init__(self) -> None:
        _check_bytes("encrypted_key", self.encrypted_key, WRAPPED_KEY_LENGTH)
        _check_bytes("nonce", self.nonce, NONCE_LENGTH)

    def to_wire(self) -> bytes:
        return canonical_encode(
            {
                "type": CIRCLE_WRAPPED_KEY_TYPE,
                "encrypted_key": self.encrypted_key,
                "nonce": self.nonce,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`."""
        fields = _decode_fields(data, CIRCLE_WRAPPED_KEY_TYPE, ("encrypted_key", "nonce"))
        return cls(
            encrypted_key=_take(fields, "encrypted_key", bytes),
            nonce=_take(fields, "nonce", bytes),
        )


# --- content --------------------------------------------------------------------------------------


def encrypt_content(content_key: bytes, acu_id: str, plaintext: bytes) -> bytes:
    """`plaintext` (the ACU `acu_id`) encrypted with its own `content_key`; the nonce is derived
    from the ACU id and not included (see the module docstring)."""
    _check_key("content_key", content_key)
    _local(check_content_id, acu_id)
    if not isinstance(plaintext, bytes):
        raise LocalProtocolError(f"plaintext is a {type(plaintext).__name__}, expected bytes")
    box = nacl.secret.SecretBox(content_key)
    return box.encrypt(plaintext, _content_nonce(acu_id)).ciphertext


def decrypt_content(content_key: bytes, acu_id: str, ciphertext: bytes) -> bytes:
    """The plaintext of ACU `acu_id`; `ShareUnreadable` if it does not open as that ACU's."""
    _check_key("content_key", content_key)
    _local(check_content_id, acu_id)
    if not isinstance(ciphertext, bytes):
        raise ShareUnreadable(f"ciphertext is a {type(ciphertext).__name__}, expected bytes")
    try:
        return nacl.secret.SecretBox(content_key).decrypt(ciphertext, _content_nonce(acu_id))
    except nacl.exceptions.CryptoError as err:
        raise ShareUnreadable("the content does not open with this key as this ACU") from err


# --- a key for one recipient ----------------------------------------------------------------------


def wrap_key(
    key: bytes,
    *,
    context: KeyContext,
    recipient_x25519_public_key: bytes,
    ephemeral_private_key: bytes,
) -> WrappedKey:
    """`key` (a content or circle key) wrapped for the holder of `recipient_x25519_public_key`,
    bound to `context`. `ephemeral_private_key` is 32 fresh random bytes, used for this wrap only.

    Raises `LocalProtocolError` for a key of the wrong length or a recipient key of low order.
    """
    _check_key("key", key)
    _check_key("recipient_x25519_public_key", recipient_x25519_public_key)
    _check_key("ephemeral_private_key", ephemeral_private_key)
    _check_context(context)
    ephemeral_public_key = nacl.bindings.crypto_scalarmult_base(ephemeral_private_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(ephemeral_private_key, recipient_x25519_public_key)
    except nacl.exceptions.CryptoError as err:
        raise LocalProtocolError("the recipient's key is of low order: cannot wrap for it") from err
    kek = _wrap_kek(shared, ephemeral_public_key, recipient_x25519_public_key, context)
    encrypted = nacl.secret.SecretBox(kek).encrypt(key, _wrap_nonce(ephemeral_public_key))
    return WrappedKey(encrypted_key=encrypted.ciphertext, ephemeral_pub_key=ephemeral_public_key)


def unwrap_key(
    wrapped: WrappedKey, *, context: KeyContext, recipient_x25519_private_key: bytes
) -> bytes:
    """The key inside `wrapped`, which must have been wrapped for our key and `context`;
    `ShareUnreadable` otherwise."""
    _check_key("recipient_x25519_private_key", recipient_x25519_private_key)
    _check_context(context)
    if not isinstance(wrapped, WrappedKey):
        raise LocalProtocolError(f"wrapped is a {type(wrapped).__name__}, expected WrappedKey")
    recipient_public_key = nacl.bindings.crypto_scalarmult_base(recipient_x25519_private_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(
            recipient_x25519_private_key, wrapped.ephemeral_pub_key
        )
        kek = _wrap_kek(shared, wrapped.ephemeral_pub_key, recipient_public_key, context)
        return nacl.secret.SecretBox(kek).decrypt(
            wrapped.encrypted_key, _wrap_nonce(wrapped.ephemeral_pub_key)
        )
    except nacl.exceptions.CryptoError as err:
        raise ShareUnreadable(
            "the wrapped key does not open with our key in this context (wrapped for another "
            "key or context, or altered)"
        ) from err


# --- a content key under a circle key -------------------------------------------------------------


def wrap_with_circle_key(
    content_key: bytes, circle_key: bytes, *, acu_id: str, circle_id: str, circle_key_version: int
) -> CircleWrappedKey:
    """ACU `acu_id`'s `content_key` wrapped with version `circle_key_version` of circle
    `circle_id`'s key (see the module docstring for the synthetic nonce)."""
    _check_key("content_key", content_key)
    _check_key("circle_key", circle_key)
    kek = _circle_kek(circle_key, acu_id, circle_id, circle_key_version)
    nonce = _circle_nonce(kek, content_key)
    encrypted = nacl.secret.SecretBox(kek).encrypt(content_key, nonce)
    return CircleWrappedKey(encrypted_key=encrypted.ciphertext, nonce=nonce)


def unwrap_with_circle_key(
    wrapped: CircleWrappedKey,
    circle_key: bytes,
    *,
    acu_id: str,
    circle_id: str,
    circle_key_version: int,
) -> bytes:
    """The content key inside `wrapped`, which must have been wrapped with `circle_key` for this
    ACU, circle and version; `ShareUnreadable` otherwise."""
    _check_key("circle_key", circle_key)
    if not isinstance(wrapped, CircleWrappedKey):
        raise LocalProtocolError(
            f"wrapped is a {type(wrapped).__name__}, expected CircleWrappedKey"
        )
    kek = _circle_kek(circle_key, acu_id, circle_id, circle_key_version)
    try:
        content_key = nacl.secret.SecretBox(kek).decrypt(wrapped.encrypted_key, wrapped.nonce)
    except nacl.exceptions.CryptoError as err:
        raise ShareUnreadable(
            "the wrapped key does not open with this circle key for this ACU and version"
        ) from err
    # Poly1305 already authenticated the nonce; the check keeps the nonce's one spelling.
    if not hmac.compare_digest(wrapped.nonce, _circle_nonce(kek, content_key)):
        raise ShareUnreadable("the wrapped key's nonce is not the one derived for it")
    return content_key


# --- derivations ----------------------------------------------------------------------------------


def _content_nonce(acu_id: str) -> bytes:
    return hashlib.blake2b(
        acu_id.encode(), digest_size=NONCE_LENGTH, person=CONTENT_NONCE_PERSON
    ).digest()


def _wrap_kek(
    shared: bytes, ephemeral_public_key: bytes, recipient_public_key: bytes, context: KeyContext
) -> bytes:
    return hashlib.blake2b(
        ephemeral_public_key + recipient_public_key + context.to_bytes(),
        digest_size=KEY_LENGTH,
        key=shared,
        person=WRAP_KEY_PERSON,
    ).digest()


def _wrap_nonce(ephemeral_public_key: bytes) -> bytes:
    return hashlib.blake2b(
        ephemeral_public_key, digest_size=NONCE_LENGTH, person=WRAP_NONCE_PERSON
    ).digest()


def _circle_kek(circle_key: bytes, acu_id: str, circle_id: str, version: int) -> bytes:
    _local(check_content_id, acu_id)
    _local(check_content_id, circle_id)
    _local(_check_uint, "circle_key_version", version)
    context = canonical_encode(
        {
            "type": KEY_CONTEXT_TYPE,
            "purpose": "content_key_in_circle",
            "acu_id": acu_id,
            "circle_id": circle_id,
            "version": version,
        }
    )
    return hashlib.blake2b(
        context, digest_size=KEY_LENGTH, key=circle_key, person=CIRCLE_KEY_PERSON
    ).digest()


def _circle_nonce(kek: bytes, content_key: bytes) -> bytes:
    return hashlib.blake2b(
        content_key, digest_size=NONCE_LENGTH, key=kek, person=CIRCLE_NONCE_PERSON
    ).digest()


def _check_key(name: str, value: object) -> None:
    """A 32-byte key passed by the caller (libsodium reads 32 bytes, whatever it gets)."""
    if not isinstance(value, bytes) or len(value) != KEY_LENGTH:
        raise LocalProtocolError(f"{name} is {KEY_LENGTH} bytes")


def _check_context(value: object) -> None:
    if not isinstance(value, KeyContext):
        raise LocalProtocolError(f"context is a {type(value).__name__}, expected KeyContext")


def _local(check: Callable[..., object], *args: object) -> None:
    """Run a value check on our own argument: its `MalformedInput` is our bug, not a peer's."""
    try:
        check(*args)
    except MalformedInput as err:
        raise LocalProtocolError(str(err)) from err
