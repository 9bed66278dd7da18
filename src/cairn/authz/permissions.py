"""The permission vocabulary: what a subject may do in an organization or on a workspace.

Roles (``authz.roles``) bundle these; grants bind roles to teams and users; the authorizer
(``authz.authorizer``) is the one place that decides.
"""

from __future__ import annotations

from typing import Final

WORKSPACE_READ: Final = "workspace:read"
WORKSPACE_WRITE: Final = "workspace:write"
WORKSPACE_LOCK: Final = "workspace:lock"
WORKSPACE_MANAGE: Final = "workspace:manage"
RUN_PLAN: Final = "run:plan"
RUN_APPLY: Final = "run:apply"
ORG_MANAGE: Final = "org:manage"
# TFE's "manage membership": add people to teams and remove them (not the owners team), which
# is how someone joins or leaves an organization here; nothing on workspaces or settings.
ORG_MANAGE_MEMBERSHIP: Final = "org:manage-membership"
# TFE's "manage organization access": change the organization-access flags of teams (not the
# owners team); it implies ``org:manage-membership`` (roles.ORG_ACCESS_FLAGS), not ``org:manage``.
ORG_MANAGE_ACCESS: Final = "org:manage-access"
# Internal: may see the organization itself (a member of one of its teams, or holds a grant).
ORG_READ: Final = "org:read"

ALL_PERMISSIONS: Final = frozenset(
    {
        WORKSPACE_READ,
        WORKSPACE_WRITE,
        WORKSPACE_LOCK,
        WORKSPACE_MANAGE,
        RUN_PLAN,
        RUN_APPLY,
        ORG_MANAGE,
        ORG_MANAGE_MEMBERSHIP,
        ORG_MANAGE_ACCESS,
        ORG_READ,
    }
)
# What custom roles may be built from (org:read is implied by any of them; the membership and
# organization-access rights come from team flags only: a role is granted on workspaces).
PUBLIC_PERMISSIONS: Final = ALL_PERMISSIONS - {ORG_READ, ORG_MANAGE_MEMBERSHIP, ORG_MANAGE_ACCESS}
