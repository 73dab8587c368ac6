"""The signed op log: every change to replicated vault data is one `SyncOperation`.

Each device keeps its own log, a hash chain: its ops are numbered `seq` = 1, 2, 3, ... without gaps,
and each op names the id of the device's previous op in `prev` (None for the first). An op is
signed by the device key with Ed25519 over `canonical_encode` of a map of every field except the
signature plus `"type": "vivim.op.v1"` (domain separation, as for the identity records); its wire
form is the same map with `signature` added, and its id is the content id of the wire bytes.

    {"type": "vivim.op.v1", "author": DID, "device": peer id, "seq": n, "prev": op id | None,
     "hlc": [wall_ms, counter, device], "entity_type": "conversation" | "acu" | "acu_link",
     "entity_id": str, "kind": "create" | "update" | "delete", "payload": {...},
     "signature": 64 bytes}

Ops are validated on construction, whoever constructs them, and a bad value raises `MalformedInput`:
DID and peer id parse, `seq` >= 1, `prev` is a content id exactly when `seq` > 1, `hlc.node` is the
device, `payload` is a map of plain CBOR values. `entity_id` is any non-empty string of at most
256 characters here; its form for each entity type is checked where the payload is interpreted.
Whether an op is *acceptable* (signed by the device key, next in its chain, not from the future)
is `verify_op`'s decision, against the state the caller holds.

Every imported ACU costs one `sign`, one `to_wire` and one `id`, so that path does each piece of
work once: `sign` validates the fields once and encodes the signed map once (which is also what
validates the payload), the wire bytes are spliced from the signed bytes rather than encoded again,
and the wire bytes and id are cached on the (frozen) op. `from_wire` keeps the bytes it was given
as the op's wire bytes, and cuts the signed bytes out of them rather than encoding the fields
again: `canonical_decode` has checked the whole op, payload included, and its canonical map less
the signature entry is the signed map's canonical encoding; so a received op is checked once too.
"""

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self, cast

import nacl.exceptions
import nacl.signing

from protocols.canonical import canonical_decode, canonical_encode, decode_stored
from protocols.cid import CONTENT_ID_PATTERN, content_id_of_bytes
from protocols.did import ed25519_public_key_from_did
from protocols.errors import (
    BadSignature,
    ChainBreak,
    ClockDrift,
    LocalProtocolError,
    MalformedInput,
    SequenceGap,
    UnknownDevice,
)
from protocols.hlc import MAX_DRIFT_MS, Timestamp
from protocols.peer_id import ed25519_public_key_from_peer_id

__all__ = [
    "ENTITY_TYPES",
    "OP_TYPE",
    "BadSignature",
    "ChainBreak",
    "ClockDrift",
    "MalformedInput",
    "OpKind",
    "SequenceGap",
    "SyncOperation",
    "UnknownDevice",
    "op_from_checked_wire",
    "op_position",
    "verify_op",
    "verify_signature",
]

OP_TYPE = "vivim.op.v1"
# Messages are not entities of their own: they travel inside their conversation's ops, and an
# ACU's generated links inside its create op (store.vault_payloads), so an import costs one op per
# conversation plus one per ACU.
ENTITY_TYPES = frozenset({"conversation", "acu", "acu_link", "device", "identity"})

# Ed25519 public keys are 32 bytes, signatures 64.
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
# The store keeps `seq` in a SQLite INTEGER column, which is signed 64-bit.
MAX_SEQ = 2**63 - 1
# Entity ids are content ids (59 characters) in every entity type defined so far; the bound keeps
# an op from outside from carrying an arbitrarily long id.
MAX_ENTITY_ID_LENGTH = 256
_CONTENT_ID = CONTENT_ID_PATTERN

# The wire map is the signed map plus the `signature` entry. Canonical CBOR sorts map keys by
# length, then bytewise, so that entry (key of 9 characters, after "entity_id") always lands just
# before the one longer key, "entity_type", the last entry of the signed map. `_wire` splices it in
# there instead of encoding the whole map again; the tests check the result is `canonical_encode`
# of the wire map.
_SIGNED_MAP_HEAD = b"\xaa"  # a map of 10 entries
_WIRE_MAP_HEAD = b"\xab"  # a map of 11 entries
_ENTITY_TYPE_KEY = b"\x6bentity_type"  # text string of 11 bytes
# Text string of 9 bytes, then the head of a byte string of 64 (length in one extra byte).
_SIGNATURE_KEY_AND_HEAD = b"\x69signature\x58\x40"

_WIRE_FIELDS = frozenset(
    {
        "type",
        "author",
        "device",
        "seq",
        "prev",
        "hlc",
        "entity_type",
        "entity_id",
        "kind",
        "payload",
        "signature",
    }
)


class OpKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, kw_only=True)
class SyncOperation:
    """One signed change to one entity, by one device acting for `author`.

    Frozen; do not mutate `payload` either (its encoding is cached). Equal ops have equal ids, and
    an op hashes by its id.
    """

    author: str
    device: str
    seq: int
    prev: str | None
    hlc: Timestamp
    entity_type: str
    entity_id: str
    kind: OpKind
    payload: dict[str, object]
    signature: bytes

    def __post_init__(self) -> None:
        _did_public_key(_str("author", self.author))
        _peer_id_public_key(_str("device", self.device))
        seq = self.seq
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise MalformedInput(f"seq is a {type(seq).__name__}, expected int")
        if not 1 <= seq <= MAX_SEQ:
            raise MalformedInput(f"seq is {seq}, expected 1 <= seq <= 2**63 - 1")
        if seq == 1:
            if self.prev is not None:
                raise MalformedInput("prev must be None for the first op of a device (seq 1)")
        elif not isinstance(self.prev, str) or _CONTENT_ID.fullmatch(self.prev) is None:
            raise MalformedInput(f"prev of op seq {seq} must be an op id, got {self.prev!r:.80}")
        if not isinstance(self.hlc, Timestamp):
            raise MalformedInput(f"hlc is a {type(self.hlc).__name__}, expected a Timestamp")
        if self.hlc.node != self.device:
            raise MalformedInput("hlc.node is not the op's device")
        if _str("entity_type", self.entity_type) not in ENTITY_TYPES:
            raise MalformedInput(
                f"entity_type is {self.entity_type!r:.40}, expected one of {sorted(ENTITY_TYPES)}"
            )
        entity_id = _str("entity_id", self.entity_id)
        if not 0 < len(entity_id) <= MAX_ENTITY_ID_LENGTH:
            raise MalformedInput(
                f"entity_id is {len(entity_id)} characters, expected 1 to {MAX_ENTITY_ID_LENGTH}"
            )
        if not isinstance(self.kind, OpKind):
            raise MalformedInput(f"kind is {self.kind!r:.40}, expected an OpKind")
        if not isinstance(self.payload, dict):
            raise MalformedInput(f"payload is a {type(self.payload).__name__}, expected a map")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LENGTH:
            raise MalformedInput(f"signature must be {SIGNATURE_LENGTH} bytes")
        # Encoding the signed map checks the payload (the one field not checked above) and caches
        # the bytes that `sign` and `verify_op` need anyway; `from_wire` has them already, from
        # bytes `canonical_decode` checked.
        if "_signed" not in self.__dict__:
            _ = self._signed

    @classmethod
    def sign(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        author: str,
        device: str,
        seq: int,
        prev: str | None,
        hlc: Timestamp,
        entity_type: str,
        entity_id: str,
        kind: OpKind,
        payload: dict[str, object],
    ) -> Self:
        """A new op signed by `signing_key`, which must be the key of `device`.

        Raises `MalformedInput` for a bad field (as the constructor does) and `LocalProtocolError`
        if `signing_key` is not the device's key.
        """
        op = cls(
            author=author,
            device=device,
            seq=seq,
            prev=prev,
            hlc=hlc,
            entity_type=entity_type,
            entity_id=entity_id,
            kind=kind,
            payload=payload,
            signature=bytes(SIGNATURE_LENGTH),
        )
        if bytes(signing_key.verify_key) != _peer_id_public_key(device):
            raise LocalProtocolError("the signing key is not the key of the op's device")
        # The op was validated and its signed bytes cached with a placeholder signature, and no
        # one has seen it yet: setting the real signature now saves validating everything twice.
        # The wire bytes and id are computed lazily, so none were cached with the placeholder.
        object.__setattr__(op, "signature", signing_key.sign(op._signed).signature)
        return op

    def _unsigned_fields(self) -> dict[str, object]:
        # Keys in canonical order (shorter first, then bytewise), which makes encoding cheaper
        # (protocols.canonical); any order gives the same bytes.
        return {
            "hlc": self.hlc.to_wire(),
            "seq": self.seq,
            "kind": self.kind.value,
            "prev": self.prev,
            "type": OP_TYPE,
            "author": self.author,
            "device": self.device,
            "payload": self.payload,
            "entity_id": self.entity_id,
            "entity_type": self.entity_type,
        }

    @functools.cached_property
    def _signed(self) -> bytes:
        try:
            return canonical_encode(self._unsigned_fields())
        except LocalProtocolError as err:
            raise MalformedInput(f"payload is not a map of plain CBOR values: {err}") from err

    @functools.cached_property
    def _wire(self) -> bytes:
        signed = self._signed
        # The last "entity_type" key is the map's (its value is one of ENTITY_TYPES, which cannot
        # hold those bytes); the payload, before it, may contain them too.
        at = signed.rindex(_ENTITY_TYPE_KEY)
        return b"".join(
            (
                _WIRE_MAP_HEAD,
                signed[len(_SIGNED_MAP_HEAD) : at],
                _SIGNATURE_KEY_AND_HEAD,
                self.signature,
                signed[at:],
            )
        )

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over."""
        return self._signed

    def to_wire(self) -> bytes:
        """The op's canonical CBOR bytes: the signed map plus the signature."""
        return self._wire

    @functools.cached_property
    def id(self) -> str:
        """The op's content id: `content_id_of_bytes(self.to_wire())`."""
        return content_id_of_bytes(self._wire)

    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; raises `MalformedInput`. Does not verify the signature."""
        value = canonical_decode(data)
        if not isinstance(value, dict):
            raise MalformedInput(f"op is a {type(value).__name__}, expected a map")
        if value.get("type") != OP_TYPE:
            raise MalformedInput(f"record type is {value.get('type')!r:.80}, expected {OP_TYPE!r}")
        if value.keys() != _WIRE_FIELDS:
            missing = sorted(_WIRE_FIELDS - value.keys())
            extra = sorted(value.keys() - _WIRE_FIELDS)
            raise MalformedInput(f"op fields wrong: missing {missing}, unexpected {extra!r:.200}")
        kind = value["kind"]
        if not isinstance(kind, str) or kind not in _KINDS:
            raise MalformedInput(f"kind is {kind!r:.40}, expected one of {sorted(_KINDS)}")
        op = cls.__new__(cls)
        # canonical_decode checked that `data` is the canonical encoding of `value`, and the op's
        # wire map is `value` again, so these are the op's wire bytes; the signed bytes are cut
        # out of them when their shape allows (else the constructor encodes them).
        op.__dict__["_wire"] = data
        signed = _signed_from_wire(data, value)
        if signed is not None:
            op.__dict__["_signed"] = signed
        cls.__init__(
            op,
            author=value["author"],
            device=value["device"],
            seq=value["seq"],
            prev=value["prev"],
            hlc=Timestamp.from_wire(value["hlc"]),
            entity_type=value["entity_type"],
            entity_id=value["entity_id"],
            kind=_KINDS[kind],
            payload=value["payload"],
            signature=value["signature"],
        )
        return op


def op_from_checked_wire(data: bytes) -> SyncOperation:
    """The op whose wire bytes `SyncOperation.from_wire` accepted already (in this process or in
    a checking process), rebuilt without checking them again: a third of the cost. Never for
    bytes that were not checked."""
    value = cast(dict[str, Any], decode_stored(data))
    op = SyncOperation.__new__(SyncOperation)
    op.__dict__.update(
        author=value["author"],
        device=value["device"],
        seq=value["seq"],
        prev=value["prev"],
        hlc=Timestamp.from_wire(value["hlc"]),
        entity_type=value["entity_type"],
        entity_id=value["entity_id"],
        kind=_KINDS[value["kind"]],
        payload=value["payload"],
        signature=value["signature"],
        _wire=data,
    )
    return op


# Canonical CBOR sorts map keys by length, then bytewise: an op's wire map starts with "hlc"
# ([wall_ms, counter, node], the node being the device), then "seq".
_WIRE_START = _WIRE_MAP_HEAD + b"\x63hlc\x83"
_SEQ_KEY = b"\x63seq"


def op_position(data: bytes) -> tuple[str, int]:
    """The (device, seq) of an op from the first entries of its wire bytes, without decoding the
    rest: for a sync client to ask for the next batch while this one is still being checked.

    Checks nothing else: bytes that `from_wire` accepts give the op's device and seq; for others
    this raises `MalformedInput` or returns what their first entries say, and `from_wire`
    refuses them anyway."""
    if not data.startswith(_WIRE_START):
        raise MalformedInput("op bytes do not start as an op's wire map does")
    _, at = _cbor_head(data, len(_WIRE_START), 0)  # wall_ms
    _, at = _cbor_head(data, at, 0)  # counter
    length, at = _cbor_head(data, at, 3)  # the node: the device
    device = data[at : at + length]
    at += length
    if data[at : at + len(_SEQ_KEY)] != _SEQ_KEY:
        raise MalformedInput("op bytes do not have seq where an op's wire map has it")
    seq, _ = _cbor_head(data, at + len(_SEQ_KEY), 0)
    try:
        return device.decode(), seq
    except UnicodeDecodeError as err:
        raise MalformedInput("op device is not UTF-8") from err


def _cbor_head(data: bytes, at: int, major: int) -> tuple[int, int]:
    """The argument of the CBOR head at `at`, of major type `major` (0: an unsigned integer,
    3: a text string's length), and the offset after it."""
    if at >= len(data) or data[at] >> 5 != major:
        raise MalformedInput(f"op bytes hold no CBOR head of major type {major} at {at}")
    info = data[at] & 0x1F
    if info < 24:
        return info, at + 1
    if info > 27:
        raise MalformedInput(f"op bytes hold a CBOR head of unknown size at {at}")
    end = at + 1 + (1 << (info - 24))
    if end > len(data):
        raise MalformedInput("op bytes end inside a CBOR head")
    return int.from_bytes(data[at + 1 : end], "big"), end


def _signed_from_wire(data: bytes, value: dict[object, object]) -> bytes | None:
    """The signed bytes of an op whose canonical wire bytes `data` decode to `value`: the wire
    map less its signature entry, which is the entry just before the last one, "entity_type"
    (see `_wire`). None if the bytes are not laid out so (the constructor refuses such an op)."""
    entity_type = value["entity_type"]
    signature = value["signature"]
    if not isinstance(entity_type, str) or entity_type not in ENTITY_TYPES:
        return None
    if not isinstance(signature, bytes):
        return None
    at = len(data) - len(_ENTITY_TYPE_KEY) - len(canonical_encode(entity_type))
    start = at - len(_SIGNATURE_KEY_AND_HEAD) - SIGNATURE_LENGTH
    if (
        data[:1] != _WIRE_MAP_HEAD
        or data[start:at] != _SIGNATURE_KEY_AND_HEAD + signature
        or data[at : at + len(_ENTITY_TYPE_KEY)] != _ENTITY_TYPE_KEY
    ):
        return None
    return b"".join((_SIGNED_MAP_HEAD, data[len(_WIRE_MAP_HEAD) : start], data[at:]))


_KINDS = {kind.value: kind for kind in OpKind}


def verify_op(
    op: SyncOperation,
    *,
    device_public_key: bytes | None,
    expected_seq: int,
    expected_prev: str | None,
    now_ms: int,
    max_drift_ms: int = MAX_DRIFT_MS,
    signature_checked: bool = False,
) -> None:
    """Raise the typed error for the first reason `op` cannot be appended to its device's log.

    The caller holds the state: `device_public_key` is the key of `op.device` if the device has a
    valid (certified, unrevoked) certificate for `op.author`, else None; `expected_seq` and
    `expected_prev` are the next position in that device's log (1 and None for an empty log); and
    `now_ms` is our wall clock. The checks, in order:

    - `UnknownDevice` if `device_public_key` is None;
    - `BadSignature` if the key is not the device's or the signature does not verify;
    - `ClockDrift` if `op.hlc.wall_ms > now_ms + max_drift_ms`;
    - `SequenceGap` if `op.seq > expected_seq` (earlier ops are missing; park it);
    - `ChainBreak` if `op.seq < expected_seq` (another op holds that position: equivocation), or
      `op.prev != expected_prev` (the op does not extend the chain the caller holds).

    An op whose id is already stored is a duplicate, not a chain break: the caller checks that
    first. Raises `LocalProtocolError` for arguments that cannot be right (a key that is not 32
    bytes, `expected_prev` set for `expected_seq` 1 or missing after it). With
    `signature_checked`, the caller already ran `verify_signature` (in a checking process: sync
    does) and the key is only compared.
    """
    if device_public_key is None:
        raise UnknownDevice(f"no valid certificate for device {op.device} of {op.author}")
    if not isinstance(device_public_key, bytes) or len(device_public_key) != KEY_LENGTH:
        raise LocalProtocolError(f"an Ed25519 public key is {KEY_LENGTH} bytes")
    if not isinstance(expected_seq, int) or isinstance(expected_seq, bool) or expected_seq < 1:
        raise LocalProtocolError(f"expected_seq must be an int >= 1, got {expected_seq!r}")
    if (expected_prev is None) != (expected_seq == 1):
        raise LocalProtocolError("expected_prev must be None exactly when expected_seq is 1")
    for name, value in (("now_ms", now_ms), ("max_drift_ms", max_drift_ms)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise LocalProtocolError(f"{name} must be an int >= 0, got {value!r}")
    if device_public_key != _peer_id_public_key(op.device):
        raise BadSignature("the key given is not the key of the op's device")
    if not signature_checked:
        verify_signature(op)
    if op.hlc.wall_ms > now_ms + max_drift_ms:
        raise ClockDrift(
            f"op stamp is {op.hlc.wall_ms - now_ms} ms ahead of our clock, "
            f"more than the {max_drift_ms} ms allowed"
        )
    if op.seq > expected_seq:
        raise SequenceGap(expected_seq, op.seq)
    if op.seq < expected_seq:
        raise ChainBreak(
            f"device {op.device} already has an op at seq {op.seq} (next is {expected_seq}): "
            "a second op at a taken position"
        )
    if op.prev != expected_prev:
        raise ChainBreak(
            f"op {op.device} #{op.seq} names prev {op.prev}, but the log holds {expected_prev}"
        )


def verify_signature(op: SyncOperation) -> None:
    """`BadSignature` unless the op is signed by the key of its device. A device id is the peer
    id of its Ed25519 key, so this needs no state; whether that device may write for the op's
    author is the caller's question (`verify_op`)."""
    try:
        nacl.signing.VerifyKey(_peer_id_public_key(op.device)).verify(op._signed, op.signature)
    except nacl.exceptions.BadSignatureError as err:
        raise BadSignature(f"signature of op {op.device} #{op.seq} does not verify") from err


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected str")
    return value


# A vault holds ops of a handful of authors and devices; parsing their ids once each keeps the
# base58 decoding off the per-op path. Errors are not cached (lru_cache stores only results).
_did_public_key = functools.lru_cache(maxsize=1024)(ed25519_public_key_from_did)
_peer_id_public_key = functools.lru_cache(maxsize=1024)(ed25519_public_key_from_peer_id)
