"""Who is calling, and what they may do (the policy that is ours).

Until RBAC lands (issue 4) the rule is simple and fails closed: the site admin may do
everything; any other principal may do nothing. Every check goes through ``can`` so RBAC
replaces one function, not every handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

WORKSPACE_READ: Final = "workspace:read"
WORKSPACE_WRITE: Final = "workspace:write"
WORKSPACE_LOCK: Final = "workspace:lock"
WORKSPACE_MANAGE: Final = "workspace:manage"
RUN_PLAN: Final = "run:plan"
RUN_APPLY: Final = "run:apply"
ORG_MANAGE: Final = "org:manage"

ALL_PERMISSIONS: Final = frozenset(
    {
        WORKSPACE_READ,
        WORKSPACE_WRITE,
        WORKSPACE_LOCK,
        WORKSPACE_MANAGE,
        RUN_PLAN,
        RUN_APPLY,
        ORG_MANAGE,
    }
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, through one of their API tokens."""

    user_id: str
    username: str
    is_site_admin: bool
    token_id: str

    def permissions(
        self, organization_id: str, workspace_name: str | None = None
    ) -> frozenset[str]:
        """Permissions on one organization (and workspace). Deny unless granted."""
        try:
            if self.is_site_admin:
                return ALL_PERMISSIONS
            return frozenset()
        except Exception:  # any error in the check denies
            return frozenset()

    def can(self, permission: str, organization_id: str, workspace_name: str | None = None) -> bool:
        return permission in self.permissions(organization_id, workspace_name)
