"""Sharing: the one-way ratchet (exhaustively), permissions, and the signed grant, revocation and
circle key records."""

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id, content_id_of_bytes
from protocols.did import did_from_ed25519_public_key
from protocols.errors import BadSignature, LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.sharing import (
    CIRCLE_KEY_TYPE,
    CIRCLE_SALT_LENGTH,
    GRANT_TYPE,
    MAX_CIRCLE_MEMBERS,
    REVOCATION_TYPE,
    CircleKeyVersion,
    GrantRevocation,
    Irrevocable,
    LevelLowered,
    Permission,
    RevocationMismatch,
    SharingGrant,
    SharingLevel,
    TargetKind,
    check_level_change,
    check_revocation,
    circle_id,
    is_allowed_change,
    raise_level,
)


def signing_key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed.to_bytes(32, "big"))


def did(seed: int) -> str:
    return did_from_ed25519_public_key(bytes(signing_key(seed).verify_key))


def device(key: nacl.signing.SigningKey) -> str:
    return peer_id_from_ed25519_public_key(bytes(key.verify_key))


OWNER, BOB, CAROL = did(1), did(2), did(3)
DEVICE_KEY, OTHER_DEVICE_KEY = signing_key(11), signing_key(12)
DEVICE, OTHER_DEVICE = device(DEVICE_KEY), device(OTHER_DEVICE_KEY)
ACU, OTHER_ACU = content_id({"acu": 1}), content_id({"acu": 2})
CIRCLE = circle_id(OWNER, b"\x01" * CIRCLE_SALT_LENGTH)
OTHER_CIRCLE = circle_id(OWNER, b"\x02" * CIRCLE_SALT_LENGTH)
NOW_MS = 1_700_000_000_000
LEVELS = list(SharingLevel)
ALL = Permission.VIEW | Permission.ANNOTATE | Permission.REMIX | Permission.RESHARE
# Every set of permissions a grant can hold: view and any of the other three.
PERMISSION_SETS = [
    Permission.VIEW | extra
    for extra in (
        Permission(0),
        Permission.ANNOTATE,
        Permission.REMIX,
        Permission.RESHARE,
        Permission.ANNOTATE | Permission.REMIX,
        Permission.ANNOTATE | Permission.RESHARE,
        Permission.REMIX | Permission.RESHARE,
        Permission.ANNOTATE | Permission.REMIX | Permission.RESHARE,
    )
]
TARGETS: dict[TargetKind, str | None] = {
    TargetKind.DID: BOB,
    TargetKind.CIRCLE: CIRCLE,
    TargetKind.NETWORK: None,
    TargetKind.GLOBAL: None,
}


def make_grant(
    kind: TargetKind = TargetKind.DID,
    *,
    permissions: Permission = Permission.VIEW,
    expires_at_ms: int | None = None,
    key: nacl.signing.SigningKey = DEVICE_KEY,
    acu_id: str = ACU,
    grantor_did: str = OWNER,
) -> SharingGrant:
    return SharingGrant.create(
        signing_key=key,
        grantor_did=grantor_did,
        acu_id=acu_id,
        target_kind=kind,
        target=TARGETS[kind],
        permissions=permissions,
        expires_at_ms=expires_at_ms,
        issued_at_ms=NOW_MS,
    )


def make_revocation(grant: SharingGrant | None = None) -> GrantRevocation:
    return GrantRevocation.create(
        signing_key=OTHER_DEVICE_KEY, grant=grant or make_grant(), revoked_at_ms=NOW_MS + 5
    )


def make_circle_version(members: tuple[str, ...] = (BOB, CAROL)) -> CircleKeyVersion:
    return CircleKeyVersion.create(
        signing_key=DEVICE_KEY,
        circle_id=CIRCLE,
        owner_did=OWNER,
        version=1,
        members=members,
        issued_at_ms=NOW_MS,
    )


def wire_fields(record: Any) -> dict[str, Any]:
    fields = canonical_decode(record.to_wire())
    assert isinstance(fields, dict)
    return fields


# --- the ratchet, every change from every level to every level ------------------------------------


@pytest.mark.parametrize(
    ("current", "requested"), list(itertools.product(LEVELS, LEVELS)), ids=lambda level: level.name
)
def test_every_change_from_every_level(current: SharingLevel, requested: SharingLevel) -> None:
    raised = raise_level(current, requested)
    assert raised == max(current, requested)
    assert raised >= current  # never lower
    assert raised >= requested
    assert isinstance(raised, SharingLevel)
    allowed = requested >= current
    assert is_allowed_change(current, requested) is allowed
    if allowed:
        assert check_level_change(current, requested) is requested
        assert raised is requested
    else:
        with pytest.raises(LevelLowered, match=f"cannot be lowered to {requested.name}") as info:
            check_level_change(current, requested)
        assert info.value.code == "sharing_level_lowered"
        assert raised is current  # a lower request leaves the mark where it was


def test_the_ratchet_table_in_full() -> None:
    # The same 16 cases written out by hand: rows are the current level, columns the requested.
    expected_allowed = [
        # SELF   CIRCLES NETWORK GLOBAL
        [True, True, True, True],  # from SELF
        [False, True, True, True],  # from CIRCLES
        [False, False, True, True],  # from NETWORK
        [False, False, False, True],  # from GLOBAL
    ]
    for (i, current), (j, requested) in itertools.product(enumerate(LEVELS), enumerate(LEVELS)):
        assert is_allowed_change(current, requested) is expected_allowed[i][j]
    assert [level.name for level in LEVELS] == ["SELF", "CIRCLES", "NETWORK", "GLOBAL"]
    assert SharingLevel.SELF < SharingLevel.CIRCLES < SharingLevel.NETWORK < SharingLevel.GLOBAL


@pytest.mark.parametrize("start", LEVELS, ids=lambda level: level.name)
def test_every_sequence_of_three_requests_only_ever_rises(start: SharingLevel) -> None:
    for requests in itertools.product(LEVELS, repeat=3):
        mark = start
        for requested in requests:
            new = raise_level(mark, requested)
            assert new >= mark
            mark = new
        assert mark == max(start, *requests)


@pytest.mark.parametrize("bad", [0, 1, "SELF", None, 3.0])
def test_the_ratchet_takes_only_sharing_levels(bad: Any) -> None:
    for call in (raise_level, is_allowed_change, check_level_change):
        with pytest.raises(LocalProtocolError, match="expected a SharingLevel"):
            call(bad, SharingLevel.SELF)
        with pytest.raises(LocalProtocolError, match="expected a SharingLevel"):
            call(SharingLevel.SELF, bad)


def test_level_lowered_is_a_remote_protocol_error() -> None:
    assert issubclass(LevelLowered, RemoteProtocolError)


@pytest.mark.parametrize(
    ("kind", "level"),
    [
        (TargetKind.DID, SharingLevel.CIRCLES),
        (TargetKind.CIRCLE, SharingLevel.CIRCLES),
        (TargetKind.NETWORK, SharingLevel.NETWORK),
        (TargetKind.GLOBAL, SharingLevel.GLOBAL),
    ],
)
def test_the_level_a_grant_puts_its_acu_at(kind: TargetKind, level: SharingLevel) -> None:
    grant = make_grant(kind)
    assert grant.level is level
    for current in LEVELS:
        assert raise_level(current, grant.level) == max(current, level)


# --- permissions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("permissions", PERMISSION_SETS, ids=str)
def test_permissions_round_trip(permissions: Permission) -> None:
    wire = permissions.to_wire()
    assert wire == sorted(wire)
    assert "view" in wire
    assert Permission.from_wire(wire) == permissions


def test_permission_wire_names() -> None:
    assert ALL.to_wire() == ["annotate", "remix", "reshare", "view"]
    assert Permission.VIEW.to_wire() == ["view"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("view", "expected a list"),
        (None, "expected a list"),
        ([], "lack view"),
        (["annotate"], "lack view"),
        (["view", "annotate"], "strictly ascending"),
        (["view", "view"], "strictly ascending"),
        (["admin", "view"], "unknown permission"),
        (["VIEW"], "unknown permission"),
        ([1], "not a name"),
        ([b"view"], "not a name"),
    ],
)
def test_bad_permission_lists_are_refused(value: object, match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        Permission.from_wire(value)


def test_create_adds_view_to_every_grant() -> None:
    grant = make_grant(permissions=Permission.REMIX)
    assert grant.permissions == Permission.VIEW | Permission.REMIX


# --- grants ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TargetKind))
@pytest.mark.parametrize("permissions", [Permission.VIEW, ALL], ids=str)
def test_grant_round_trip_and_verify(kind: TargetKind, permissions: Permission) -> None:
    expiry = None if kind is TargetKind.GLOBAL else NOW_MS + 1000
    grant = make_grant(kind, permissions=permissions, expires_at_ms=expiry)
    grant.verify()
    assert grant.grantor_device == DEVICE
    decoded = SharingGrant.from_wire(grant.to_wire())
    assert decoded == grant
    assert decoded.id == grant.id
    decoded.verify()
    assert decoded.to_wire() == grant.to_wire()


def test_grant_wire_form() -> None:
    grant = make_grant(TargetKind.NETWORK, permissions=Permission.ANNOTATE)
    assert wire_fields(grant) == {
        "type": GRANT_TYPE,
        "grantor_did": OWNER,
        "grantor_device": DEVICE,
        "acu_id": ACU,
        "target_kind": "network",
        "target": None,
        "permissions": ["annotate", "view"],
        "expires_at_ms": None,
        "issued_at_ms": NOW_MS,
        "signature": grant.signature,
    }


def test_the_grant_id_is_the_content_id_of_the_signed_fields() -> None:
    grant = make_grant()
    assert grant.id == content_id_of_bytes(grant.signed_bytes())
    fields = wire_fields(grant)
    del fields["signature"]
    assert grant.id == content_id(fields)
    ids = {make_grant(kind).id for kind in TargetKind}
    ids |= {make_grant(permissions=p).id for p in PERMISSION_SETS}
    assert len(ids) == len(TargetKind) + len(PERMISSION_SETS) - 1  # DID + VIEW is in both


GRANT_CHANGES: dict[str, object] = {
    "grantor_did": CAROL,
    "grantor_device": OTHER_DEVICE,
    "acu_id": OTHER_ACU,
    "target_kind": TargetKind.CIRCLE,
    "target": CAROL,
    "permissions": ALL,
    "expires_at_ms": NOW_MS + 7,
    "issued_at_ms": NOW_MS - 1,
}


@pytest.mark.parametrize("name", [*GRANT_CHANGES, "signature"])
def test_the_grant_signature_covers_every_field(name: str) -> None:
    grant = make_grant()
    changes: dict[str, Any]
    if name == "signature":
        changes = {"signature": bytes([grant.signature[0] ^ 1]) + grant.signature[1:]}
    elif name == "target_kind":
        changes = {"target_kind": TargetKind.CIRCLE, "target": CIRCLE}
    else:
        changes = {name: GRANT_CHANGES[name]}
    tampered = dataclasses.replace(grant, **changes)
    assert tampered != grant
    if name != "signature":
        assert tampered.id != grant.id
    with pytest.raises(BadSignature):
        tampered.verify()


def test_another_devices_signature_does_not_verify() -> None:
    grant = make_grant()
    other = make_grant(key=OTHER_DEVICE_KEY)
    with pytest.raises(BadSignature):
        dataclasses.replace(grant, signature=other.signature).verify()


def test_changing_any_grant_wire_byte_is_refused_or_breaks_the_signature() -> None:
    grant = make_grant(TargetKind.CIRCLE, permissions=ALL, expires_at_ms=NOW_MS + 10)
    wire = grant.to_wire()
    for position in range(len(wire)):
        for mask in (0x01, 0x80):
            changed = wire[:position] + bytes([wire[position] ^ mask]) + wire[position + 1 :]
            try:
                decoded = SharingGrant.from_wire(changed)
            except MalformedInput:
                continue
            assert decoded != grant
            with pytest.raises(BadSignature):
                decoded.verify()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"target": None}, "expected str"),
        ({"target": OWNER}, "its own grantor"),
        ({"target": "did:key:nope"}, "multibase"),
        ({"target_kind": TargetKind.CIRCLE, "target": BOB}, "content id"),
        ({"target_kind": TargetKind.CIRCLE, "target": None}, "content id"),
        ({"target_kind": TargetKind.NETWORK, "target": BOB}, "names no target"),
        ({"target_kind": TargetKind.GLOBAL, "target": CIRCLE}, "names no target"),
        ({"target_kind": "did"}, "target_kind"),
        ({"target_kind": TargetKind.GLOBAL, "target": None, "expires_at_ms": NOW_MS + 1}, "never"),
        ({"expires_at_ms": NOW_MS}, "not after issued_at_ms"),
        ({"expires_at_ms": NOW_MS - 1}, "not after issued_at_ms"),
        ({"expires_at_ms": 2**63}, "expires_at_ms"),
        ({"expires_at_ms": True}, "expected int"),
        ({"issued_at_ms": -1}, "issued_at_ms"),
        ({"issued_at_ms": 2**63}, "issued_at_ms"),
        ({"issued_at_ms": 1.5}, "expected int"),
        ({"permissions": Permission.ANNOTATE}, "lack view"),
        ({"permissions": Permission(0)}, "lack view"),
        ({"permissions": 1}, "expected Permission"),
        ({"acu_id": "bafy-not-an-id"}, "content id"),
        ({"acu_id": None}, "content id"),
        ({"grantor_did": BOB.upper()}, "did:key|multibase|base58|key"),
        ({"grantor_device": OWNER}, "peer id"),
        ({"signature": bytes(63)}, "63 bytes"),
        ({"signature": "x" * 64}, "expected bytes"),
    ],
)
def test_grant_values_are_checked_on_construction(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        dataclasses.replace(make_grant(), **changes)


def test_the_largest_times_are_accepted() -> None:
    grant = SharingGrant.create(
        signing_key=DEVICE_KEY,
        grantor_did=OWNER,
        acu_id=ACU,
        target_kind=TargetKind.DID,
        target=BOB,
        expires_at_ms=2**63 - 1,
        issued_at_ms=2**63 - 2,
    )
    assert SharingGrant.from_wire(grant.to_wire()) == grant


def test_create_refuses_bad_values_as_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="cannot make this grant"):
        SharingGrant.create(
            signing_key=DEVICE_KEY,
            grantor_did=OWNER,
            acu_id=ACU,
            target_kind=TargetKind.GLOBAL,
            expires_at_ms=NOW_MS + 1,
            issued_at_ms=NOW_MS,
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("grantor_did", 1),
        ("grantor_device", b"x"),
        ("acu_id", 5),
        ("target_kind", 0),
        ("target_kind", "person"),
        ("target", 7),
        ("target", b"did"),
        ("permissions", "view"),
        ("permissions", 1),
        ("expires_at_ms", "soon"),
        ("expires_at_ms", False),
        ("issued_at_ms", None),
        ("issued_at_ms", "1"),
        ("signature", "sig"),
    ],
)
def test_grant_wire_of_wrong_types_is_refused(name: str, value: object) -> None:
    fields = wire_fields(make_grant())
    fields[name] = value
    with pytest.raises(MalformedInput):
        SharingGrant.from_wire(canonical_encode(fields))


def test_grant_wire_with_missing_or_extra_fields_or_another_type_is_refused() -> None:
    fields = wire_fields(make_grant())
    for name in fields:
        if name == "type":
            continue
        short = {key: value for key, value in fields.items() if key != name}
        with pytest.raises(MalformedInput, match="missing"):
            SharingGrant.from_wire(canonical_encode(short))
    with pytest.raises(MalformedInput, match="unexpected"):
        SharingGrant.from_wire(canonical_encode({**fields, "id": make_grant().id}))
    with pytest.raises(MalformedInput, match="record type"):
        SharingGrant.from_wire(canonical_encode({**fields, "type": REVOCATION_TYPE}))
    with pytest.raises(MalformedInput, match="record type"):
        SharingGrant.from_wire(make_revocation().to_wire())
    with pytest.raises(MalformedInput):
        SharingGrant.from_wire(make_grant().to_wire() + b"\x00")
    with pytest.raises(MalformedInput):
        SharingGrant.from_wire(canonical_encode([1, 2]))


def test_a_grant_is_live_strictly_before_its_expiry() -> None:
    grant = make_grant(expires_at_ms=NOW_MS + 10)
    assert grant.is_live(NOW_MS)
    assert grant.is_live(NOW_MS + 9)
    assert not grant.is_live(NOW_MS + 10)
    assert make_grant().is_live(2**63 - 1)  # no expiry


@given(
    kind=st.sampled_from(list(TargetKind)),
    permissions=st.sampled_from(PERMISSION_SETS),
    issued=st.integers(0, 2**62),
    lifetime=st.none() | st.integers(1, 2**62 - 1),
)
def test_grant_round_trip_property(
    kind: TargetKind, permissions: Permission, issued: int, lifetime: int | None
) -> None:
    expiry = None if lifetime is None or kind is TargetKind.GLOBAL else issued + lifetime
    grant = SharingGrant.create(
        signing_key=DEVICE_KEY,
        grantor_did=OWNER,
        acu_id=ACU,
        target_kind=kind,
        target=TARGETS[kind],
        permissions=permissions,
        expires_at_ms=expiry,
        issued_at_ms=issued,
    )
    decoded = SharingGrant.from_wire(grant.to_wire())
    assert decoded == grant
    decoded.verify()


# --- revocations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [TargetKind.DID, TargetKind.CIRCLE, TargetKind.NETWORK])
def test_every_grant_but_a_global_one_can_be_revoked(kind: TargetKind) -> None:
    grant = make_grant(kind)
    assert grant.revocable
    revocation = make_revocation(grant)
    revocation.verify()
    assert revocation.grant_id == grant.id
    assert revocation.acu_id == grant.acu_id
    assert revocation.grantor_did == grant.grantor_did
    assert revocation.grantor_device == OTHER_DEVICE  # another device of the grantor
    check_revocation(revocation, grant)
    decoded = GrantRevocation.from_wire(revocation.to_wire())
    assert decoded == revocation
    assert decoded.id == revocation.id == content_id_of_bytes(revocation.signed_bytes())


def test_a_global_grant_cannot_be_revoked() -> None:
    grant = make_grant(TargetKind.GLOBAL)
    assert not grant.revocable
    with pytest.raises(Irrevocable, match="never be revoked") as info:
        make_revocation(grant)
    assert info.value.code == "irrevocable"


def test_a_revocation_naming_a_global_grant_is_refused_by_check_revocation() -> None:
    # Made by hand, as a peer could: the record alone cannot tell what its grant id names.
    grant = make_grant(TargetKind.GLOBAL)
    forged = dataclasses.replace(make_revocation(), grant_id=grant.id)
    forged = dataclasses.replace(
        forged, signature=OTHER_DEVICE_KEY.sign(forged.signed_bytes()).signature
    )
    forged.verify()
    with pytest.raises(Irrevocable) as info:
        check_revocation(forged, grant)
    assert info.value.code == "irrevocable"


def test_check_revocation_refuses_a_mismatch() -> None:
    grant = make_grant()
    revocation = make_revocation(grant)
    with pytest.raises(RevocationMismatch, match="names grant"):
        check_revocation(revocation, make_grant(TargetKind.CIRCLE))
    with pytest.raises(RevocationMismatch, match="only the grantor"):
        check_revocation(dataclasses.replace(revocation, grantor_did=BOB), grant)
    with pytest.raises(RevocationMismatch, match="another ACU"):
        check_revocation(dataclasses.replace(revocation, acu_id=OTHER_ACU), grant)
    assert RevocationMismatch.code == "revocation_mismatch"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("grantor_did", CAROL),
        ("grantor_device", DEVICE),
        ("grant_id", OTHER_ACU),
        ("acu_id", OTHER_ACU),
        ("revoked_at_ms", NOW_MS + 6),
    ],
)
def test_the_revocation_signature_covers_every_field(name: str, value: Any) -> None:
    revocation = make_revocation()
    tampered = dataclasses.replace(revocation, **{name: value})
    assert tampered.id != revocation.id
    with pytest.raises(BadSignature):
        tampered.verify()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"grant_id": "x"}, "content id"),
        ({"acu_id": None}, "content id"),
        ({"revoked_at_ms": -1}, "revoked_at_ms"),
        ({"revoked_at_ms": True}, "expected int"),
        ({"grantor_device": "12D3Koo"}, "peer id"),
        ({"signature": b""}, "0 bytes"),
    ],
)
def test_revocation_values_are_checked(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        dataclasses.replace(make_revocation(), **changes)


def test_revocation_wire_is_checked() -> None:
    fields = wire_fields(make_revocation())
    assert fields["type"] == REVOCATION_TYPE
    for name in ("grant_id", "revoked_at_ms", "signature"):
        with pytest.raises(MalformedInput):
            GrantRevocation.from_wire(canonical_encode({**fields, name: None}))
    with pytest.raises(MalformedInput, match="record type"):
        GrantRevocation.from_wire(make_grant().to_wire())


def test_create_a_revocation_of_something_else_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="expected SharingGrant"):
        GrantRevocation.create(signing_key=DEVICE_KEY, grant="grant", revoked_at_ms=NOW_MS)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot make this revocation"):
        GrantRevocation.create(signing_key=DEVICE_KEY, grant=make_grant(), revoked_at_ms=-5)


# --- circles --------------------------------------------------------------------------------------


def test_circle_ids() -> None:
    assert circle_id(OWNER, b"\x01" * CIRCLE_SALT_LENGTH) == CIRCLE
    assert OTHER_CIRCLE != CIRCLE
    assert circle_id(BOB, b"\x01" * CIRCLE_SALT_LENGTH) != CIRCLE
    assert content_id({"kind": "circle", "owner": OWNER, "salt": b"\x01" * 16}) == CIRCLE
    with pytest.raises(LocalProtocolError, match="salt"):
        circle_id(OWNER, b"\x01" * 15)
    with pytest.raises(LocalProtocolError):
        circle_id("did:web:example.com", b"\x01" * 16)


def test_circle_version_round_trip() -> None:
    version = make_circle_version((CAROL, BOB, CAROL))
    version.verify()
    assert version.members == tuple(sorted({BOB, CAROL}))
    assert version.owner_device == DEVICE
    decoded = CircleKeyVersion.from_wire(version.to_wire())
    assert decoded == version
    assert decoded.id == version.id
    assert wire_fields(version)["type"] == CIRCLE_KEY_TYPE


def test_removed_members() -> None:
    first = make_circle_version((BOB, CAROL))
    second = dataclasses.replace(make_circle_version((BOB,)), version=2)
    assert second.removed_since(first) == {CAROL}
    assert first.removed_since(second) == frozenset()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("circle_id", OTHER_CIRCLE),
        ("owner_did", did(4)),
        ("owner_device", OTHER_DEVICE),
        ("version", 2),
        ("members", (BOB,)),
        ("issued_at_ms", NOW_MS + 1),
    ],
)
def test_the_circle_signature_covers_every_field(name: str, value: Any) -> None:
    version = make_circle_version()
    with pytest.raises(BadSignature):
        dataclasses.replace(version, **{name: value}).verify()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"version": 0}, "first key version is 1"),
        ({"members": (CAROL, BOB) if CAROL > BOB else (BOB, CAROL)}, "strictly ascending"),
        ({"members": (BOB, BOB)}, "strictly ascending"),
        ({"members": [BOB]}, "expected a list"),
        ({"members": (OWNER,)}, "owner is not a member"),
        ({"members": ("not a did",)}, "did"),
        ({"circle_id": "circle"}, "content id"),
    ],
)
def test_circle_values_are_checked(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        dataclasses.replace(make_circle_version(), **changes)


def test_circle_member_bound() -> None:
    members = tuple(did(1000 + i) for i in range(MAX_CIRCLE_MEMBERS + 1))
    with pytest.raises(LocalProtocolError, match=f"more than {MAX_CIRCLE_MEMBERS}"):
        make_circle_version(members)
    largest = make_circle_version(members[:MAX_CIRCLE_MEMBERS])
    assert CircleKeyVersion.from_wire(largest.to_wire()) == largest


def test_circle_wire_of_unsorted_members_is_refused() -> None:
    fields = wire_fields(make_circle_version())
    fields["members"] = list(reversed(fields["members"]))
    with pytest.raises(MalformedInput, match="strictly ascending"):
        CircleKeyVersion.from_wire(canonical_encode(fields))


RECORD_MAKERS: list[Callable[[], Any]] = [make_grant, make_revocation, make_circle_version]


@pytest.mark.parametrize("make", RECORD_MAKERS, ids=["grant", "revocation", "circle"])
def test_a_signature_for_one_record_type_never_verifies_as_another(
    make: Callable[[], Any],
) -> None:
    record = make()
    for other in RECORD_MAKERS:
        if other is make:
            continue
        carried = dataclasses.replace(record, signature=other().signature)
        with pytest.raises(BadSignature):
            carried.verify()
