"""Organization and project rows, read in the caller's session (its unit of work).

Other domains look organizations up here (``readable``), never through the service.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.permissions import ORG_READ, PROJECT_READ
from cairn.authz.subject import Subject
from cairn.organizations.model import Organization, Project
from cairn.paging import Page


def target(org: Organization) -> authz.Org:
    """The organization as the authorizer sees it."""
    return authz.Org(org.id, org.name)


def project_target(org: Organization, prj: Project) -> authz.Project:
    """A project as the authorizer sees it."""
    return authz.Project(org.id, org.name, prj.id, prj.name, prj.is_default)


def readable(s: Session, caller: Subject, name: str) -> Organization:
    """The organization named ``name``: NotFound when it does not exist and when the caller may
    not see it (the same answer, so that existence does not leak)."""
    org = s.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        raise authz.not_found("organization", repr(name))
    authz.require(caller, ORG_READ, target(org))
    return org


def visible(caller: Subject) -> ColumnElement[bool]:
    """A SQL condition: the organizations the caller may see. Only the organizations named in
    the caller's access can qualify, so the rule is asked for those few, never for every row."""
    if caller.is_site_admin:
        return true()
    access = caller.access
    candidates = set(access.organization) | {g.organization_id for g in access.grants}
    ids = [i for i in candidates if authz.allowed(caller, ORG_READ, authz.Org(i, ""))]
    return Organization.id.in_(ids)


def search(
    s: Session, caller: Subject, page: Page, query: str | None
) -> tuple[list[Organization], int]:
    """One page of the organizations the caller may see, by name, and their total."""
    stmt = select(Organization).where(visible(caller))
    if query:
        stmt = stmt.where(Organization.name.contains(query, autoescape=True))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(stmt.order_by(Organization.name).offset(page.offset).limit(page.size))
    return list(rows), total


def default_project_id(s: Session, org_id: str) -> str | None:
    return s.scalar(select(Project.id).where(Project.organization_id == org_id, Project.is_default))


def project(s: Session, caller: Subject, project_id: str) -> tuple[Organization, Project]:
    """A project and its organization; NotFound unless the caller may read it (read-projects,
    read-workspaces, team-project access: ``authz.Project``; the project's own ID is named,
    never its organization: no leak)."""
    row = s.execute(
        select(Organization, Project)
        .join(Project, Project.organization_id == Organization.id)
        .where(Project.id == project_id)
    ).first()
    if row is None or not authz.allowed(caller, PROJECT_READ, project_target(row[0], row[1])):
        raise authz.not_found("project", repr(project_id))
    return row[0], row[1]


def projects(
    s: Session, org: Organization, page: Page, names: list[str] | None, q: str | None
) -> tuple[list[Project], int]:
    """One page of an organization's projects, by name, and their total."""
    stmt = select(Project).where(Project.organization_id == org.id)
    if names:
        stmt = stmt.where(Project.name.in_(names))
    if q:
        stmt = stmt.where(Project.name.contains(q, autoescape=True))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(stmt.order_by(Project.name).offset(page.offset).limit(page.size))
    return list(rows), total
