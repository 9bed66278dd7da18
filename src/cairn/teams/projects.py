"""TFE team-project access: a team's access level on a project and every workspace in it
(``/api/v2/team-projects``). Rules inside the caller's unit of work; every change is
audit-logged in the same transaction.

Who may: whoever may manage the project's team access (``project:manage-teams``: the owners,
``manage-projects``, a team with admin access to the project) changes it, and sees it with
``project:read-teams``; everyone else who may read the project is refused (403), the others are
told it does not exist (404). Someone who manages the project's teams without organization-wide
rights may only give what they hold on the project themselves (no escalation through the team
they are in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.model import Team, TeamProject
from cairn.authz.permissions import (
    ORG_MANAGE,
    PROJECT_READ,
    PROJECT_TEAMS_MANAGE,
    PROJECT_TEAMS_READ,
)
from cairn.authz.roles import (
    CUSTOM,
    FIXED_PROJECT_ACCESS,
    PROJECT_CUSTOM_DEFAULT,
    PROJECT_LEVELS,
    ProjectAccess,
    parse_project_access,
    project_permissions,
    team_project_access,
)
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid
from cairn.organizations.model import Organization, Project
from cairn.paging import Page
from cairn.teams import store

_POINTER = "/data/attributes"


@dataclass
class TeamProjectView:
    """A team-project access with its effective attributes."""

    row: TeamProject
    access: ProjectAccess


def _target(org: Organization, prj: Project) -> authz.Project:
    return authz.Project(org.id, org.name, prj.id, prj.name, prj.is_default)


def _project(
    s: Session, caller: Subject, project_id: str, permission: str, doing: str
) -> tuple[Organization, Project]:
    """The project, if the caller may ``permission`` on it (404 when they may not read it)."""
    found = store.project(s, project_id)
    if found is None:
        raise authz.not_found("project", repr(project_id))
    org, prj = found
    target = _target(org, prj)
    if not authz.allowed(caller, PROJECT_READ, target):
        raise authz.not_found("project", repr(project_id))
    authz.require(caller, permission, target, doing=doing)
    return org, prj


def _chosen(level: str, attrs: dict[str, Any], current: ProjectAccess | None) -> ProjectAccess:
    """The access a body asks for: a fixed level's, or ``custom`` from ``current`` (or HCP
    Terraform's defaults) changed by ``project-access`` / ``workspace-access``."""
    if level not in PROJECT_LEVELS:
        raise Invalid(
            f"access must be one of {', '.join(PROJECT_LEVELS)}", pointer=f"{_POINTER}/access"
        )
    project_attrs = attrs.get("project-access")
    workspace_attrs = attrs.get("workspace-access")
    for name, value in (("project-access", project_attrs), ("workspace-access", workspace_attrs)):
        if value is not None and not isinstance(value, dict):
            raise Invalid(f"{name} must be an object", pointer=f"{_POINTER}/{name}")
    if level != CUSTOM:
        fixed = FIXED_PROJECT_ACCESS[level]
        asked = parse_project_access(project_attrs or {}, workspace_attrs or {}, fixed)
        if asked != fixed:
            raise Invalid(
                "project-access and workspace-access can only be chosen with access custom; "
                f"access {level} has fixed values (send them unchanged, or leave them out)",
                pointer=f"{_POINTER}/access",
            )
        return fixed
    return parse_project_access(
        project_attrs or {}, workspace_attrs or {}, current or PROJECT_CUSTOM_DEFAULT
    )


def _store(row: TeamProject, level: str, access: ProjectAccess) -> None:
    w = access.workspaces
    row.access = level
    row.settings = access.settings
    row.teams = access.teams
    row.variable_sets = access.variable_sets
    row.runs = w.runs
    row.variables = w.variables
    row.state_versions = w.state_versions
    row.sentinel_mocks = w.sentinel_mocks
    row.run_tasks = w.run_tasks
    row.ws_create = access.create
    row.ws_locking = access.locking
    row.ws_move = access.move
    row.ws_delete = access.delete


def _require_may_give(
    caller: Subject, org: Organization, prj: Project, level: str, access: ProjectAccess
) -> None:
    """Without organization-wide rights, one gives only what one holds on the project and on
    its workspaces."""
    held_org = authz.permissions(caller, org.id)
    if ORG_MANAGE in held_org:
        return
    on_project, on_workspaces = project_permissions(level, access)
    held_project = authz.permissions_on(caller, _target(org, prj))
    held_workspaces = set(held_org)
    for grant in caller.access.grants:
        if grant.organization_id == org.id and grant.project_id == prj.id:
            held_workspaces |= grant.permissions
    beyond = sorted((on_project - held_project) | (on_workspaces - held_workspaces))
    if beyond:
        raise Forbidden(
            f"you may not give access {level} to project {org.name}/{prj.name}: it gives "
            f"{', '.join(beyond)}, which you do not hold there"
        )


class TeamProjectService:
    """Team-project access."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def list(
        self, caller: Subject, project_id: str, page: Page
    ) -> tuple[list[TeamProjectView], int]:
        with self._db.unit_of_work() as s:
            _project(s, caller, project_id, PROJECT_TEAMS_READ, "see the team access of")
            rows, total = store.team_projects(s, project_id, page)
            return [TeamProjectView(r, team_project_access(r)) for r in rows], total

    def get(self, caller: Subject, team_project_id: str) -> TeamProjectView:
        with self._db.unit_of_work() as s:
            row = self._visible(s, caller, team_project_id, PROJECT_TEAMS_READ)
            return TeamProjectView(row, team_project_access(row))

    def create(
        self,
        caller: Subject,
        *,
        team_id: str,
        project_id: str,
        level: str,
        attrs: dict[str, Any],
        source: str,
    ) -> TeamProjectView:
        access = _chosen(level, attrs, None)
        with self._db.unit_of_work(write=True) as s:
            org, prj = _project(s, caller, project_id, PROJECT_TEAMS_MANAGE, "give teams access to")
            team = store.team_in(s, org.id, team_id)
            if team is None or team.id != team_id:
                raise Invalid(
                    f"team {team_id!r} does not exist in organization {org.name!r}",
                    pointer="/data/relationships/team",
                )
            _require_may_give(caller, org, prj, level, access)
            row = TeamProject(
                id=ids.new_id("team_project"),
                organization_id=org.id,
                team_id=team.id,
                project_id=prj.id,
                created_at=self._clock.now(),
            )
            _store(row, level, access)
            s.add(row)
            taken = Conflict(
                f"team {team.name!r} already has access to project {prj.name!r}: change that "
                "access (PATCH /team-projects/:id) instead"
            )
            try:
                s.flush()
            except IntegrityError:
                raise taken from None
            self._audit(s, caller, source, "rbac.team-project.create", org, prj, team, row)
            s.commit()
            return TeamProjectView(row, access)

    def update(
        self,
        caller: Subject,
        team_project_id: str,
        *,
        level: str | None,
        attrs: dict[str, Any],
        source: str,
    ) -> TeamProjectView:
        with self._db.unit_of_work(write=True) as s:
            row = self._visible(s, caller, team_project_id, PROJECT_TEAMS_MANAGE)
            level = level or row.access
            current = team_project_access(row)
            access = _chosen(level, attrs, current)
            org, prj, team = self._names(s, row)
            _require_may_give(caller, org, prj, level, access)
            _store(row, level, access)
            s.flush()
            self._audit(s, caller, source, "rbac.team-project.update", org, prj, team, row)
            s.commit()
            return TeamProjectView(row, access)

    def delete(self, caller: Subject, team_project_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            row = self._visible(s, caller, team_project_id, PROJECT_TEAMS_MANAGE)
            org, prj, team = self._names(s, row)
            self._audit(s, caller, source, "rbac.team-project.delete", org, prj, team, row)
            s.delete(row)
            s.commit()

    @staticmethod
    def _visible(s: Session, caller: Subject, team_project_id: str, permission: str) -> TeamProject:
        """A team-project access the caller may ``permission`` (404 for those who may not
        read its project, named by its ID only)."""
        row = store.team_project(s, team_project_id)
        found = store.project(s, row.project_id) if row is not None else None
        if row is None or found is None:
            raise authz.not_found("team-project access", repr(team_project_id))
        target = _target(*found)
        if not authz.allowed(caller, PROJECT_TEAMS_READ, target):
            raise authz.not_found("team-project access", repr(team_project_id))
        authz.require(caller, permission, target, doing="change the team access of")
        return row

    @staticmethod
    def _names(s: Session, row: TeamProject) -> tuple[Organization, Project, Team]:
        found = store.project(s, row.project_id)
        team = s.get(Team, row.team_id)
        assert found is not None and team is not None  # foreign keys, in this transaction
        return found[0], found[1], team

    def _audit(
        self,
        s: Session,
        caller: Subject,
        source: str,
        action: str,
        org: Organization,
        prj: Project,
        team: Team,
        row: TeamProject,
    ) -> None:
        record(
            s,
            at=self._clock.now(),
            actor=Actor(caller.id, caller.name, source),
            action=action,
            subject=f"{org.name}: {row.access} on project {prj.name} to team {team.name}",
            team_project_id=row.id,
        )
