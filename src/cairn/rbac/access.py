"""Loading a principal's access from the database: one query each for teams, grants and
custom roles (plus one for an organization token's organization). Called once per
authenticated request, inside the request's read transaction; never cached, so a membership or
grant change applies to the very next request.

Core selects of the needed columns (prepared once, cached compiled by SQLAlchemy): this runs on
every request, and entities would be built only to be read once.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, bindparam, or_, select

from cairn.auth.principal import ALL_PERMISSIONS, Access, WorkspaceGrant
from cairn.db.base import table_of
from cairn.organizations.model import Organization
from cairn.rbac.model import Grant, Role, Team, TeamMembership
from cairn.rbac.roles import BUILTIN_ROLES, org_access_permissions

ORG_SERVICE_USER_PREFIX = "api-org-"  # service accounts of organization tokens

_team = table_of(Team)
_member = table_of(TeamMembership)
_grant = table_of(Grant)
_role = table_of(Role)
_org = table_of(Organization)

_TEAMS = (
    select(_team.c.id, _team.c.organization_id, _team.c.name, _team.c.organization_access)
    .join_from(_team, _member, _member.c.team_id == _team.c.id)
    .where(_member.c.user_id == bindparam("user_id"))
)
_ORG_ID_BY_NAME = select(_org.c.id).where(_org.c.name == bindparam("name"))
_GRANTS = select(
    _grant.c.organization_id, _grant.c.role, _grant.c.workspace_id, _grant.c.workspace_pattern
).where(
    _grant.c.is_active,
    or_(
        _grant.c.user_id == bindparam("user_id"),
        _grant.c.team_id.in_(bindparam("team_ids", expanding=True)),
    ),
)
_ROLES = select(_role.c.organization_id, _role.c.name, _role.c.permissions).where(
    _role.c.organization_id.in_(bindparam("org_ids", expanding=True))
)


def load_access(
    conn: Connection, user_id: str, username: str, *, is_service_account: bool
) -> Access:
    """Everything the user may do (teams, grants, custom roles), as of ``conn``'s
    transaction."""
    organization: dict[str, set[str]] = defaultdict(set)
    team_ids: list[str] = []
    for team_id, org_id, name, organization_access in conn.execute(_TEAMS, {"user_id": user_id}):
        team_ids.append(team_id)
        organization[org_id] |= org_access_permissions(name, organization_access)
        organization[org_id].add("org:read")
    if is_service_account and username.startswith(ORG_SERVICE_USER_PREFIX):
        org_id = conn.scalar(_ORG_ID_BY_NAME, {"name": username[len(ORG_SERVICE_USER_PREFIX) :]})
        if org_id is not None:
            organization[org_id] |= ALL_PERMISSIONS
    rows = conn.execute(_GRANTS, {"user_id": user_id, "team_ids": team_ids or [""]}).all()
    custom: dict[tuple[str, str], frozenset[str]] = {}
    org_ids = sorted({g.organization_id for g in rows if g.role not in BUILTIN_ROLES})
    if org_ids:
        for org_id, name, permissions in conn.execute(_ROLES, {"org_ids": org_ids}):
            custom[(org_id, name)] = frozenset(p for p in permissions.split(",") if p)
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
