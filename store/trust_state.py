"""The trust state of the vault's DID as its log gives it, and the tables that hold it.

Devices and identity keys are ops in the log like everything else (store/TRUST_DESIGN.md), so
they replicate through sync and mailboxes:

- `device` create, entity id = the device's peer id: {"certificate", "chain", "rotations"}: a
  certificate for the device, plus the certificates of its approver's chain and the identity key
  rotations, so the op can be checked by a replica that has seen nothing else of the DID (a
  device's first op introduces it this way);
- `device` update: a revocation, {"cuts": {peer id: last seq}}, signed (as every op) by the
  revoking device; its time is the op's stamp;
- `identity` update, entity id = the DID: {"rotation"}: an identity key rotation record.

`load_trust` gathers those records (with the certificates the device table holds from before the
log knew them: a vault's own bootstrap) and computes the state with `protocols.trust`;
`materialize_trust` writes it to the device table and the identity row. Both run inside the
caller's transaction.
"""

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Final, cast

from protocols.canonical import decode_stored
from protocols.hlc import Timestamp
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.trust import DeviceStatus, IdentityKeys, Revocation, TrustState, compute_trust

DEVICE: Final = "device"
IDENTITY: Final = "identity"
TRUST_ENTITY_TYPES: Final = frozenset({DEVICE, IDENTITY})


def vault_did(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT did FROM identity LIMIT 1").fetchone()
    if row is None:
        raise LookupError("the vault holds no identity")
    return cast(str, row[0])


def load_trust(
    conn: sqlite3.Connection,
    *,
    extra_certificates: Iterable[DeviceCertificate] = (),
    extra_rotations: Iterable[IdentityKeyRotation] = (),
) -> TrustState:
    """The trust state of the vault's DID from every trust record the vault holds, plus
    `extra_*` (records of an op being checked, not stored yet)."""
    did = vault_did(conn)
    certificates = [*_bootstrap_certificates(conn, did), *extra_certificates]
    rotations = list(extra_rotations)
    revocations: list[Revocation] = []
    for op_id, device, hlc_packed, entity_id, kind, wire in conn.execute(
        "SELECT id, device, hlc_packed, entity_id, kind, wire FROM sync_operation"
        " WHERE entity_type IN ('device', 'identity')"
    ):
        op = cast(Mapping[str, object], decode_stored(bytes(wire)))
        if op["author"] != did:
            continue
        payload = cast(Mapping[str, object], op["payload"])
        if "certificate" in payload:
            certificates.extend(certificates_of(payload))
            rotations.extend(rotations_of(payload))
        elif "rotation" in payload:
            rotations.append(IdentityKeyRotation.from_wire(cast(bytes, payload["rotation"])))
        elif kind == "update" and "cuts" in payload:
            revocations.append(
                Revocation(
                    target=entity_id,
                    revoker=device,
                    revoked_at_ms=Timestamp.from_packed(hlc_packed, device).wall_ms,
                    cuts=cast(Mapping[str, int], payload["cuts"]),
                    order=(hlc_packed, device, op_id),
                )
            )
    keys = IdentityKeys.from_rotations(did, rotations)
    return compute_trust(keys, certificates, revocations)


def all_certificates(conn: sqlite3.Connection) -> list[DeviceCertificate]:
    """Every device certificate the vault holds (a device approved twice has two)."""
    certificates = _bootstrap_certificates(conn, vault_did(conn))
    for (wire,) in conn.execute(
        "SELECT wire FROM sync_operation WHERE entity_type = 'device' AND kind = 'create'"
    ):
        op = cast(Mapping[str, object], decode_stored(bytes(wire)))
        certificates.extend(certificates_of(cast(Mapping[str, object], op["payload"])))
    return certificates


def certificates_of(payload: Mapping[str, object]) -> list[DeviceCertificate]:
    """The certificate of a device create payload, then those of its chain."""
    wires = [cast(bytes, payload["certificate"]), *cast(list[bytes], payload["chain"])]
    return [DeviceCertificate.from_wire(wire) for wire in wires]


def rotations_of(payload: Mapping[str, object]) -> list[IdentityKeyRotation]:
    return [IdentityKeyRotation.from_wire(wire) for wire in cast(list[bytes], payload["rotations"])]


def _bootstrap_certificates(conn: sqlite3.Connection, did: str) -> list[DeviceCertificate]:
    return [
        DeviceCertificate.from_wire(bytes(wire))
        for (wire,) in conn.execute(
            "SELECT certificate FROM device WHERE did = ? AND length(certificate) > 0", (did,)
        )
    ]


def materialize_trust(conn: sqlite3.Connection, state: TrustState) -> None:
    """Write `state` to the device table (one row per device it knows; rows it does not know
    are left alone) and the identity row (current key, its version, the retired keys)."""
    for device in state.devices.values():
        certificate = device.certificate
        conn.execute(
            "INSERT INTO device (peer_id, did, public_key, certificate, trust_chain, approved_by,"
            " created_at_ms, revoked_at_ms, status, revoked_by, cut_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (peer_id) DO UPDATE SET certificate = excluded.certificate,"
            " trust_chain = excluded.trust_chain, approved_by = excluded.approved_by,"
            " revoked_at_ms = coalesce(device.revoked_at_ms, excluded.revoked_at_ms),"
            " status = excluded.status, revoked_by = excluded.revoked_by,"
            " cut_seq = excluded.cut_seq",
            (
                device.peer_id,
                state.did,
                device.public_key,
                b"" if certificate is None else certificate.to_wire(),
                json.dumps(list(device.chain), separators=(",", ":")),
                device.approved_by or (certificate.approver if certificate else ""),
                # A device known only from its revocation: dated by it.
                device.revoked_at_ms or 0 if certificate is None else certificate.issued_at_ms,
                device.revoked_at_ms,
                device.status.value,
                device.revoked_by,
                None if device.status is DeviceStatus.TRUSTED else device.cut,
            ),
        )
    keys = state.keys
    retired = [
        {
            "public_key": k.public_key.hex(),
            "key_version": k.version,
            "retired_at_ms": k.retired_at_ms,
        }
        for k in keys.keys[:-1]
    ]
    conn.execute(
        "UPDATE identity SET signing_public_key = ?, key_version = ?, previous_keys = ?"
        " WHERE did = ?",
        (
            keys.current.public_key,
            keys.current.version,
            json.dumps(retired, separators=(",", ":")),
            state.did,
        ),
    )


def refresh_trust(conn: sqlite3.Connection) -> TrustState:
    """Compute the trust state from the log and write it (after a trust op was stored)."""
    state = load_trust(conn)
    materialize_trust(conn, state)
    return state
