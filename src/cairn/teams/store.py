"""Rows of teams, memberships, roles and grants (``authz.model``), read and written in the
caller's unit of work. No rules and no authorization here: the services decide."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from cairn import ids
from cairn.auth.model import ApiToken, User
from cairn.authz.model import Grant, Role, Team, TeamMembership, TeamProject
from cairn.db.engine import affected
from cairn.organizations.model import Organization, Project
from cairn.paging import Page
from cairn.workspaces.model import Workspace

# ---- organizations and workspaces (as teams see them) -----------------------------------------


def organization(s: Session, name: str) -> Organization | None:
    return s.scalar(select(Organization).where(Organization.name == name))


def organization_by_id(s: Session, organization_id: str) -> Organization | None:
    return s.get(Organization, organization_id)


def workspace(s: Session, workspace_id: str) -> tuple[Organization, Workspace] | None:
    """A workspace with its organization."""
    row = s.execute(
        select(Organization, Workspace)
        .join(Workspace, Workspace.organization_id == Organization.id)
        .where(Workspace.id == workspace_id)
    ).first()
    return None if row is None else (row[0], row[1])


# ---- teams and members -----------------------------------------------------------------------


def team(s: Session, team_id: str) -> tuple[Organization, Team] | None:
    """A team with its organization."""
    row = s.execute(
        select(Organization, Team)
        .join(Team, Team.organization_id == Organization.id)
        .where(Team.id == team_id)
    ).first()
    return None if row is None else (row[0], row[1])


def team_in(s: Session, organization_id: str, name_or_id: str) -> Team | None:
    """A team of the organization, by name or by ID."""
    return s.scalar(
        select(Team).where(
            Team.organization_id == organization_id,
            (Team.name == name_or_id) | (Team.id == name_or_id),
        )
    )


def teams(
    s: Session,
    organization_id: str,
    *,
    secret_of: Iterable[str] | None,
    names: Iterable[str] | None = None,
    page: Page | None = None,
) -> tuple[list[Team], int]:
    """The organization's teams by name (one page of them, when ``page`` is given) and their
    total. ``secret_of``: when given, only the teams visible to everyone in the organization
    and the secret teams with these IDs; ``names``: only the teams with these names."""
    stmt = select(Team).where(Team.organization_id == organization_id)
    if secret_of is not None:
        stmt = stmt.where(or_(Team.visibility == "organization", Team.id.in_(list(secret_of))))
    if names is not None:
        stmt = stmt.where(Team.name.in_(list(names)))
    stmt = stmt.order_by(Team.name)
    if page is None:
        rows = list(s.scalars(stmt))
        return rows, len(rows)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return list(s.scalars(stmt.offset(page.offset).limit(page.size))), total


def member_ids(s: Session, team_ids: list[str]) -> dict[str, list[str]]:
    """The user IDs of each team's members."""
    out: dict[str, list[str]] = {t: [] for t in team_ids}
    if team_ids:
        for team_id, user_id in s.execute(
            select(TeamMembership.team_id, TeamMembership.user_id).where(
                TeamMembership.team_id.in_(team_ids)
            )
        ).all():
            out[team_id].append(user_id)
    return out


def member_count(s: Session, team_id: str) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(TeamMembership)
            .where(TeamMembership.team_id == team_id)
        )
        or 0
    )


def membership(s: Session, team_id: str, user_id: str) -> TeamMembership | None:
    return s.get(TeamMembership, (team_id, user_id))


def user(s: Session, name_or_id: str) -> User | None:
    """A user by ID when ``name_or_id`` has the shape of a user ID, else by username — never
    both, so a user named like another user's ID (created before usernames were kept from
    looking like IDs) cannot be taken for that user."""
    if ids.looks_like("user", name_or_id):
        return s.scalar(select(User).where(User.id == name_or_id))
    return s.scalar(select(User).where(User.username == name_or_id))


def users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.username)))


def revoke_service_tokens(s: Session, team_id: str, now: datetime) -> None:
    """Revoke every token of the team's service account (it loses its team)."""
    s.execute(
        update(ApiToken)
        .where(
            ApiToken.user_id.in_(
                select(User.id).where(User.team_id == team_id, User.is_service_account)
            ),
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


# ---- grants and roles ------------------------------------------------------------------------


def grants(
    s: Session, organization_id: str, *, kind: str | None, workspace_id: str | None
) -> list[Grant]:
    stmt = select(Grant).where(Grant.organization_id == organization_id)
    if kind:
        stmt = stmt.where(Grant.kind == kind)
    if workspace_id:
        stmt = stmt.where(Grant.workspace_id == workspace_id)
    return list(s.scalars(stmt.order_by(Grant.created_at)))


def grant(s: Session, grant_id: str) -> tuple[Organization, Grant] | None:
    """A grant with its organization."""
    g = s.get(Grant, grant_id)
    org = s.get(Organization, g.organization_id) if g is not None else None
    return None if g is None or org is None else (org, g)


def grant_names(s: Session, g: Grant) -> tuple[str | None, str | None, str | None]:
    """The names a grant shows: its team, its user and its workspace (when it has them)."""
    t = s.get(Team, g.team_id) if g.team_id else None
    u = s.get(User, g.user_id) if g.user_id else None
    ws = s.get(Workspace, g.workspace_id) if g.workspace_id else None
    return (t.name if t else None, u.username if u else None, ws.name if ws else None)


def role_exists(s: Session, organization_id: str, name: str) -> bool:
    found = s.scalar(
        select(Role.id).where(Role.organization_id == organization_id, Role.name == name)
    )
    return found is not None


def roles(s: Session, organization_id: str) -> list[Role]:
    return list(
        s.scalars(select(Role).where(Role.organization_id == organization_id).order_by(Role.name))
    )


def delete_role(s: Session, organization_id: str, name: str) -> bool:
    """Delete a custom role and every grant of it; False when there was no such role."""
    n = affected(
        s.execute(delete(Role).where(Role.organization_id == organization_id, Role.name == name))
    )
    if n:
        s.execute(delete(Grant).where(Grant.organization_id == organization_id, Grant.role == name))
    return bool(n)


# ---- team-project access ---------------------------------------------------------------------


def project(s: Session, project_id: str) -> tuple[Organization, Project] | None:
    """A project with its organization."""
    row = s.execute(
        select(Organization, Project)
        .join(Project, Project.organization_id == Organization.id)
        .where(Project.id == project_id)
    ).first()
    return None if row is None else (row[0], row[1])


def team_projects(s: Session, project_id: str, page: Page) -> tuple[list[TeamProject], int]:
    """One page of a project's team access (oldest first) and their total."""
    stmt = select(TeamProject).where(TeamProject.project_id == project_id)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(
        stmt.order_by(TeamProject.created_at, TeamProject.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


def team_project(s: Session, team_project_id: str) -> TeamProject | None:
    return s.get(TeamProject, team_project_id)
