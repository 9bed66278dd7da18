"""Loading a principal's access from the database: one query each for teams, grants and
custom roles. Called once per authenticated request."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cairn.auth.model import User
from cairn.auth.principal import ALL_PERMISSIONS, Access, WorkspaceGrant
from cairn.organizations.model import Organization
from cairn.rbac.model import Grant, Role, Team, TeamMembership
from cairn.rbac.roles import BUILTIN_ROLES, org_access_permissions

ORG_SERVICE_USER_PREFIX = "api-org-"  # service accounts of organization tokens


def load_access(s: Session, user: User) -> Access:
    organization: dict[str, set[str]] = defaultdict(set)
    teams = list(
        s.execute(
            select(Team)
            .join(TeamMembership, TeamMembership.team_id == Team.id)
            .where(TeamMembership.user_id == user.id)
        ).scalars()
    )
    for team in teams:
        organization[team.organization_id] |= org_access_permissions(
            team.name, team.organization_access
        )
        organization[team.organization_id].add("org:read")
    if user.is_service_account and user.username.startswith(ORG_SERVICE_USER_PREFIX):
        org_id = s.scalar(
            select(Organization.id).where(
                Organization.name == user.username[len(ORG_SERVICE_USER_PREFIX) :]
            )
        )
        if org_id is not None:
            organization[org_id] |= ALL_PERMISSIONS
    team_ids = [t.id for t in teams]
    rows = list(
        s.scalars(
            select(Grant).where(
                Grant.is_active,
                or_(Grant.user_id == user.id, Grant.team_id.in_(team_ids or [""])),
            )
        )
    )
    custom: dict[tuple[str, str], frozenset[str]] = {}
    org_ids = {g.organization_id for g in rows if g.role not in BUILTIN_ROLES}
    if org_ids:
        for role in s.scalars(select(Role).where(Role.organization_id.in_(org_ids))):
            custom[(role.organization_id, role.name)] = frozenset(
                p for p in role.permissions.split(",") if p
            )
    grants = []
    for g in rows:
        perms = BUILTIN_ROLES.get(g.role) or custom.get((g.organization_id, g.role))
        if not perms:  # an unknown role grants nothing
            continue
        grants.append(
            WorkspaceGrant(
                organization_id=g.organization_id,
                permissions=perms,
                workspace_id=g.workspace_id,
                pattern=g.workspace_pattern,
            )
        )
    return Access(
        organization={k: frozenset(v) for k, v in organization.items()},
        grants=tuple(grants),
        team_ids=frozenset(team_ids),
    )
