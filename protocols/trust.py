"""Which devices act for a DID, worked out from signed records alone.

The inputs are the records the op log carries (store/TRUST_DESIGN.md): identity key rotations,
device certificates and revocations. The output is the same on every replica that holds the same
records, whatever order they arrived in, because nothing here depends on arrival order:

- **Identity keys** (`IdentityKeys`): version 1 is the DID's inception key, valid from the start
  of time. Version n+1 is the rotation record of that version signed by key n and stamped after
  key n took over; if several exist (only possible with a leaked key), the earliest
  (`rotated_at_ms`, then signature bytes) wins. Key n retires when key n+1 takes over. A
  signature by a key counts for times from when it took over until it retired: anything a
  retired key signs with a later time is refused. (A holder of a retired key can still claim an
  earlier time; no record format can stop that. Rotate and revoke together if a key leaks.)
- **Certificates**: a certificate approved by the identity counts if the identity key valid at
  its `issued_at_ms` signed it; one approved by a device counts if that device's key signed it
  and that device is trusted. A device is trusted if it is not revoked and some counting
  certificate reaches it from the identity key (a least fixpoint from the identity-approved
  ones, so approval cycles give nothing).
- **Revocations** are taken in the order of their ops' stamps. One counts if, with the
  revocations before it, its revoker is trusted, is not the target, and the target is not one of
  the revoker's own approvers up its chain (a stolen device cannot revoke the device that
  approved it). A revoked device is never trusted again.
- **Cascade**: a device whose every chain runs through a revoked device is no longer trusted
  (`UNTRUSTED`) until another trusted device approves it again (a new certificate).
- **Cuts**: a revocation names, for its target and for each device of the cascade, the last
  sequence number of that device's ops the revoker had accepted. Ops of a device that is not
  trusted are accepted up to its cut (the smallest any counting revocation names; 0 if none
  names it) and refused after it, whatever their stamps say: a revoked device cannot backdate
  its way back in.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from protocols.did import ed25519_public_key_from_did
from protocols.errors import BadSignature, MalformedInput, RemoteProtocolError
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.peer_id import ed25519_public_key_from_peer_id


class DeviceNotTrusted(RemoteProtocolError):
    """An op (or a request) from a device that is revoked, or no longer reached by a chain of
    trusted approvers, past its cut."""

    code = "device_not_trusted"


class UntrustedCredentials(RemoteProtocolError):
    """Credentials that do not make a device a trusted device of the DID they name
    (`check_credentials`)."""

    code = "untrusted_device"


@dataclass(frozen=True, kw_only=True, slots=True)
class IdentityKey:
    """One version of the identity's signing key and when it was the current one."""

    public_key: bytes
    version: int
    valid_from_ms: int
    retired_at_ms: int | None = None  # None for the current key

    def valid_at(self, at_ms: int) -> bool:
        return self.valid_from_ms <= at_ms and (
            self.retired_at_ms is None or at_ms < self.retired_at_ms
        )


@dataclass(frozen=True, kw_only=True)
class IdentityKeys:
    """The DID's signing keys in version order, and the rotation records that did not count."""

    did: str
    keys: tuple[IdentityKey, ...]
    rotations: tuple[IdentityKeyRotation, ...] = ()  # the ones that count, in version order
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_rotations(cls, did: str, rotations: Iterable[IdentityKeyRotation]) -> "IdentityKeys":
        inception = ed25519_public_key_from_did(did)
        keys = [IdentityKey(public_key=inception, version=1, valid_from_ms=0)]
        counted: list[IdentityKeyRotation] = []
        ignored: list[str] = []
        by_version: dict[int, list[IdentityKeyRotation]] = {}
        for rotation in set(rotations):
            if rotation.did != did:
                ignored.append(f"rotation to key {rotation.key_version} is for {rotation.did}")
                continue
            by_version.setdefault(rotation.key_version, []).append(rotation)
        while True:
            current = keys[-1]
            candidates = sorted(
                by_version.pop(current.version + 1, []),
                key=lambda r: (r.rotated_at_ms, r.signature),
            )
            chosen = None
            for rotation in candidates:
                problem = _rotation_problem(rotation, current)
                if problem is None and chosen is None:
                    chosen = rotation
                elif problem is not None:
                    ignored.append(problem)
                else:
                    ignored.append(f"a second rotation to key {rotation.key_version}")
            if chosen is None:
                break
            keys[-1] = IdentityKey(
                public_key=current.public_key,
                version=current.version,
                valid_from_ms=current.valid_from_ms,
                retired_at_ms=chosen.rotated_at_ms,
            )
            keys.append(
                IdentityKey(
                    public_key=chosen.new_public_key,
                    version=chosen.key_version,
                    valid_from_ms=chosen.rotated_at_ms,
                )
            )
            counted.append(chosen)
        for version in sorted(by_version):
            ignored.append(f"rotation to key {version} does not follow a key in force")
        return cls(did=did, keys=tuple(keys), rotations=tuple(counted), ignored=tuple(ignored))

    @property
    def current(self) -> IdentityKey:
        return self.keys[-1]

    def key_at(self, at_ms: int) -> IdentityKey | None:
        """The key that was current at `at_ms`."""
        for key in self.keys:
            if key.valid_at(at_ms):
                return key
        return None


def _rotation_problem(rotation: IdentityKeyRotation, current: IdentityKey) -> str | None:
    if rotation.rotated_at_ms <= current.valid_from_ms:
        return (
            f"rotation to key {rotation.key_version} is stamped before key {current.version} "
            "took over"
        )
    try:
        rotation.verify(current.public_key)
    except BadSignature:
        return f"rotation to key {rotation.key_version} is not signed by key {current.version}"
    return None


class DeviceStatus(StrEnum):
    TRUSTED = "trusted"
    REVOKED = "revoked"
    UNTRUSTED = "untrusted"  # no chain of trusted approvers reaches it (a revocation's cascade)


@dataclass(frozen=True, kw_only=True, slots=True)
class Revocation:
    """A revocation as its op says it: `order` is the op's (HLC packed, HLC node, op id)."""

    target: str
    revoker: str
    revoked_at_ms: int
    cuts: Mapping[str, int]
    order: tuple[int, str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceTrust:
    """What the records say about one device."""

    peer_id: str
    public_key: bytes
    status: DeviceStatus
    certificate: DeviceCertificate | None  # the one its trust comes through, else its first
    chain: tuple[str, ...]  # approvers from its own up to the DID (empty when not trusted)
    cut: int | None  # ops after this seq are refused; None while trusted
    revoked_at_ms: int | None = None
    revoked_by: str | None = None

    @property
    def approved_by(self) -> str | None:
        return self.chain[0] if self.chain else None


@dataclass(frozen=True, kw_only=True)
class TrustState:
    did: str
    keys: IdentityKeys
    devices: Mapping[str, DeviceTrust]
    ignored: tuple[str, ...] = field(default=())

    def accepts(self, peer_id: str, seq: int) -> bool:
        """Whether an op of `peer_id` at `seq` counts (module docstring: cuts)."""
        device = self.devices.get(peer_id)
        if device is None:
            return False
        return device.status is DeviceStatus.TRUSTED or (
            device.cut is not None and seq <= device.cut
        )

    def is_trusted(self, peer_id: str) -> bool:
        device = self.devices.get(peer_id)
        return device is not None and device.status is DeviceStatus.TRUSTED


def compute_trust(
    keys: IdentityKeys,
    certificates: Iterable[DeviceCertificate],
    revocations: Iterable[Revocation],
) -> TrustState:
    """The trust state the records give (module docstring)."""
    counted, ignored = _counting_certificates(keys, certificates)
    revoked: dict[str, list[Revocation]] = {}
    for revocation in sorted(revocations, key=lambda r: r.order):
        trusted = _trusted(counted, revoked.keys())
        problem = _revocation_problem(revocation, trusted)
        if problem is not None:
            ignored.append(problem)
            continue
        revoked.setdefault(revocation.target, []).append(revocation)
    trusted = _trusted(counted, revoked.keys())
    devices: dict[str, DeviceTrust] = {}
    known = {c.device_peer_id: c for c in reversed(counted)}  # each device's first certificate
    for peer_id in sorted(known.keys() | revoked.keys()):
        device_revocations = revoked.get(peer_id)
        certificate = trusted[peer_id] if peer_id in trusted else known.get(peer_id)
        public_key = (
            certificate.device_public_key
            if certificate is not None
            else ed25519_public_key_from_peer_id(peer_id)
        )
        if device_revocations:
            first = device_revocations[0]
            all_counting = [r for rs in revoked.values() for r in rs]
            devices[peer_id] = DeviceTrust(
                peer_id=peer_id,
                public_key=public_key,
                status=DeviceStatus.REVOKED,
                certificate=certificate,
                chain=(),
                cut=_cut(peer_id, all_counting),
                revoked_at_ms=first.revoked_at_ms,
                revoked_by=first.revoker,
            )
        elif peer_id in trusted:
            devices[peer_id] = DeviceTrust(
                peer_id=peer_id,
                public_key=public_key,
                status=DeviceStatus.TRUSTED,
                certificate=certificate,
                chain=_chain(peer_id, trusted, keys.did),
                cut=None,
            )
        else:
            all_counting = [r for rs in revoked.values() for r in rs]
            devices[peer_id] = DeviceTrust(
                peer_id=peer_id,
                public_key=public_key,
                status=DeviceStatus.UNTRUSTED,
                certificate=certificate,
                chain=(),
                cut=_cut(peer_id, all_counting),
            )
    return TrustState(did=keys.did, keys=keys, devices=devices, ignored=(*keys.ignored, *ignored))


def cascade_of(
    state: TrustState, target: str, certificates: Iterable[DeviceCertificate]
) -> list[str]:
    """The trusted devices that would stop being trusted if `target` were revoked now."""
    counted, _ = _counting_certificates(state.keys, certificates)
    revoked = {p for p, d in state.devices.items() if d.status is DeviceStatus.REVOKED}
    before = _trusted(counted, revoked)
    after = _trusted(counted, revoked | {target})
    return sorted(p for p in before if p not in after and p != target)


def _counting_certificates(
    keys: IdentityKeys, certificates: Iterable[DeviceCertificate]
) -> tuple[list[DeviceCertificate], list[str]]:
    """The certificates whose signatures hold, in a fixed order; and why the others do not."""
    counted: list[DeviceCertificate] = []
    ignored: list[str] = []
    unique = {c.signed_bytes() + c.signature: c for c in certificates}
    for certificate in sorted(
        unique.values(), key=lambda c: (c.issued_at_ms, c.approver, c.device_public_key)
    ):
        problem = _certificate_problem(keys, certificate)
        if problem is None:
            counted.append(certificate)
        else:
            ignored.append(problem)
    return counted, ignored


def _certificate_problem(keys: IdentityKeys, certificate: DeviceCertificate) -> str | None:
    name = f"certificate of {certificate.device_peer_id} by {certificate.approver}"
    if certificate.did != keys.did:
        return f"{name} is for {certificate.did}"
    if certificate.approved_by_identity:
        key = keys.key_at(certificate.issued_at_ms)
        if key is None:
            return f"{name} is dated when no identity key was in force"
        approver_key = key.public_key
    else:
        approver_key = ed25519_public_key_from_peer_id(certificate.approver)
    try:
        certificate.verify(approver_key)
    except BadSignature:
        return f"{name} is not signed by the key in force at its date"
    except MalformedInput as err:  # pragma: no cover - records are validated on construction
        return f"{name}: {err}"
    return None


def _trusted(
    counted: list[DeviceCertificate], revoked: Iterable[str]
) -> dict[str, DeviceCertificate]:
    """Trusted device -> the certificate its trust comes through (least fixpoint from the
    identity-approved certificates; `counted` is in a fixed order, so the choice is too)."""
    excluded = set(revoked)
    trusted: dict[str, DeviceCertificate] = {}
    changed = True
    while changed:
        changed = False
        for certificate in counted:
            device = certificate.device_peer_id
            if device in trusted or device in excluded:
                continue
            if certificate.approved_by_identity or certificate.approver in trusted:
                trusted[device] = certificate
                changed = True
    return trusted


def _chain(peer_id: str, trusted: Mapping[str, DeviceCertificate], did: str) -> tuple[str, ...]:
    chain: list[str] = []
    current = peer_id
    while current != did:
        approver = trusted[current].approver
        chain.append(approver)
        current = approver
    return tuple(chain)


def _revocation_problem(
    revocation: Revocation, trusted: Mapping[str, DeviceCertificate]
) -> str | None:
    name = f"revocation of {revocation.target} by {revocation.revoker}"
    if revocation.revoker not in trusted:
        return f"{name}: the revoker was not trusted then"
    if revocation.target == revocation.revoker:
        return f"{name}: a device cannot revoke itself"
    if revocation.target in _chain(revocation.revoker, trusted, _root(trusted, revocation)):
        return f"{name}: a device cannot revoke a device on its own chain of approvers"
    return None


def _root(trusted: Mapping[str, DeviceCertificate], revocation: Revocation) -> str:
    return trusted[revocation.revoker].did


def _cut(peer_id: str, revocations: Iterable[Revocation]) -> int:
    cuts = [r.cuts[peer_id] for r in revocations if peer_id in r.cuts]
    return min(cuts, default=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Vouched:
    """What a device's credentials proved: it is a trusted device of `did`, by `keys` (the
    identity keys the rotations given make) and `state` (the trust those certificates make)."""

    did: str
    keys: IdentityKeys
    state: TrustState


def check_credentials(
    certificate: bytes,
    chain: Iterable[bytes],
    rotations: Iterable[bytes],
    *,
    device: str,
    did: str | None = None,
) -> Vouched:
    """Check a device's credentials as a first op carries them (its certificate, the
    certificates above it, the identity's key rotations; wire bytes) without a vault: they must
    make `device` a trusted device of the certificate's DID, and that DID `did` if given. This
    is how a relay, a friend, a grantee or a stranger learns whom a peer speaks for.

    `MalformedInput` for bytes that do not decode; `UntrustedCredentials` for credentials that
    decode but do not prove it. A device revoked later is not known here: revocations travel in
    the owner's op log, which these peers do not hold."""
    cert = DeviceCertificate.from_wire(certificate)
    above = [DeviceCertificate.from_wire(wire) for wire in chain]
    keys_records = [IdentityKeyRotation.from_wire(wire) for wire in rotations]
    if cert.device_peer_id != device:
        raise UntrustedCredentials(f"the certificate is not {device}'s")
    if did is not None and cert.did != did:
        raise UntrustedCredentials(f"the certificate is for {cert.did}, not {did}")
    keys = IdentityKeys.from_rotations(cert.did, keys_records)
    state = compute_trust(keys, [cert, *above], [])
    if not state.is_trusted(device):
        raise UntrustedCredentials(
            f"the certificates given do not make {device} a device of {cert.did}"
        )
    return Vouched(did=cert.did, keys=keys, state=state)
