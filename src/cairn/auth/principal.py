"""Who is calling, and what they may do (the policy that is ours).

A principal carries its access, loaded once per request from the database (teams, grants,
roles: ``cairn.rbac.access``), so group membership is never frozen into a token. Every check
goes through ``permissions``/``can``, which deny on any error.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
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
PUBLIC_PERMISSIONS: Final = ALL_PERMISSIONS - {ORG_READ}


@dataclass(frozen=True)
class WorkspaceGrant:
    """Permissions on the workspaces of one organization chosen by ID or by name pattern."""

    organization_id: str
    permissions: frozenset[str]
    workspace_id: str | None = None
    pattern: str | None = None

    def matches(self, organization_id: str, ws_name: str | None, ws_id: str | None) -> bool:
        if organization_id != self.organization_id:
            return False
        if self.workspace_id is not None:
            return ws_id is not None and ws_id == self.workspace_id
        if self.pattern is not None:
            return ws_name is not None and fnmatch.fnmatchcase(ws_name, self.pattern)
        return False


@dataclass(frozen=True)
class Access:
    """Everything a principal may do, across organizations."""

    organization: dict[str, frozenset[str]] = field(default_factory=dict)
    grants: tuple[WorkspaceGrant, ...] = ()
    team_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user (or service account), through one of its API tokens."""

    user_id: str
    username: str
    is_site_admin: bool
    token_id: str
    access: Access = field(default_factory=Access)
    is_service_account: bool = False

    def permissions(
        self,
        organization_id: str,
        workspace_name: str | None = None,
        workspace_id: str | None = None,
    ) -> frozenset[str]:
        """Permissions in one organization (and on one workspace, when named). Deny unless
        granted; any error while checking denies."""
        try:
            if self.is_site_admin:
                return ALL_PERMISSIONS
            org = self.access.organization.get(organization_id, frozenset())
            if ORG_MANAGE in org:
                return ALL_PERMISSIONS
            perms = set(org)
            if workspace_name is None and workspace_id is None:
                if perms or any(g.organization_id == organization_id for g in self.access.grants):
                    perms.add(ORG_READ)
                return frozenset(perms)
            for grant in self.access.grants:
                if grant.matches(organization_id, workspace_name, workspace_id):
                    perms |= grant.permissions
            if WORKSPACE_READ in perms:
                perms.add(ORG_READ)
            return frozenset(perms)
        except Exception:
            return frozenset()

    def can(
        self,
        permission: str,
        organization_id: str,
        workspace_name: str | None = None,
        workspace_id: str | None = None,
    ) -> bool:
        return permission in self.permissions(organization_id, workspace_name, workspace_id)
