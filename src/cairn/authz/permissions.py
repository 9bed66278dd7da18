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
        ORG_READ,
    }
)
# What custom roles may be built from (org:read is implied by any of them).
PUBLIC_PERMISSIONS: Final = ALL_PERMISSIONS - {ORG_READ}
