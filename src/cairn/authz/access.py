"""A subject's access (``Access``: organization rights, workspace grants, project grants,
teams) and loading it from the database: one query each for teams, grants, team-project access
and custom roles. Called once per
authenticated request, inside the request's own transaction; never cached, so a membership or
grant change applies to the very next request.

Core selects of the needed columns (prepared once, cached compiled by SQLAlchemy): this runs on
every request, and entities would be built only to be read once.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, or_, select

from cairn.authz.model import Grant, Role, Team, TeamMembership, TeamProject
from cairn.authz.permissions import ALL_PERMISSIONS, ORG_READ
from cairn.authz.roles import (
    BUILTIN_ROLES,
    CUSTOM,
    grant_workspace_access,
    org_access_permissions,
    project_permissions,
    team_project_access,
    with_implied,
    workspace_permissions,
)
from cairn.db.base import table_of


@dataclass(frozen=True)
class WorkspaceGrant:
    """Permissions on the workspaces of one organization chosen by ID, by name pattern or by
    project (every workspace in it: team-project access)."""

    organization_id: str
    permissions: frozenset[str]
    workspace_id: str | None = None
    pattern: str | None = None
    project_id: str | None = None

    def matches(
        self,
        organization_id: str,
        ws_name: str | None,
        ws_id: str | None,
        project_id: str | None = None,
    ) -> bool:
        if organization_id != self.organization_id:
            return False
        if self.workspace_id is not None:
            return ws_id is not None and ws_id == self.workspace_id
        if self.pattern is not None:
            return ws_name is not None and fnmatch.fnmatchcase(ws_name, self.pattern)
        if self.project_id is not None:
            return project_id is not None and project_id == self.project_id
        return False


@dataclass(frozen=True)
class ProjectGrant:
    """Permissions on one project itself (team-project access)."""

    organization_id: str
    project_id: str
    permissions: frozenset[str]


@dataclass(frozen=True)
class Access:
    """Everything a subject may do, across organizations: rights on whole organizations
    (team organization-access flags, an organization token) and grants on workspaces."""

    organization: dict[str, frozenset[str]] = field(default_factory=dict)
    grants: tuple[WorkspaceGrant, ...] = ()
    team_ids: frozenset[str] = frozenset()
    projects: tuple[ProjectGrant, ...] = ()


_team = table_of(Team)
_member = table_of(TeamMembership)
_grant = table_of(Grant)
_role = table_of(Role)
_team_project = table_of(TeamProject)

_TEAMS = (
    select(_team.c.id, _team.c.organization_id, _team.c.name, _team.c.organization_access)
    .join_from(_team, _member, _member.c.team_id == _team.c.id)
    .where(_member.c.user_id == bindparam("user_id"))
)
_GRANTS = select(
    _grant.c.organization_id,
    _grant.c.role,
    _grant.c.workspace_id,
    _grant.c.workspace_pattern,
    _grant.c.runs,
    _grant.c.variables,
    _grant.c.state_versions,
    _grant.c.sentinel_mocks,
    _grant.c.workspace_locking,
    _grant.c.run_tasks,
).where(
    _grant.c.is_active,
    or_(
        _grant.c.user_id == bindparam("user_id"),
        _grant.c.team_id.in_(bindparam("team_ids", expanding=True)),
    ),
)
_TEAM_PROJECTS = select(_team_project).where(
    _team_project.c.team_id.in_(bindparam("team_ids", expanding=True))
)
_ROLES = select(_role.c.organization_id, _role.c.name, _role.c.permissions).where(
    _role.c.organization_id.in_(bindparam("org_ids", expanding=True))
)


def load_access(conn: Connection, user_id: str, *, organization_id: str | None = None) -> Access:
    """Everything the user or service account may do (teams, grants, custom roles), as of
    ``conn``'s transaction. ``organization_id``: the organization whose organization token
    this service account holds (it may do everything there)."""
    organization: dict[str, set[str]] = defaultdict(set)
    team_ids: list[str] = []
    for team_id, org_id, name, organization_access in conn.execute(_TEAMS, {"user_id": user_id}):
        team_ids.append(team_id)
        organization[org_id] |= org_access_permissions(name, organization_access)
        organization[org_id].add(ORG_READ)
    if organization_id is not None:
        organization[organization_id] |= ALL_PERMISSIONS
    rows = conn.execute(_GRANTS, {"user_id": user_id, "team_ids": team_ids or [""]}).all()
    custom: dict[tuple[str, str], frozenset[str]] = {}
    org_ids = sorted(
        {g.organization_id for g in rows if g.role not in BUILTIN_ROLES and g.role != CUSTOM}
    )
    if org_ids:
        for org_id, name, permissions in conn.execute(_ROLES, {"org_ids": org_ids}):
            custom[(org_id, name)] = with_implied(frozenset(p for p in permissions.split(",") if p))
    grants = []
    for g in rows:
        access = grant_workspace_access(g.role, g)
        if access is not None:
            perms = workspace_permissions(g.role, access)
        else:
            perms = custom.get((g.organization_id, g.role), frozenset())
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
    projects = []
    if team_ids:
        for tp in conn.execute(_TEAM_PROJECTS, {"team_ids": team_ids}):
            on_project, on_workspaces = project_permissions(tp.access, team_project_access(tp))
            projects.append(ProjectGrant(tp.organization_id, tp.project_id, on_project))
            grants.append(
                WorkspaceGrant(
                    organization_id=tp.organization_id,
                    permissions=on_workspaces,
                    project_id=tp.project_id,
                )
            )
    return Access(
        organization={k: frozenset(v) for k, v in organization.items()},
        grants=tuple(grants),
        team_ids=frozenset(team_ids),
        projects=tuple(projects),
    )
