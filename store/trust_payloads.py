"""What a device or identity op may say (store.trust_state describes the three kinds).

Like store.vault_payloads, every rule depends on the op alone, so every replica accepts or
refuses the same op. Whether a certificate or revocation *counts* depends on the other records
and is decided by protocols.trust; here only its form is checked: the records parse, name the
op's DID, and name the op's entity.
"""

from collections.abc import Mapping
from typing import Final

from protocols.errors import BadSignature, InvalidPeerId, MalformedInput
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.mailbox_records import RelayList
from protocols.oplog import OpKind, SyncOperation
from protocols.peer_id import ed25519_public_key_from_peer_id

# Bounds on what one op carries: a chain longer than this is not a household's devices.
MAX_CHAIN: Final = 16
MAX_ROTATIONS: Final = 64
MAX_CUTS: Final = 64
MAX_SEQ: Final = 2**63 - 1

DEVICE_CREATE_FIELDS: Final = frozenset({"certificate", "chain", "rotations"})


def check_trust_payload(op: SyncOperation) -> None:
    """Raise `MalformedInput` unless `op` is a well-formed device or identity op."""
    payload = op.payload
    match op.entity_type, op.kind:
        case "device", OpKind.CREATE:
            _check_peer_id(op.entity_id)
            _fields(payload, DEVICE_CREATE_FIELDS, "device create")
            certificate = _certificate(op, payload["certificate"])
            if certificate.device_peer_id != op.entity_id:
                raise MalformedInput("a device create's certificate must be of the device it names")
            for wire in _list(payload, "chain", MAX_CHAIN):
                _certificate(op, wire)
            for wire in _list(payload, "rotations", MAX_ROTATIONS):
                _rotation(op, wire)
        case "device", OpKind.UPDATE:
            _check_peer_id(op.entity_id)
            _fields(payload, frozenset({"cuts"}), "device revocation")
            if op.entity_id == op.device:
                raise MalformedInput("a device cannot revoke itself")
            cuts = payload["cuts"]
            if not isinstance(cuts, dict) or not 0 < len(cuts) <= MAX_CUTS:
                raise MalformedInput(f"cuts must be a map of 1 to {MAX_CUTS} peer ids")
            for peer_id, seq in cuts.items():
                _check_peer_id(peer_id)
                if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
                    raise MalformedInput(f"the cut of {peer_id} must be a sequence number")
            if op.entity_id not in cuts:
                raise MalformedInput("a revocation's cuts must name the revoked device")
        case "identity", OpKind.UPDATE if "relay_list" in payload:
            if op.entity_id != op.author:
                raise MalformedInput("an identity op's entity is its author's DID")
            _fields(payload, frozenset({"relay_list"}), "relay list")
            _relay_list(op, payload["relay_list"])
        case "identity", OpKind.UPDATE:
            if op.entity_id != op.author:
                raise MalformedInput("an identity op's entity is its author's DID")
            _fields(payload, frozenset({"rotation"}), "identity key rotation")
            _rotation(op, payload["rotation"])
        case _:
            raise MalformedInput(
                f"no {op.kind.value} op for a {op.entity_type}: devices are certified and "
                "revoked, identity keys rotated, relay lists replaced"
            )


def _fields(payload: Mapping[str, object], expected: frozenset[str], what: str) -> None:
    if payload.keys() != expected:
        raise MalformedInput(
            f"{what} payload fields wrong: {sorted(payload)!r:.200}, expected {sorted(expected)}"
        )


def _list(payload: Mapping[str, object], name: str, bound: int) -> list[object]:
    value = payload[name]
    if not isinstance(value, list) or len(value) > bound:
        raise MalformedInput(f"{name} must be a list of at most {bound} records")
    return value


def _certificate(op: SyncOperation, wire: object) -> DeviceCertificate:
    if not isinstance(wire, bytes):
        raise MalformedInput("a certificate travels as its wire bytes")
    certificate = DeviceCertificate.from_wire(wire)
    if certificate.did != op.author:
        raise MalformedInput("a certificate in a device op must be for the op's author")
    return certificate


def _rotation(op: SyncOperation, wire: object) -> IdentityKeyRotation:
    if not isinstance(wire, bytes):
        raise MalformedInput("a key rotation travels as its wire bytes")
    rotation = IdentityKeyRotation.from_wire(wire)
    if rotation.did != op.author:
        raise MalformedInput("a key rotation in an op must be for the op's author")
    return rotation


def _relay_list(op: SyncOperation, wire: object) -> None:
    """A relay list of the op's author, signed by the op's device (it is shown outside the
    vault too, to senders, so it carries its own signature)."""
    if not isinstance(wire, bytes):
        raise MalformedInput("relay_list must be a relay list's wire bytes")
    relays = RelayList.from_wire(wire)
    if relays.recipient_did != op.author or relays.device != op.device:
        raise MalformedInput("a relay list in the vault is its author's, signed by the op's device")
    try:
        relays.verify()
    except BadSignature as err:
        raise MalformedInput(f"the relay list's signature does not verify: {err}") from err


def _check_peer_id(value: object) -> None:
    if not isinstance(value, str):
        raise MalformedInput("a device is named by its peer id")
    try:
        ed25519_public_key_from_peer_id(value)
    except InvalidPeerId as err:
        raise MalformedInput(f"not a device peer id: {value!r:.80}") from err
