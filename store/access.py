"""Access resolution: what a person may do with an ACU, and which rule says so.

`resolve_access` is a pure function over records the store has already checked (signatures,
trust chain, `check_revocation`) and loaded; it reads no table and no clock (`now_ms` is an
argument), so sync's "may see" rule and the control API can share it and the tests can drive it
with plain values. Wiring it to the tables is the next step of the sharing issue.

The rules, in resolution order (ARCHITECTURE.md, "Sharing"):

1. OWNER: the ACU's owner may do everything; nothing else is looked at.
2. GLOBAL: a global grant applies to everyone, strangers included.
3. DIRECT: a grant naming the requester's DID.
4. CIRCLE: a grant naming a circle the requester is a member of *now* (`circle_members` holds each
   circle's current members, so a removed member loses what the circle's grants give).
5. NETWORK: a network grant, for a requester with an accepted connection to the owner.
6. DENIED: none of these (permissions empty).

Several grants combine to the most permissive: the permissions are the union over every grant
that applies. `Access.rule` is the first rule in that order that gave anything (what a user is
told: "shared with you directly"), `Access.rules` every rule that did, `Access.grant_ids` the
grants themselves (which wrapped keys sync must send).

A grant counts only if it is for this ACU, issued by its owner, unexpired at `now_ms` (a grant
lives strictly before `expires_at_ms`) and not revoked. Grants issued by anyone else are ignored
here: resharing (the RESHARE permission) is recorded in grants but resolved by the resharer's own
node for the copy it holds, which is not built yet. A revocation counts only if
`check_revocation` accepts it for the grant it names, so a revocation naming a global grant, or
not made by the grant's grantor, changes nothing; a revocation takes effect whatever its
`revoked_at_ms` (revoking is final, and a clock behind the grantor's must not delay it).
"""

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from protocols.sharing import (
    GrantRevocation,
    Irrevocable,
    Permission,
    RevocationMismatch,
    SharingGrant,
    TargetKind,
    check_revocation,
)

__all__ = ["ALL_PERMISSIONS", "RESOLUTION_ORDER", "Access", "AccessRule", "resolve_access"]

ALL_PERMISSIONS: Final = (
    Permission.VIEW | Permission.ANNOTATE | Permission.REMIX | Permission.RESHARE
)


class AccessRule(StrEnum):
    """Which rule gave access (or DENIED)."""

    OWNER = "owner"
    GLOBAL = "global"
    DIRECT = "direct"
    CIRCLE = "circle"
    NETWORK = "network"
    DENIED = "denied"


RESOLUTION_ORDER: Final = (
    AccessRule.OWNER,
    AccessRule.GLOBAL,
    AccessRule.DIRECT,
    AccessRule.CIRCLE,
    AccessRule.NETWORK,
)


@dataclass(frozen=True, kw_only=True)
class Access:
    """What a requester may do: `permissions` (empty when denied), the first rule in resolution
    order that gave any (`rule`, DENIED if none did), every rule that did (`rules`, in that
    order) and the ids of the grants that did (`grant_ids`, sorted; empty for the owner)."""

    permissions: Permission
    rule: AccessRule
    rules: tuple[AccessRule, ...]
    grant_ids: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        """Whether the requester may see the ACU at all (every grant implies view)."""
        return Permission.VIEW in self.permissions

    def allows(self, permission: Permission) -> bool:
        """Whether every flag of `permission` is held."""
        return permission in self.permissions


_DENIED: Final = Access(permissions=Permission(0), rule=AccessRule.DENIED, rules=(), grant_ids=())


def resolve_access(
    *,
    requester_did: str,
    owner_did: str,
    acu_id: str,
    grants: Iterable[SharingGrant],
    revocations: Iterable[GrantRevocation] = (),
    circle_members: Mapping[str, Collection[str]],
    accepted_connections: Collection[str],
    now_ms: int,
) -> Access:
    """What `requester_did` may do with ACU `acu_id` of `owner_did` at `now_ms` (see the module
    docstring for the rules).

    `grants` and `revocations` are the ACU's records (others are ignored), `circle_members` maps
    each of the owner's circle ids to its current member DIDs, `accepted_connections` holds the
    DIDs with an accepted connection to the owner (blocked ones are not accepted).
    """
    if requester_did == owner_did:
        return Access(
            permissions=ALL_PERMISSIONS,
            rule=AccessRule.OWNER,
            rules=(AccessRule.OWNER,),
            grant_ids=(),
        )
    revocations_by_grant: dict[str, list[GrantRevocation]] = {}
    for revocation in revocations:
        revocations_by_grant.setdefault(revocation.grant_id, []).append(revocation)
    permissions = Permission(0)
    rules: set[AccessRule] = set()
    grant_ids: set[str] = set()
    for grant in grants:
        if grant.acu_id != acu_id or grant.grantor_did != owner_did or not grant.is_live(now_ms):
            continue
        if _is_revoked(grant, revocations_by_grant.get(grant.id, ())):
            continue
        rule = _rule_for(grant, requester_did, circle_members, accepted_connections)
        if rule is None:
            continue
        permissions |= grant.permissions
        rules.add(rule)
        grant_ids.add(grant.id)
    if not rules:
        return _DENIED
    ordered = tuple(rule for rule in RESOLUTION_ORDER if rule in rules)
    return Access(
        permissions=permissions, rule=ordered[0], rules=ordered, grant_ids=tuple(sorted(grant_ids))
    )


def _rule_for(
    grant: SharingGrant,
    requester_did: str,
    circle_members: Mapping[str, Collection[str]],
    accepted_connections: Collection[str],
) -> AccessRule | None:
    """The rule by which `grant` applies to the requester, or None if it does not."""
    kind = grant.target_kind
    if kind is TargetKind.GLOBAL:
        return AccessRule.GLOBAL
    if kind is TargetKind.DID:
        return AccessRule.DIRECT if grant.target == requester_did else None
    if kind is TargetKind.CIRCLE:
        assert grant.target is not None  # a circle grant always names its circle
        members = circle_members.get(grant.target, ())
        return AccessRule.CIRCLE if requester_did in members else None
    return AccessRule.NETWORK if requester_did in accepted_connections else None


def _is_revoked(grant: SharingGrant, revocations: Iterable[GrantRevocation]) -> bool:
    """Whether any of `revocations` (those naming the grant's id) validly revokes it."""
    for revocation in revocations:
        try:
            check_revocation(revocation, grant)
        except (Irrevocable, RevocationMismatch):
            continue
        return True
    return False
