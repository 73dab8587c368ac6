"""Access resolution, table-driven: owner, global, direct, circle, network, denied; expiry,
revocation, and grants combining to the most permissive."""

import dataclasses
from collections.abc import Collection, Mapping
from typing import NamedTuple

import nacl.signing
import pytest

from protocols.cid import content_id
from protocols.did import did_from_ed25519_public_key
from protocols.sharing import (
    CIRCLE_SALT_LENGTH,
    GrantRevocation,
    Permission,
    SharingGrant,
    TargetKind,
    circle_id,
)
from store.access import ALL_PERMISSIONS, RESOLUTION_ORDER, Access, AccessRule, resolve_access


def signing_key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed.to_bytes(32, "big"))


def did(seed: int) -> str:
    return did_from_ed25519_public_key(bytes(signing_key(seed).verify_key))


ALICE, BOB, CAROL, DAVE, ERIN = did(1), did(2), did(3), did(4), did(5)
ALICE_DEVICE, CAROL_DEVICE = signing_key(11), signing_key(13)
ACU, OTHER_ACU = content_id({"acu": 1}), content_id({"acu": 2})
FRIENDS = circle_id(ALICE, b"\x01" * CIRCLE_SALT_LENGTH)
WORK = circle_id(ALICE, b"\x02" * CIRCLE_SALT_LENGTH)
NOW = 1_700_000_000_000
V, A, R, S = Permission.VIEW, Permission.ANNOTATE, Permission.REMIX, Permission.RESHARE
NONE = Permission(0)


def grant(
    kind: TargetKind,
    target: str | None = None,
    permissions: Permission = V,
    *,
    expires_at_ms: int | None = None,
    acu_id: str = ACU,
    grantor: str = ALICE,
    key: nacl.signing.SigningKey = ALICE_DEVICE,
    issued_at_ms: int = NOW - 1000,
) -> SharingGrant:
    return SharingGrant.create(
        signing_key=key,
        grantor_did=grantor,
        acu_id=acu_id,
        target_kind=kind,
        target=target,
        permissions=permissions,
        expires_at_ms=expires_at_ms,
        issued_at_ms=issued_at_ms,
    )


def revoke(revoked: SharingGrant) -> GrantRevocation:
    return GrantRevocation.create(signing_key=ALICE_DEVICE, grant=revoked, revoked_at_ms=NOW - 10)


TO_BOB = grant(TargetKind.DID, BOB)
TO_BOB_ANNOTATE = grant(TargetKind.DID, BOB, A)
TO_BOB_LATER = grant(TargetKind.DID, BOB, R, issued_at_ms=NOW - 500)
TO_CAROL = grant(TargetKind.DID, CAROL, A | S)
TO_FRIENDS = grant(TargetKind.CIRCLE, FRIENDS, R)
TO_WORK = grant(TargetKind.CIRCLE, WORK, A)
TO_NETWORK = grant(TargetKind.NETWORK)
TO_NETWORK_RESHARE = grant(TargetKind.NETWORK, permissions=S)
TO_EVERYONE = grant(TargetKind.GLOBAL)
TO_EVERYONE_REMIX = grant(TargetKind.GLOBAL, permissions=R)
EXPIRING = grant(TargetKind.DID, BOB, A, expires_at_ms=NOW + 1)
EXPIRED = grant(TargetKind.DID, BOB, A, expires_at_ms=NOW)
EXPIRED_CIRCLE = grant(TargetKind.CIRCLE, FRIENDS, R, expires_at_ms=NOW - 1)
FOR_OTHER_ACU = grant(TargetKind.DID, BOB, A, acu_id=OTHER_ACU)
BY_CAROL = grant(TargetKind.DID, BOB, A, grantor=CAROL, key=CAROL_DEVICE)
# A revocation of the global grant, forged by hand (create refuses it): it must change nothing.
FORGED_GLOBAL_REVOCATION = dataclasses.replace(revoke(TO_BOB), grant_id=TO_EVERYONE.id)
# A revocation of Alice's grant to Bob claimed by Carol: not the grantor, so it changes nothing.
CAROLS_REVOCATION = dataclasses.replace(revoke(TO_BOB), grantor_did=CAROL)
CIRCLES: dict[str, frozenset[str]] = {FRIENDS: frozenset({BOB, CAROL}), WORK: frozenset({DAVE})}
CONNECTIONS = frozenset({BOB, CAROL})


class Row(NamedTuple):
    requester: str
    grants: tuple[SharingGrant, ...]
    permissions: Permission
    rules: tuple[AccessRule, ...]
    revocations: tuple[GrantRevocation, ...] = ()
    circles: Mapping[str, Collection[str]] = CIRCLES
    connections: Collection[str] = CONNECTIONS
    now: int = NOW


# Short names for the table's rule columns.
OWN, G, D, C, N = (AccessRule.OWNER, AccessRule.GLOBAL, AccessRule.DIRECT, AccessRule.CIRCLE,
                   AccessRule.NETWORK)  # fmt: skip
EVERY_GRANT = (TO_BOB, TO_CAROL, TO_FRIENDS, TO_WORK, TO_NETWORK, TO_EVERYONE)

ROWS: dict[str, Row] = {
    # the owner
    "owner_without_grants": Row(ALICE, (), ALL_PERMISSIONS, (OWN,)),
    "owner_with_every_grant": Row(ALICE, EVERY_GRANT, ALL_PERMISSIONS, (OWN,)),
    "owner_with_only_expired_grants": Row(ALICE, (EXPIRED,), ALL_PERMISSIONS, (OWN,)),
    # nothing at all
    "no_grants": Row(BOB, (), NONE, ()),
    "stranger_with_only_private_grants": Row(ERIN, EVERY_GRANT[:-1], NONE, ()),
    # global
    "stranger_with_global": Row(ERIN, (TO_EVERYONE,), V, (G,)),
    "friend_with_global": Row(BOB, (TO_EVERYONE,), V, (G,)),
    "global_with_remix": Row(ERIN, (TO_EVERYONE_REMIX,), V | R, (G,)),
    "two_global_grants_combine": Row(ERIN, (TO_EVERYONE, TO_EVERYONE_REMIX), V | R, (G,)),
    "global_at_the_end_of_time": Row(ERIN, (TO_EVERYONE,), V, (G,), now=2**63 - 1),
    "global_revocation_forged": Row(
        ERIN, (TO_EVERYONE,), V, (G,), revocations=(FORGED_GLOBAL_REVOCATION,)
    ),
    # direct
    "direct": Row(BOB, (TO_BOB,), V, (D,)),
    "direct_with_annotate": Row(BOB, (TO_BOB_ANNOTATE,), V | A, (D,)),
    "direct_to_someone_else": Row(DAVE, (TO_BOB, TO_CAROL), NONE, ()),
    "direct_to_carol_not_bob": Row(BOB, (TO_CAROL,), NONE, ()),
    "direct_carol_reshare": Row(CAROL, (TO_BOB, TO_CAROL), V | A | S, (D,)),
    "two_direct_grants_combine": Row(BOB, (TO_BOB, TO_BOB_ANNOTATE, TO_BOB_LATER), V | A | R, (D,)),
    "direct_without_connection": Row(BOB, (TO_BOB,), V, (D,), connections=()),
    # circles
    "circle_member": Row(BOB, (TO_FRIENDS,), V | R, (C,)),
    "circle_other_member": Row(CAROL, (TO_FRIENDS,), V | R, (C,)),
    "circle_non_member": Row(DAVE, (TO_FRIENDS,), NONE, ()),
    "circle_member_of_another_circle": Row(DAVE, (TO_FRIENDS, TO_WORK), V | A, (C,)),
    "circle_member_removed": Row(
        CAROL, (TO_FRIENDS,), NONE, (), circles={FRIENDS: {BOB}, WORK: {DAVE}}
    ),
    "circle_unknown": Row(BOB, (TO_FRIENDS,), NONE, (), circles={}),
    "circle_and_direct_combine": Row(BOB, (TO_FRIENDS, TO_BOB_ANNOTATE), V | A | R, (D, C)),
    "two_circles_combine": Row(
        BOB, (TO_FRIENDS, TO_WORK), V | A | R, (C,), circles={FRIENDS: {BOB}, WORK: {BOB}}
    ),
    # network
    "network_with_accepted_connection": Row(BOB, (TO_NETWORK,), V, (N,)),
    "network_without_connection": Row(DAVE, (TO_NETWORK,), NONE, ()),
    "network_no_connections_at_all": Row(BOB, (TO_NETWORK,), NONE, (), connections=()),
    "network_combines_with_direct": Row(BOB, (TO_NETWORK_RESHARE, TO_BOB), V | S, (D, N)),
    "network_and_circle_for_non_member": Row(DAVE, (TO_NETWORK, TO_FRIENDS), NONE, ()),
    "connection_without_network_grant": Row(BOB, (TO_CAROL,), NONE, ()),
    # every rule at once, in resolution order
    "every_rule_combines": Row(
        BOB,
        (TO_NETWORK_RESHARE, TO_FRIENDS, TO_BOB_ANNOTATE, TO_EVERYONE),
        V | A | R | S,
        (G, D, C, N),
    ),
    "global_and_network": Row(CAROL, (TO_NETWORK, TO_EVERYONE_REMIX), V | R, (G, N)),
    # expiry: a grant lives strictly before its expiry
    "expiring_grant_still_live": Row(BOB, (EXPIRING,), V | A, (D,)),
    "expiring_grant_at_its_expiry": Row(BOB, (EXPIRING,), NONE, (), now=NOW + 1),
    "expired_grant": Row(BOB, (EXPIRED,), NONE, ()),
    "expired_circle_grant": Row(BOB, (EXPIRED_CIRCLE,), NONE, ()),
    "expired_grant_beside_a_live_one": Row(BOB, (EXPIRED, TO_BOB), V, (D,)),
    "expired_grant_before_now": Row(BOB, (EXPIRED,), V | A, (D,), now=NOW - 1),
    # revocation
    "revoked_direct": Row(BOB, (TO_BOB,), NONE, (), revocations=(revoke(TO_BOB),)),
    "revoked_circle": Row(BOB, (TO_FRIENDS,), NONE, (), revocations=(revoke(TO_FRIENDS),)),
    "revoked_network": Row(BOB, (TO_NETWORK,), NONE, (), revocations=(revoke(TO_NETWORK),)),
    "revoked_one_of_two": Row(
        BOB, (TO_BOB, TO_BOB_ANNOTATE), V | A, (D,), revocations=(revoke(TO_BOB),)
    ),
    "revoked_direct_circle_remains": Row(
        BOB, (TO_BOB_ANNOTATE, TO_FRIENDS), V | R, (C,), revocations=(revoke(TO_BOB_ANNOTATE),)
    ),
    "revoked_other_grant_changes_nothing": Row(
        BOB, (TO_BOB,), V, (D,), revocations=(revoke(TO_CAROL),)
    ),
    "revocation_by_non_grantor_ignored": Row(
        BOB, (TO_BOB,), V, (D,), revocations=(CAROLS_REVOCATION,)
    ),
    "revoked_everything_but_global": Row(
        BOB,
        (TO_BOB, TO_FRIENDS, TO_NETWORK, TO_EVERYONE),
        V,
        (G,),
        revocations=(revoke(TO_BOB), revoke(TO_FRIENDS), revoke(TO_NETWORK)),
    ),
    # grants that do not count here
    "grant_for_another_acu": Row(BOB, (FOR_OTHER_ACU,), NONE, ()),
    "grant_by_someone_else": Row(BOB, (BY_CAROL,), NONE, ()),
    "grant_by_someone_else_beside_owners": Row(BOB, (BY_CAROL, TO_BOB), V, (D,)),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_access_table(row: Row) -> None:
    access = resolve_access(
        requester_did=row.requester,
        owner_did=ALICE,
        acu_id=ACU,
        grants=row.grants,
        revocations=row.revocations,
        circle_members=row.circles,
        accepted_connections=row.connections,
        now_ms=row.now,
    )
    assert access.permissions == row.permissions
    assert access.rules == row.rules
    assert access.rule == (row.rules[0] if row.rules else AccessRule.DENIED)
    assert access.allowed is bool(row.rules)
    assert access.allowed is (Permission.VIEW in access.permissions)
    for flag in (V, A, R, S):
        assert access.allows(flag) is (flag in row.permissions)


def resolve(requester: str, *grants: SharingGrant, **changes: object) -> Access:
    arguments: dict[str, object] = {
        "requester_did": requester,
        "owner_did": ALICE,
        "acu_id": ACU,
        "grants": grants,
        "circle_members": CIRCLES,
        "accepted_connections": CONNECTIONS,
        "now_ms": NOW,
        **changes,
    }
    return resolve_access(**arguments)  # type: ignore[arg-type]


def test_the_grants_that_gave_access_are_named() -> None:
    access = resolve(BOB, TO_BOB, TO_CAROL, TO_FRIENDS, TO_NETWORK, EXPIRED)
    assert access.grant_ids == tuple(sorted([TO_BOB.id, TO_FRIENDS.id, TO_NETWORK.id]))
    assert resolve(ALICE, TO_BOB).grant_ids == ()
    assert resolve(DAVE, TO_BOB).grant_ids == ()


def test_denied_is_empty() -> None:
    access = resolve(DAVE)
    assert access == Access(permissions=NONE, rule=AccessRule.DENIED, rules=(), grant_ids=())
    assert not access.allowed


def test_the_owner_holds_every_permission() -> None:
    access = resolve(ALICE)
    assert access.permissions == V | A | R | S
    assert access.rule is AccessRule.OWNER


def test_grant_order_does_not_matter() -> None:
    grants = (TO_NETWORK_RESHARE, TO_FRIENDS, TO_BOB_ANNOTATE, TO_EVERYONE, EXPIRED)
    expected = resolve(BOB, *grants)
    assert resolve(BOB, *reversed(grants)) == expected
    assert resolve(BOB, *grants[2:], *grants[:2]) == expected


def test_grants_and_revocations_may_be_one_shot_iterables() -> None:
    access = resolve(
        BOB,
        grants=iter([TO_BOB, TO_BOB_ANNOTATE]),
        revocations=iter([revoke(TO_BOB_ANNOTATE)]),
    )
    assert access.permissions == V
    assert access.grant_ids == (TO_BOB.id,)


def test_the_resolution_order() -> None:
    assert RESOLUTION_ORDER == (
        AccessRule.OWNER,
        AccessRule.GLOBAL,
        AccessRule.DIRECT,
        AccessRule.CIRCLE,
        AccessRule.NETWORK,
    )
