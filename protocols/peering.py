"""Peering (friends): the invite code, and the signed ConnectionRequest and ConnectionAcceptance.

**Invite code.** `vivim-node invite` prints `vivim-invite:` + lower-case base32 of the code's
canonical CBOR and the first 4 bytes of its SHA-256 (a mistyped character reads "copy it again",
as a pairing code does). It carries the inviter's DID, their `EncryptionKeyBinding` (so a request
can be sealed to them while they are offline), the multiaddrs of the device that made it, their
relays' multiaddrs, a one-time `token` (16 random bytes) and its expiry. The code is not signed:
whoever hands it over is trusted to hand the right one, and everything it says is checked when
used (the binding's signature here; the inviter's devices by their acceptance).

**Records.** Both are signed, like protocols.mailbox_records: Ed25519 by the sending *device*
(its peer id holds its key) over the canonical CBOR of every field but the signature, plus a
`type` entry for domain separation; the wire form is that map with `signature`; the record's id
is the content id of the signed bytes. Each carries the signing device's credentials
(certificate, the chain above it, the identity key rotations: what a relay's `Introduce` holds),
so the receiver learns which devices speak for the DID, and the person's encryption binding.
`check()` verifies all of it: the signature, that the credentials make the device a trusted
device of the DID (protocols.trust), that the binding is the DID's, signed by the identity key
valid when it was issued, and that the record is addressed to us. The signature alone only
proves the device key; a letter's too, which is why a request mailed through a relay is checked
the same way.

Pure: no clock (expiry is the store's: the token's), no I/O.
"""

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final, Self

import nacl.signing

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id_of_bytes
from protocols.errors import BadSignature, LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.identity_records import (
    SIGNATURE_LENGTH,
    EncryptionKeyBinding,
    _check_bytes,
    _check_did,
    _check_uint,
    _decode_fields,
    _sign,
    _take,
    _verify,
)
from protocols.pairing_code import _check_addrs, _check_str
from protocols.pairing_messages import MAX_CHAIN, MAX_IDENTITY_ROTATIONS, _check_blob, _check_blobs
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key
from protocols.trust import IdentityKeys, UntrustedCredentials, check_credentials

__all__ = [
    "ACCEPTANCE_TYPE",
    "INVITE_PREFIX",
    "REQUEST_TYPE",
    "TOKEN_LENGTH",
    "ConnectionAcceptance",
    "ConnectionRequest",
    "InvalidInvite",
    "InviteCode",
    "NotForUs",
    "UntrustedSender",
]

INVITE_TYPE = "vivim.peering.invite.v1"
INVITE_PREFIX = "vivim-invite:"
REQUEST_TYPE = "vivim.peering.request.v1"
ACCEPTANCE_TYPE = "vivim.peering.acceptance.v1"
TOKEN_LENGTH = 16  # 128 bits: not guessable, so attempts need no counting
CHECKSUM_LENGTH = 4
MAX_RELAYS = 8
MAX_MESSAGE = 500  # a friend request's note, in characters
# 8 addresses and 8 relays of 256 characters and a binding: about 6,000 characters of text.
MAX_INVITE_TEXT = 8192
_BASE32 = re.compile(r"[a-z2-7]*")


class InvalidInvite(MalformedInput):
    """The text is not a usable invite code; the message says what to do."""

    code = "invite_invalid"


class UntrustedSender(RemoteProtocolError):
    """The record's credentials do not make its signer a device of the DID it speaks for, or
    its encryption binding is not that DID's."""

    code = "untrusted_device"


class NotForUs(RemoteProtocolError):
    """The record is addressed to another DID (or answers a request we did not send)."""

    code = "not_for_us"


def _check_relays(value: object) -> None:
    if not isinstance(value, tuple):
        raise MalformedInput(f"relays is a {type(value).__name__}, expected a list")
    if len(value) > MAX_RELAYS:
        raise MalformedInput(f"relays has {len(value)} entries, more than {MAX_RELAYS}")
    if value:
        _check_addrs(value)
    for relay in value:
        if "/p2p/" not in relay:
            raise MalformedInput(f"relay {relay!r:.60} does not end in /p2p/<peer id>")


def _check_addr_list(value: object) -> None:
    if isinstance(value, tuple) and not value:
        return
    _check_addrs(value)


def check_binding(wire: bytes, did: str, keys: IdentityKeys) -> EncryptionKeyBinding:
    """The binding in `wire`, if it binds an encryption key to `did` and the identity key valid
    when it was issued signed it; `UntrustedSender` otherwise."""
    try:
        binding = EncryptionKeyBinding.from_wire(wire)
    except MalformedInput as err:
        raise UntrustedSender(f"the encryption binding does not decode: {err}") from err
    if binding.did != did:
        raise UntrustedSender(f"the encryption binding is for {binding.did}, not {did}")
    key = keys.key_at(binding.issued_at_ms)
    if key is None:
        raise UntrustedSender("no identity key was valid when the encryption binding was issued")
    try:
        binding.verify(key.public_key)
    except BadSignature as err:
        raise UntrustedSender("the encryption binding's signature does not verify") from err
    return binding


# --- the invite code ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InviteCode:
    """What `vivim-node invite` prints and `friend add` takes (module docstring). `token` is
    left out of the repr, so logging a code does not log its token."""

    did: str
    encryption_binding: bytes
    addrs: tuple[str, ...]
    relays: tuple[str, ...]
    token: bytes = field(repr=False)
    expires_at_ms: int

    def __post_init__(self) -> None:
        try:
            _check_did("did", self.did)
            _check_blob("encryption_binding", self.encryption_binding)
            _check_addrs(self.addrs)
            _check_relays(self.relays)
            _check_bytes("token", self.token, TOKEN_LENGTH)
            _check_uint("expires_at_ms", self.expires_at_ms)
        except MalformedInput as err:
            raise InvalidInvite(
                f"the invite code is not valid ({err}): ask your friend for a new one"
            ) from err

    def binding(self) -> EncryptionKeyBinding:
        """The inviter's encryption binding, checked against their DID's inception key (an
        invite carries no rotations; `InvalidInvite` if it does not check)."""
        try:
            return check_binding(
                self.encryption_binding, self.did, IdentityKeys.from_rotations(self.did, ())
            )
        except UntrustedSender as err:
            raise InvalidInvite(f"the invite code is not valid: {err}") from err

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms

    def _map(self) -> dict[str, object]:
        return {
            "type": INVITE_TYPE,
            "did": self.did,
            "encryption_binding": self.encryption_binding,
            "addrs": list(self.addrs),
            "relays": list(self.relays),
            "token": self.token,
            "expires_at_ms": self.expires_at_ms,
        }

    def to_text(self) -> str:
        cbor = canonical_encode(self._map())
        body = base64.b32encode(cbor + _checksum(cbor)).decode("ascii").rstrip("=").lower()
        return INVITE_PREFIX + body

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse a code a person pasted; `InvalidInvite`, saying what to do, if it is not one."""
        if not isinstance(text, str):
            raise InvalidInvite(f"not a vivim invite code: it is a {type(text).__name__}")
        text = text.strip().lower()
        if not text.startswith(INVITE_PREFIX):
            raise InvalidInvite("not a vivim invite code: it must start with vivim-invite:")
        if len(text) > MAX_INVITE_TEXT:
            raise InvalidInvite(
                f"the invite code is longer than {MAX_INVITE_TEXT} characters: copy the code alone"
            )
        data = _base32_decode(text[len(INVITE_PREFIX) :])
        cbor, checksum = data[:-CHECKSUM_LENGTH], data[-CHECKSUM_LENGTH:]
        if not cbor or checksum != _checksum(cbor):
            raise InvalidInvite(
                "the invite code is damaged (checksum does not match): copy it again"
            )
        try:
            fields = _decode_fields(
                cbor,
                INVITE_TYPE,
                ("did", "encryption_binding", "addrs", "relays", "token", "expires_at_ms"),
            )
            return cls(
                did=_take(fields, "did", str),
                encryption_binding=_take(fields, "encryption_binding", bytes),
                addrs=tuple(_take(fields, "addrs", list)),
                relays=tuple(_take(fields, "relays", list)),
                token=_take(fields, "token", bytes),
                expires_at_ms=_take(fields, "expires_at_ms", int),
            )
        except InvalidInvite:
            raise
        except MalformedInput as err:
            raise InvalidInvite(
                f"the invite code is not valid ({err}); it may come from another version of "
                "vivim: ask your friend for a new one"
            ) from err


def _checksum(cbor: bytes) -> bytes:
    return hashlib.sha256(cbor).digest()[:CHECKSUM_LENGTH]


def _base32_decode(body: str) -> bytes:
    """Lower-case unpadded base32, in its one spelling."""
    damaged = InvalidInvite(
        "the invite code is damaged (it has characters a code cannot have, or is cut short): "
        "copy it again"
    )
    if _BASE32.fullmatch(body) is None or len(body) % 8 in (1, 3, 6):
        raise damaged
    try:
        data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error as err:
        raise damaged from err
    if base64.b32encode(data).decode("ascii").rstrip("=").lower() != body:
        raise damaged
    return data


# --- the signed records -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Signed:
    """What a request and an acceptance share: who sends it (a DID and its device, with the
    device's credentials and the person's encryption binding), to whom, where to reach the
    sender (addrs of this device, relays of the DID), when, and the device's signature."""

    from_did: str
    from_device: str
    to_did: str
    encryption_binding: bytes
    addrs: tuple[str, ...]
    relays: tuple[str, ...]
    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]
    created_at_ms: int
    signature: bytes

    TYPE: ClassVar[str] = ""
    _EXTRA: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        _check_did("from_did", self.from_did)
        _check_str("from_device", self.from_device, 128)
        ed25519_public_key_from_peer_id(self.from_device)
        _check_did("to_did", self.to_did)
        if self.to_did == self.from_did:
            raise MalformedInput("a connection is between two people: to_did is from_did")
        _check_blob("encryption_binding", self.encryption_binding)
        _check_addr_list(self.addrs)
        _check_relays(self.relays)
        _check_blob("certificate", self.certificate)
        _check_blobs("chain", self.chain, MAX_CHAIN)
        _check_blobs("rotations", self.rotations, MAX_IDENTITY_ROTATIONS)
        _check_uint("created_at_ms", self.created_at_ms)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    def _extra(self) -> dict[str, object]:
        return {}

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": self.TYPE,
            "from_did": self.from_did,
            "from_device": self.from_device,
            "to_did": self.to_did,
            "encryption_binding": self.encryption_binding,
            "addrs": list(self.addrs),
            "relays": list(self.relays),
            "certificate": self.certificate,
            "chain": list(self.chain),
            "rotations": list(self.rotations),
            "created_at_ms": self.created_at_ms,
            **self._extra(),
        }

    def signed_bytes(self) -> bytes:
        return canonical_encode(self._unsigned_fields())

    @property
    def id(self) -> str:
        """The content id of the signed bytes."""
        return content_id_of_bytes(self.signed_bytes())

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    def verify(self) -> None:
        """Raise `BadSignature` unless `from_device`'s key signed this record."""
        _verify(
            ed25519_public_key_from_peer_id(self.from_device), self.signed_bytes(), self.signature
        )

    def check(self, our_did: str) -> EncryptionKeyBinding:
        """Everything the record proves, checked (module docstring); the sender's encryption
        binding. `BadSignature`, `UntrustedSender`, `NotForUs`."""
        if self.to_did != our_did:
            raise NotForUs(f"the {self._noun} is for {self.to_did}, not us")
        self.verify()
        try:
            vouched = check_credentials(
                self.certificate,
                self.chain,
                self.rotations,
                device=self.from_device,
                did=self.from_did,
            )
        except MalformedInput as err:
            raise UntrustedSender(f"the credentials do not decode: {err}") from err
        except UntrustedCredentials as err:
            raise UntrustedSender(str(err)) from err
        return check_binding(self.encryption_binding, self.from_did, vouched.keys)

    @property
    def _noun(self) -> str:
        return "record"

    @classmethod
    def _common(cls, fields: dict[str, object]) -> dict[str, object]:
        return {
            "from_did": _take(fields, "from_did", str),
            "from_device": _take(fields, "from_device", str),
            "to_did": _take(fields, "to_did", str),
            "encryption_binding": _take(fields, "encryption_binding", bytes),
            "addrs": tuple(_take(fields, "addrs", list)),
            "relays": tuple(_take(fields, "relays", list)),
            "certificate": _take(fields, "certificate", bytes),
            "chain": tuple(_take(fields, "chain", list)),
            "rotations": tuple(_take(fields, "rotations", list)),
            "created_at_ms": _take(fields, "created_at_ms", int),
            "signature": _take(fields, "signature", bytes),
        }

    @classmethod
    def _fields_of(cls, data: bytes) -> dict[str, object]:
        if not isinstance(data, bytes):
            raise MalformedInput(f"a record is bytes, not {type(data).__name__}")
        return _decode_fields(data, cls.TYPE, (*_COMMON, *cls._EXTRA))


_COMMON: Final = (
    "from_did",
    "from_device",
    "to_did",
    "encryption_binding",
    "addrs",
    "relays",
    "certificate",
    "chain",
    "rotations",
    "created_at_ms",
    "signature",
)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """The sending device's proof that it speaks for its DID, as wire bytes (store.devices
    has the same three; this keeps protocols/ free of store/)."""

    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class ConnectionRequest(_Signed):
    """`from_did` asks `to_did` to connect. `token` is the one-time token of `to_did`'s invite
    (None: unsolicited); `message` a short note for a person."""

    token: bytes | None
    message: str

    TYPE: ClassVar[str] = REQUEST_TYPE
    _EXTRA: ClassVar[tuple[str, ...]] = ("token", "message")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token is not None:
            _check_bytes("token", self.token, TOKEN_LENGTH)
        _check_str("message", self.message, MAX_MESSAGE)

    def _extra(self) -> dict[str, object]:
        return {"token": self.token, "message": self.message}

    @property
    def _noun(self) -> str:
        return "request"

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        from_did: str,
        to_did: str,
        credentials: Credentials,
        encryption_binding: bytes,
        addrs: tuple[str, ...],
        relays: tuple[str, ...],
        token: bytes | None,
        message: str,
        created_at_ms: int,
    ) -> Self:
        """A request signed by `signing_key`, this device's key; `LocalProtocolError` for a
        value the record cannot hold."""
        try:
            unsigned = cls(
                from_did=from_did,
                from_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                to_did=to_did,
                encryption_binding=encryption_binding,
                addrs=tuple(addrs),
                relays=tuple(relays),
                certificate=credentials.certificate,
                chain=tuple(credentials.chain),
                rotations=tuple(credentials.rotations),
                token=token,
                message=message,
                created_at_ms=created_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this request: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; `MalformedInput`. Does not verify anything (`check`)."""
        fields = cls._fields_of(data)
        token = fields["token"]
        if token is not None and not isinstance(token, bytes):
            raise MalformedInput(f"token is a {type(token).__name__}, expected bytes or null")
        return cls(
            **cls._common(fields),  # type: ignore[arg-type]
            token=token,
            message=_take(fields, "message", str),
        )


@dataclass(frozen=True, kw_only=True)
class ConnectionAcceptance(_Signed):
    """`from_did` accepts the request `request_id` that `to_did` sent. How much the acceptor
    trusts the requester is the acceptor's own business and is not in the record."""

    request_id: str

    TYPE: ClassVar[str] = ACCEPTANCE_TYPE
    _EXTRA: ClassVar[tuple[str, ...]] = ("request_id",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_str("request_id", self.request_id, 128)
        if not self.request_id:
            raise MalformedInput("request_id is empty")

    def _extra(self) -> dict[str, object]:
        return {"request_id": self.request_id}

    @property
    def _noun(self) -> str:
        return "acceptance"

    def check_answers(self, request: ConnectionRequest, our_did: str) -> EncryptionKeyBinding:
        """`check`, and that this accepts `request` (ours, sent to the acceptor)."""
        if self.request_id != request.id or self.from_did != request.to_did:
            raise NotForUs("the acceptance does not answer our request")
        return self.check(our_did)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        request: ConnectionRequest,
        credentials: Credentials,
        encryption_binding: bytes,
        addrs: tuple[str, ...],
        relays: tuple[str, ...],
        created_at_ms: int,
    ) -> Self:
        """An acceptance of `request`, signed by `signing_key` (a device of the request's
        target); `LocalProtocolError` for a value the record cannot hold."""
        try:
            unsigned = cls(
                from_did=request.to_did,
                from_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                to_did=request.from_did,
                encryption_binding=encryption_binding,
                addrs=tuple(addrs),
                relays=tuple(relays),
                certificate=credentials.certificate,
                chain=tuple(credentials.chain),
                rotations=tuple(credentials.rotations),
                request_id=request.id,
                created_at_ms=created_at_ms,
                signature=bytes(SIGNATURE_LENGTH),
            )
        except MalformedInput as err:
            raise LocalProtocolError(f"cannot make this acceptance: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; `MalformedInput`. Does not verify anything (`check`)."""
        fields = cls._fields_of(data)
        return cls(
            **cls._common(fields),  # type: ignore[arg-type]
            request_id=_take(fields, "request_id", str),
        )


def decode_record(data: bytes) -> ConnectionRequest | ConnectionAcceptance:
    """A request or an acceptance, by its `type`; `MalformedInput` for anything else."""
    value = canonical_decode(data)
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == REQUEST_TYPE:
        return ConnectionRequest.from_wire(data)
    if kind == ACCEPTANCE_TYPE:
        return ConnectionAcceptance.from_wire(data)
    raise MalformedInput(f"not a peering record (type {kind!r:.60})")
