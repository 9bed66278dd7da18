"""Organizations and projects: rules, inside a unit of work."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import ids
from cairn.auth.model import User
from cairn.auth.principal import ORG_MANAGE, WORKSPACE_READ, Principal
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.names import check_project_name, check_slug
from cairn.organizations.model import DEFAULT_PROJECT, Organization, Project
from cairn.rbac.model import Team, TeamMembership
from cairn.rbac.roles import OWNERS_TEAM
from cairn.tfeapi.jsonapi import Page

EXECUTION_MODES = ("local", "remote", "agent")


@dataclass
class OrgUpdate:
    name: str | None = None
    email: str | None = None
    default_execution_mode: str | None = None


def check_execution_mode(value: str, pointer: str) -> str:
    if value not in EXECUTION_MODES:
        raise Invalid(
            f"execution mode must be one of {', '.join(EXECUTION_MODES)}, not {value!r}",
            pointer=pointer,
        )
    return value


class OrganizationService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ---- lookups used by every domain -----------------------------------------------------

    @staticmethod
    def readable(s: Session, principal: Principal, name: str) -> Organization:
        org = s.scalar(select(Organization).where(Organization.name == name))
        if org is None or not principal.permissions(org.id):
            raise NotFound(f"organization {name!r} not found, or you are not allowed to see it")
        return org

    def default_project_id(self, org_id: str) -> str | None:
        with self._db.unit_of_work() as s:
            return s.scalar(
                select(Project.id).where(Project.organization_id == org_id, Project.is_default)
            )

    # ---- organizations --------------------------------------------------------------------

    def create(
        self, principal: Principal, name: str, email: str, default_mode: str | None
    ) -> Organization:
        if not principal.is_site_admin:
            raise Forbidden("only a site admin may create organizations")
        check_slug("organization", name, max_len=100)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org = Organization(
                id=ids.new_id("organization"),
                name=name,
                email=email,
                default_execution_mode=default_mode or "local",
                created_at=now,
                updated_at=now,
            )
            s.add(org)
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: organization {name!r} exists",
                    pointer="/data/attributes/name",
                ) from None
            s.add(
                Project(
                    id=ids.new_id("project"),
                    organization_id=org.id,
                    name=DEFAULT_PROJECT,
                    is_default=True,
                    created_at=now,
                )
            )
            # As in HCP Terraform: an owners team, with the creator as its first member.
            owners = Team(
                id=ids.new_id("team"),
                organization_id=org.id,
                name=OWNERS_TEAM,
                organization_access="",
                visibility="secret",
                created_at=now,
            )
            s.add(owners)
            s.flush()
            s.add(TeamMembership(team_id=owners.id, user_id=principal.user_id, source="manual"))
            s.commit()
            return org

    def list_organizations(
        self, principal: Principal, page: Page, query: str | None
    ) -> tuple[list[Organization], int]:
        with self._db.unit_of_work() as s:
            stmt = select(Organization)
            if query:
                stmt = stmt.where(Organization.name.contains(query, autoescape=True))
            orgs = [
                o
                for o in s.scalars(stmt.order_by(Organization.name))
                if principal.permissions(o.id)
            ]
        return orgs[page.offset : page.offset + page.size], len(orgs)

    def get(self, principal: Principal, name: str) -> Organization:
        with self._db.unit_of_work() as s:
            return self.readable(s, principal, name)

    def update(self, principal: Principal, name: str, change: OrgUpdate) -> Organization:
        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, principal, name)
            if not principal.can(ORG_MANAGE, org.id):
                raise Forbidden(f"you may not change organization {name!r}")
            if change.name is not None and change.name != org.name:
                check_slug("organization", change.name, max_len=100)
                # The organization token's service account is named after the organization.
                s.execute(
                    update(User)
                    .where(User.username == f"api-org-{org.name}", User.is_service_account)
                    .values(username=f"api-org-{change.name}")
                    .execution_options(synchronize_session=False)
                )
                org.name = change.name
            if change.email is not None:
                org.email = change.email
            if change.default_execution_mode is not None:
                org.default_execution_mode = change.default_execution_mode
            org.updated_at = self._clock.now()
            try:
                s.commit()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: organization {change.name!r} exists",
                    pointer="/data/attributes/name",
                ) from None
            return org

    def delete(self, principal: Principal, name: str) -> None:
        from cairn.workspaces.model import Workspace

        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, principal, name)
            if not principal.can(ORG_MANAGE, org.id):
                raise Forbidden(f"you may not delete organization {name!r}")
            locked = s.scalar(
                select(func.count())
                .select_from(Workspace)
                .where(Workspace.organization_id == org.id, Workspace.locked_by_id.is_not(None))
            )
            if locked:
                raise Conflict(
                    f"organization {name!r} has {locked} locked workspace(s); unlock them first"
                )
            # The organization token's service account (and so its tokens) goes with it.
            s.execute(
                delete(User).where(User.username == f"api-org-{org.name}", User.is_service_account)
            )
            s.delete(org)
            s.commit()

    # ---- projects -------------------------------------------------------------------------

    def list_projects(
        self,
        principal: Principal,
        org_name: str,
        page: Page,
        names: list[str] | None,
        q: str | None,
    ) -> tuple[Organization, list[Project], int]:
        with self._db.unit_of_work() as s:
            org = self.readable(s, principal, org_name)
            stmt = select(Project).where(Project.organization_id == org.id)
            if names:
                stmt = stmt.where(Project.name.in_(names))
            if q:
                stmt = stmt.where(Project.name.contains(q, autoescape=True))
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = list(s.scalars(stmt.order_by(Project.name).offset(page.offset).limit(page.size)))
            return org, rows, total

    def create_project(
        self, principal: Principal, org_name: str, name: str, description: str
    ) -> tuple[Organization, Project]:
        check_project_name(name)
        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, principal, org_name)
            if not principal.can(ORG_MANAGE, org.id):
                raise Forbidden(f"you may not create projects in organization {org_name!r}")
            prj = Project(
                id=ids.new_id("project"),
                organization_id=org.id,
                name=name,
                description=description,
                created_at=self._clock.now(),
            )
            s.add(prj)
            try:
                s.commit()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: project {name!r} exists",
                    pointer="/data/attributes/name",
                ) from None
            return org, prj

    def get_project(self, principal: Principal, project_id: str) -> tuple[Organization, Project]:
        with self._db.unit_of_work() as s:
            return self._project(s, principal, project_id)

    @staticmethod
    def _project(s: Session, principal: Principal, project_id: str) -> tuple[Organization, Project]:
        row = s.execute(
            select(Organization, Project)
            .join(Project, Project.organization_id == Organization.id)
            .where(Project.id == project_id)
        ).first()
        if row is None or not principal.can(WORKSPACE_READ, row[0].id):
            raise NotFound(f"project {project_id!r} not found, or you are not allowed to see it")
        return row[0], row[1]

    def update_project(
        self, principal: Principal, project_id: str, name: str | None, description: str | None
    ) -> tuple[Organization, Project]:
        with self._db.unit_of_work(write=True) as s:
            org, prj = self._project(s, principal, project_id)
            if not principal.can(ORG_MANAGE, org.id):
                raise Forbidden("you may not change this project")
            if name is not None and name != prj.name:
                if prj.is_default:
                    raise Invalid(
                        "the Default Project cannot be renamed", pointer="/data/attributes/name"
                    )
                prj.name = check_project_name(name)
            if description is not None:
                prj.description = description
            try:
                s.commit()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: project {name!r} exists",
                    pointer="/data/attributes/name",
                ) from None
            return org, prj

    def delete_project(self, principal: Principal, project_id: str) -> None:
        from cairn.workspaces.model import Workspace

        with self._db.unit_of_work(write=True) as s:
            org, prj = self._project(s, principal, project_id)
            if not principal.can(ORG_MANAGE, org.id):
                raise Forbidden("you may not delete this project")
            if prj.is_default:
                raise Conflict("the Default Project cannot be deleted")
            used = s.scalar(
                select(func.count()).select_from(Workspace).where(Workspace.project_id == prj.id)
            )
            if used:
                raise Conflict(
                    f"project {prj.name!r} still holds {used} workspace(s); "
                    "move or delete them first"
                )
            s.delete(prj)
            s.commit()
