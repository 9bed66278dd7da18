"""A subject's access (``Access``: organization rights, workspace grants, project grants,
teams) and loading it from the database: one query for teams, grants and team-project access
(``UNION ALL`` of the three, rows told apart by their ``kind``), and one more only when a grant
names a custom role. Called once per authenticated request, inside the request's own
transaction; never cached, so a membership or grant change applies to the very next request.

Core selects of the needed columns (prepared once, cached compiled by SQLAlchemy): this runs on
every request, and entities would be built only to be read once.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Integer,
    String,
    bindparam,
    cast,
    literal_column,
    null,
    or_,
    select,
    union_all,
)

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


class _GrantRow(NamedTuple):
    organization_id: str
    role: str
    workspace_id: str | None
    workspace_pattern: str | None
    runs: str | None
    variables: str | None
    state_versions: str | None
    sentinel_mocks: str | None
    workspace_locking: Any
    run_tasks: Any


class _TeamProjectRow(NamedTuple):
    organization_id: str
    project_id: str
    access: str
    settings: str
    teams: str
    variable_sets: str
    runs: str
    variables: str
    state_versions: str
    sentinel_mocks: str
    run_tasks: Any
    ws_create: Any
    ws_locking: Any
    ws_move: Any
    ws_delete: Any


_STRINGS, _FLAGS = 10, 5  # the union's columns: s0..s9 (text), b0..b4 (flags as integers)


def _part(kind: str, strings: list[Any], flags: list[Any]) -> list[Any]:
    """One SELECT's columns for the union: its ``kind``, then its values padded with NULLs."""
    cols: list[Any] = [literal_column(f"'{kind}'", String).label("kind")]
    for i in range(_STRINGS):
        cols.append((strings[i] if i < len(strings) else cast(null(), String)).label(f"s{i}"))
    for i in range(_FLAGS):
        value = cast(flags[i], Integer) if i < len(flags) else cast(null(), Integer)
        cols.append(value.label(f"b{i}"))
    return cols


_MY_TEAMS = select(_member.c.team_id).where(_member.c.user_id == bindparam("user_id"))
_ACCESS = union_all(
    select(
        *_part(
            "t",
            [_team.c.id, _team.c.organization_id, _team.c.name, _team.c.organization_access],
            [],
        )
    )
    .join_from(_team, _member, _member.c.team_id == _team.c.id)
    .where(_member.c.user_id == bindparam("user_id")),
    select(
        *_part(
            "g",
            [
                _grant.c.organization_id,
                _grant.c.role,
                _grant.c.workspace_id,
                _grant.c.workspace_pattern,
                _grant.c.runs,
                _grant.c.variables,
                _grant.c.state_versions,
                _grant.c.sentinel_mocks,
            ],
            [_grant.c.workspace_locking, _grant.c.run_tasks],
        )
    ).where(
        _grant.c.is_active,
        or_(_grant.c.user_id == bindparam("user_id"), _grant.c.team_id.in_(_MY_TEAMS)),
    ),
    select(
        *_part(
            "p",
            [
                _team_project.c.organization_id,
                _team_project.c.project_id,
                _team_project.c.access,
                _team_project.c.settings,
                _team_project.c.teams,
                _team_project.c.variable_sets,
                _team_project.c.runs,
                _team_project.c.variables,
                _team_project.c.state_versions,
                _team_project.c.sentinel_mocks,
            ],
            [
                _team_project.c.run_tasks,
                _team_project.c.ws_create,
                _team_project.c.ws_locking,
                _team_project.c.ws_move,
                _team_project.c.ws_delete,
            ],
        )
    ).where(_team_project.c.team_id.in_(_MY_TEAMS)),
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
    rows: list[_GrantRow] = []
    team_projects: list[_TeamProjectRow] = []
    for r in conn.execute(_ACCESS, {"user_id": user_id}):
        if r.kind == "t":
            team_ids.append(r.s0)
            organization[r.s1] |= org_access_permissions(r.s2, r.s3)
            organization[r.s1].add(ORG_READ)
        elif r.kind == "g":
            rows.append(_GrantRow._make((*r[1:9], r.b0, r.b1)))
        else:  # "p": the row's columns are a team-project's, in _TeamProjectRow's order
            team_projects.append(_TeamProjectRow._make(r[1:]))
    if organization_id is not None:
        organization[organization_id] |= ALL_PERMISSIONS
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
    for tp in team_projects:
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
