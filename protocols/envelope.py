"""Sealed mail for store-and-forward: the `Letter` a sender writes, the `Envelope` a relay holds.

A relay holds mail for people who are offline, so it must learn as little as possible and be
unable to read, forge or alter anything without the recipient noticing. The relay sees only the
`Envelope`: its id, the recipient's DID, an expiry and the ciphertext (hence its size). Inside the
ciphertext is the `Letter`: who sent it (DID and device), what it carries (`payload_type`,
`payload`), when it was written, and the sender device's Ed25519 signature.

The letter's signature covers, besides every other field and a type tag, the *recipient's* DID,
although the letter does not carry it: a recipient can therefore not re-address a letter it
received to someone else (a re-sealed copy does not verify for the new recipient), and a letter
verifies only for the DID it was written to.

Sealing (`seal`) is an ECIES over X25519 built from libsodium primitives:

    shared     = X25519(ephemeral_private_key, recipient_public_key)
    key        = BLAKE2b-256(key=shared, person=SEAL_KEY_PERSON,
                             ephemeral_public || recipient_public || seal header)
    nonce      = BLAKE2b-192(person=SEAL_NONCE_PERSON, ephemeral_public)
    ciphertext = ephemeral_public || XSalsa20-Poly1305(key, nonce, letter.to_wire())

Why this shape:
- A fresh ephemeral key per envelope (an argument: this module draws no randomness) gives every
  envelope its own key, so the sender needs no state and the recipient's long-term key never
  encrypts anything directly. Because each key encrypts exactly one message, the nonce need not
  be random or travel: it is derived from the ephemeral public key, as libsodium's sealed boxes do.
  This is safe only while ephemeral keys are never reused: the edge draws each one from the
  operating system's CSPRNG, once per `seal`.
- Hashing both public keys into the key binds it to this exchange (as libsodium's crypto_kx
  does): X25519 gives the same shared secret for keys that differ by a low-order point, so
  without them one secret could be reached from several spellings of the ephemeral key.
- The seal header is the canonical CBOR of the envelope's relay-visible fields (recipient DID
  and expiry). SecretBox has no associated data, so these fields are bound through the key
  instead: a relay that changes the expiry or the recipient, even one that recomputes the id,
  turns the envelope into one that no longer opens.
- Poly1305 authenticates the ciphertext, so a flipped byte is caught before anything is parsed;
  the id (sha2-256 of the relay-visible fields) lets a relay and a recipient drop duplicates.

`open_envelope` raises `EnvelopeUnreadable` for every failure. The relay-side records, a
registration with a relay and the relay list, are in `protocols.mailbox_records` and re-exported.
"""

import functools
import hashlib
import re
from dataclasses import dataclass, replace
from typing import Final, Self

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.signing

from protocols.canonical import canonical_encode
from protocols.cid import check_content_id, content_id_of_bytes
from protocols.errors import (
    BadSignature,
    EnvelopeTooLarge,
    EnvelopeUnreadable,
    LocalProtocolError,
    MalformedInput,
)
from protocols.identity_records import (
    SIGNATURE_LENGTH,
    _check_bytes,
    _check_did,
    _check_uint,
    _decode_fields,
    _sign,
    _take,
    _verify,
)
from protocols.mailbox_records import RelayList, RelayRegistration, _check_peer_id
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key

__all__ = [
    "DEFAULT_TTL_MS",
    "ENVELOPE_TYPE",
    "LETTER_TYPE",
    "MAX_ENVELOPE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_TYPE_LENGTH",
    "SEAL_OVERHEAD",
    "BadSignature",
    "Envelope",
    "EnvelopeTooLarge",
    "EnvelopeUnreadable",
    "Letter",
    "MalformedInput",
    "RelayList",
    "RelayRegistration",
    "open_envelope",
    "seal",
]

LETTER_TYPE = "vivim.mailbox.letter.v1"
ENVELOPE_TYPE = "vivim.mailbox.envelope.v1"
SEAL_TYPE = "vivim.mailbox.seal.v1"  # the seal header's type tag (see the module docstring)
# BLAKE2b personalisation strings (at most 16 bytes): domain separation of the two derivations.
SEAL_KEY_PERSON: Final = b"vivim.mbox.key"
SEAL_NONCE_PERSON: Final = b"vivim.mbox.nonce"

# The ciphertext a relay takes at most, by default (the mailbox issue: "size limit default
# 1 MiB"). A relay may be configured lower; nothing larger exists as an Envelope.
MAX_ENVELOPE_BYTES = 1024 * 1024
# An X25519 public key before the box, and Poly1305's tag inside it.
X25519_KEY_LENGTH = 32
SEAL_OVERHEAD = X25519_KEY_LENGTH + nacl.secret.SecretBox.MACBYTES
# A letter's payload at most: the ciphertext bound less 1 KiB for the seal and the letter's other
# fields (at most about 400 bytes in CBOR; a test seals a letter with every field at its longest).
MAX_PAYLOAD_BYTES = MAX_ENVELOPE_BYTES - 1024
MAX_PAYLOAD_TYPE_LENGTH = 64
# Dotted lower-case names: "sync.ops", "peering.request".
_PAYLOAD_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_LETTER_FIELDS = (
    "sender_did", "sender_device", "payload_type", "payload", "created_at_ms", "signature"
)  # fmt: skip
# The mailbox issue's default time to live: 30 days.
DEFAULT_TTL_MS = 30 * 24 * 60 * 60 * 1000


@dataclass(frozen=True, kw_only=True)
class Letter:
    """The plaintext inside an envelope, signed by the sender's device for one recipient DID.

    That `sender_device` is a certified, unrevoked device of `sender_did` is not decided here:
    `verify` checks that the device's own key (its peer id) signed, and the caller checks the
    device against the sender's trust chain.
    """

    sender_did: str
    sender_device: str
    payload_type: str
    payload: bytes
    created_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("sender_did", self.sender_did)
        _check_peer_id("sender_device", self.sender_device)
        _check_payload_type(self.payload_type)
        if _check_type("payload", self.payload, bytes) > MAX_PAYLOAD_BYTES:
            raise EnvelopeTooLarge(
                f"payload is {len(self.payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
            )
        _check_uint("created_at_ms", self.created_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        recipient_did: str,
        sender_did: str,
        payload_type: str,
        payload: bytes,
        created_at_ms: int,
    ) -> Self:
        """A letter to `recipient_did`, signed by `signing_key`, the sending device's key (the
        device id is its peer id). Raises `LocalProtocolError` for a value it cannot hold."""
        try:
            _check_did("recipient_did", recipient_did)
            unsigned = cls(
                sender_did=sender_did,
                sender_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                payload_type=payload_type,
                payload=payload,
                created_at_ms=created_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot write this letter: {err}") from err
        signature = _sign(signing_key, unsigned.signed_bytes(recipient_did))
        return replace(unsigned, signature=signature)

    def _fields(self) -> dict[str, object]:
        return {
            "type": LETTER_TYPE,
            "payload": self.payload,
            "sender_did": self.sender_did,
            "payload_type": self.payload_type,
            "created_at_ms": self.created_at_ms,
            "sender_device": self.sender_device,
        }

    def signed_bytes(self, recipient_did: str) -> bytes:
        """The bytes the signature is over: every field but the signature, and the recipient."""
        return canonical_encode({**self._fields(), "recipient_did": recipient_did})

    def verify(self, recipient_did: str) -> None:
        """Raise `BadSignature` unless `sender_device`'s key signed this letter for
        `recipient_did` (a letter re-addressed to another DID does not verify)."""
        public_key = ed25519_public_key_from_peer_id(self.sender_device)
        _verify(public_key, self.signed_bytes(recipient_did), self.signature)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        fields = _decode_fields(data, LETTER_TYPE, _LETTER_FIELDS)
        return cls(
            sender_did=_take(fields, "sender_did", str),
            sender_device=_take(fields, "sender_device", str),
            payload_type=_take(fields, "payload_type", str),
            payload=_take(fields, "payload", bytes),
            created_at_ms=_take(fields, "created_at_ms", int),
            signature=_take(fields, "signature", bytes),
        )


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """What a relay holds: `id` is the content id of the canonical bytes of the other fields.

    The id is checked on construction (decoded or built), so an envelope that exists names its
    own content; `build` computes it. `ciphertext` is what `seal` made: at least the seal's
    overhead, at most `MAX_ENVELOPE_BYTES` (`EnvelopeTooLarge`, answered `too_large`).
    """

    id: str
    recipient_did: str
    expires_at_ms: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        check_content_id(self.id)
        _check_did("recipient_did", self.recipient_did)
        _check_uint("expires_at_ms", self.expires_at_ms)
        if _check_type("ciphertext", self.ciphertext, bytes) > MAX_ENVELOPE_BYTES:
            raise EnvelopeTooLarge(
                f"ciphertext is {len(self.ciphertext)} bytes, more than {MAX_ENVELOPE_BYTES}"
            )
        if len(self.ciphertext) <= SEAL_OVERHEAD:
            raise MalformedInput(
                f"ciphertext is {len(self.ciphertext)} bytes, too short for a sealed letter"
            )
        expected = content_id_of_bytes(
            _content_bytes(self.recipient_did, self.expires_at_ms, self.ciphertext)
        )
        if self.id != expected:
            raise MalformedInput(f"envelope id {self.id} does not match its content ({expected})")

    @classmethod
    def build(cls, *, recipient_did: str, expires_at_ms: int, ciphertext: bytes) -> Self:
        """The envelope of these fields, its id computed; raises `MalformedInput`."""
        _check_did("recipient_did", recipient_did)
        _check_uint("expires_at_ms", expires_at_ms)
        _check_type("ciphertext", ciphertext, bytes)
        content = _content_bytes(recipient_did, expires_at_ms, ciphertext)
        return cls(
            id=content_id_of_bytes(content),
            recipient_did=recipient_did,
            expires_at_ms=expires_at_ms,
            ciphertext=ciphertext,
        )

    @property
    def size(self) -> int:
        """The ciphertext's length: what a relay's size limit and quota count."""
        return len(self.ciphertext)

    def is_expired(self, now_ms: int) -> bool:
        """Whether the envelope is expired at `now_ms`: it lives strictly before its expiry."""
        return now_ms >= self.expires_at_ms

    def to_wire(self) -> bytes:
        return canonical_encode(
            {
                "id": self.id,
                "type": ENVELOPE_TYPE,
                "ciphertext": self.ciphertext,
                "recipient_did": self.recipient_did,
                "expires_at_ms": self.expires_at_ms,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes, checking the id; raises `MalformedInput`."""
        fields = _decode_fields(
            data, ENVELOPE_TYPE, ("id", "recipient_did", "expires_at_ms", "ciphertext")
        )
        return cls(
            id=_take(fields, "id", str),
            recipient_did=_take(fields, "recipient_did", str),
            expires_at_ms=_take(fields, "expires_at_ms", int),
            ciphertext=_take(fields, "ciphertext", bytes),
        )


def seal(
    letter: Letter,
    *,
    recipient_did: str,
    recipient_x25519_public_key: bytes,
    expires_at_ms: int,
    ephemeral_private_key: bytes,
) -> Envelope:
    """`letter` sealed to the recipient's X25519 key (see the module docstring).

    `ephemeral_private_key` is 32 fresh random bytes, never used for anything else. Raises
    `LocalProtocolError` for a letter not signed for `recipient_did`, a key of the wrong length
    or of low order (nothing can be sealed to it), or a value an envelope cannot hold.
    """
    _check_key("ephemeral_private_key", ephemeral_private_key)
    _check_key("recipient_x25519_public_key", recipient_x25519_public_key)
    try:
        letter.verify(recipient_did)
    except BadSignature as err:
        raise LocalProtocolError("the letter is not signed for this recipient") from err
    ephemeral_public_key = nacl.bindings.crypto_scalarmult_base(ephemeral_private_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(ephemeral_private_key, recipient_x25519_public_key)
    except nacl.exceptions.CryptoError as err:
        raise LocalProtocolError("the recipient's key is of low order: cannot seal to it") from err
    try:
        header = _seal_header(recipient_did, expires_at_ms)
        box = nacl.secret.SecretBox(
            _derive_key(shared, ephemeral_public_key, recipient_x25519_public_key, header)
        )
        sealed = box.encrypt(letter.to_wire(), _derive_nonce(ephemeral_public_key)).ciphertext
        return Envelope.build(
            recipient_did=recipient_did,
            expires_at_ms=expires_at_ms,
            ciphertext=ephemeral_public_key + sealed,
        )
    except MalformedInput as err:
        raise LocalProtocolError(f"cannot seal this letter: {err}") from err


def open_envelope(
    envelope: Envelope, *, recipient_did: str, recipient_x25519_private_key: bytes
) -> Letter:
    """The letter inside `envelope`, checked: sealed to our key with the envelope's recipient and
    expiry, a well-formed letter, signed by its sender device for `recipient_did`.

    Raises `EnvelopeUnreadable` (the cause chained) for any failure; `LocalProtocolError` for a
    private key that is not 32 bytes. Whether the sender device may act for the sender DID, and
    whether the envelope has expired, are the caller's to check.
    """
    _check_key("recipient_x25519_private_key", recipient_x25519_private_key)
    if envelope.recipient_did != recipient_did:
        raise EnvelopeUnreadable("the envelope is addressed to another DID")
    ephemeral_public_key = envelope.ciphertext[:X25519_KEY_LENGTH]
    recipient_public_key = _x25519_public_key(recipient_x25519_private_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(recipient_x25519_private_key, ephemeral_public_key)
        key = _derive_key(
            shared,
            ephemeral_public_key,
            recipient_public_key,
            _seal_header(envelope.recipient_did, envelope.expires_at_ms),
        )
        plaintext = nacl.secret.SecretBox(key).decrypt(
            envelope.ciphertext[X25519_KEY_LENGTH:], _derive_nonce(ephemeral_public_key)
        )
    except nacl.exceptions.CryptoError as err:
        raise EnvelopeUnreadable(
            "the envelope does not open with our key (sealed to another key, or altered)"
        ) from err
    try:
        letter = Letter.from_wire(plaintext)
    except MalformedInput as err:
        raise EnvelopeUnreadable(f"the envelope holds no valid letter: {err}") from err
    try:
        letter.verify(recipient_did)
    except BadSignature as err:
        raise EnvelopeUnreadable(
            "the letter's signature does not verify for us (forged, or written to someone else)"
        ) from err
    return letter


def _content_bytes(recipient_did: str, expires_at_ms: int, ciphertext: bytes) -> bytes:
    """The canonical bytes an envelope's id is the content id of."""
    return canonical_encode(
        {
            "type": ENVELOPE_TYPE,
            "ciphertext": ciphertext,
            "recipient_did": recipient_did,
            "expires_at_ms": expires_at_ms,
        }
    )


def _seal_header(recipient_did: str, expires_at_ms: int) -> bytes:
    """The relay-visible fields the key is bound to (SecretBox has no associated data)."""
    return canonical_encode(
        {"type": SEAL_TYPE, "recipient_did": recipient_did, "expires_at_ms": expires_at_ms}
    )


@functools.lru_cache(maxsize=8)
def _x25519_public_key(private_key: bytes) -> bytes:
    """Our public key, derived once: a recipient opens many envelopes with one private key."""
    return nacl.bindings.crypto_scalarmult_base(private_key)


def _derive_key(
    shared: bytes, ephemeral_public_key: bytes, recipient_public_key: bytes, header: bytes
) -> bytes:
    return hashlib.blake2b(
        ephemeral_public_key + recipient_public_key + header,
        digest_size=nacl.secret.SecretBox.KEY_SIZE,
        key=shared,
        person=SEAL_KEY_PERSON,
    ).digest()


def _derive_nonce(ephemeral_public_key: bytes) -> bytes:
    return hashlib.blake2b(
        ephemeral_public_key,
        digest_size=nacl.secret.SecretBox.NONCE_SIZE,
        person=SEAL_NONCE_PERSON,
    ).digest()


def _check_key(name: str, value: object) -> None:
    """A 32-byte X25519 key passed by the caller (libsodium reads 32 bytes, whatever it gets)."""
    if not isinstance(value, bytes) or len(value) != X25519_KEY_LENGTH:
        raise LocalProtocolError(f"{name} is {X25519_KEY_LENGTH} bytes")


def _check_type(name: str, value: object, kind: type[str] | type[bytes]) -> int:
    """The length of `value` if it is a `kind`; `MalformedInput` otherwise."""
    if not isinstance(value, kind):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected {kind.__name__}")
    return len(value)


def _check_payload_type(value: object) -> None:
    if _check_type("payload_type", value, str) > MAX_PAYLOAD_TYPE_LENGTH:
        raise MalformedInput(f"payload_type is longer than {MAX_PAYLOAD_TYPE_LENGTH} characters")
    if _PAYLOAD_TYPE.fullmatch(str(value)) is None:
        raise MalformedInput(f"payload_type {value!r:.80} is not a dotted name like 'sync.ops'")
