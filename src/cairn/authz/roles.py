"""Built-in roles (TFE's workspace access levels) and TFE organization-access flags, mapped
onto cairn's permissions."""

from __future__ import annotations

from typing import Final

from cairn.authz.permissions import (
    ALL_PERMISSIONS,
    ORG_MANAGE_ACCESS,
    ORG_MANAGE_MEMBERSHIP,
    PUBLIC_PERMISSIONS,
    RUN_APPLY,
    RUN_PLAN,
    WORKSPACE_LOCK,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
    WORKSPACE_WRITE,
)
from cairn.errors import Invalid

READ: Final = frozenset({WORKSPACE_READ})
PLAN: Final = READ | {RUN_PLAN}
WRITE: Final = PLAN | {WORKSPACE_WRITE, WORKSPACE_LOCK, RUN_APPLY}
ADMIN: Final = WRITE | {WORKSPACE_MANAGE}

BUILTIN_ROLES: Final[dict[str, frozenset[str]]] = {
    "read": READ,
    "plan": PLAN,
    "write": WRITE,
    "admin": ADMIN,
}
TFE_ACCESS_LEVELS: Final = ("read", "plan", "write", "admin")

# TFE team organization-access flags → permissions in the organization (on every workspace of it
# for the workspace flags). As HCP Terraform documents them: manage-membership adds people to
# teams and removes them; manage-organization-access changes teams' organization access and
# implies manage-membership. Neither is org:manage: no workspace, project, setting or token.
ORG_ACCESS_FLAGS: Final[dict[str, frozenset[str]]] = {
    "read-workspaces": READ,
    "read-projects": READ,
    "manage-workspaces": ADMIN,
    "manage-projects": ADMIN,
    "manage-membership": frozenset({ORG_MANAGE_MEMBERSHIP}),
    "manage-organization-access": frozenset({ORG_MANAGE_ACCESS, ORG_MANAGE_MEMBERSHIP}),
}
OWNERS_TEAM: Final = "owners"


def parse_permissions(values: list[str], pointer: str) -> frozenset[str]:
    unknown = [v for v in values if v not in PUBLIC_PERMISSIONS]
    if unknown or not values:
        raise Invalid(
            "permissions must be a non-empty list drawn from "
            + ", ".join(sorted(PUBLIC_PERMISSIONS))
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            pointer=pointer,
        )
    return frozenset(values)


def org_access_permissions(team_name: str, flags: str) -> frozenset[str]:
    if team_name == OWNERS_TEAM:
        return ALL_PERMISSIONS
    perms: set[str] = set()
    for flag in filter(None, flags.split(",")):
        perms |= ORG_ACCESS_FLAGS.get(flag, frozenset())
    return frozenset(perms)
