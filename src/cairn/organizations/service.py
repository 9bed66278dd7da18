"""Organizations and projects: rules, inside a unit of work."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.auth.model import User
from cairn.authz.model import Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE, WORKSPACE_READ
from cairn.authz.roles import OWNERS_TEAM
from cairn.authz.subject import Subject, org_service_name
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.names import check_project_name, check_slug
from cairn.organizations.model import DEFAULT_PROJECT, Organization, Project
from cairn.paging import Page

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
    def readable(s: Session, caller: Subject, name: str) -> Organization:
        org = s.scalar(select(Organization).where(Organization.name == name))
        if org is None or not authz.permissions(caller, org.id):
            raise NotFound(f"organization {name!r} not found, or you are not allowed to see it")
        return org

    def default_project_id(self, org_id: str) -> str | None:
        with self._db.unit_of_work() as s:
            return s.scalar(
                select(Project.id).where(Project.organization_id == org_id, Project.is_default)
            )

    # ---- organizations --------------------------------------------------------------------

    def create(
        self, caller: Subject, name: str, email: str, default_mode: str | None
    ) -> Organization:
        if not caller.is_site_admin:
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
            s.add(TeamMembership(team_id=owners.id, user_id=caller.id, source="manual"))
            s.commit()
            return org

    def list_organizations(
        self, caller: Subject, page: Page, query: str | None
    ) -> tuple[list[Organization], int]:
        with self._db.unit_of_work() as s:
            stmt = select(Organization)
            if query:
                stmt = stmt.where(Organization.name.contains(query, autoescape=True))
            orgs = [
                o
                for o in s.scalars(stmt.order_by(Organization.name))
                if authz.permissions(caller, o.id)
            ]
        return orgs[page.offset : page.offset + page.size], len(orgs)

    def get(self, caller: Subject, name: str) -> Organization:
        with self._db.unit_of_work() as s:
            return self.readable(s, caller, name)

    def update(self, caller: Subject, name: str, change: OrgUpdate) -> Organization:
        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, caller, name)
            if not authz.can(caller, ORG_MANAGE, org.id):
                raise Forbidden(f"you may not change organization {name!r}")
            if change.name is not None and change.name != org.name:
                check_slug("organization", change.name, max_len=100)
                # The organization token's service account is named after the organization.
                s.execute(
                    update(User)
                    .where(
                        User.organization_id == org.id,
                        User.team_id.is_(None),
                        User.is_service_account,
                    )
                    .values(username=org_service_name(change.name))
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

    def delete(self, caller: Subject, name: str) -> None:
        from cairn.workspaces.model import Workspace

        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, caller, name)
            if not authz.can(caller, ORG_MANAGE, org.id):
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
            # Its service accounts (and so their tokens) go with it: ON DELETE CASCADE.
            s.execute(delete(Organization).where(Organization.id == org.id))
            s.commit()

    # ---- projects -------------------------------------------------------------------------

    def list_projects(
        self,
        caller: Subject,
        org_name: str,
        page: Page,
        names: list[str] | None,
        q: str | None,
    ) -> tuple[Organization, list[Project], int]:
        with self._db.unit_of_work() as s:
            org = self.readable(s, caller, org_name)
            stmt = select(Project).where(Project.organization_id == org.id)
            if names:
                stmt = stmt.where(Project.name.in_(names))
            if q:
                stmt = stmt.where(Project.name.contains(q, autoescape=True))
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = list(s.scalars(stmt.order_by(Project.name).offset(page.offset).limit(page.size)))
            return org, rows, total

    def create_project(
        self, caller: Subject, org_name: str, name: str, description: str
    ) -> tuple[Organization, Project]:
        check_project_name(name)
        with self._db.unit_of_work(write=True) as s:
            org = self.readable(s, caller, org_name)
            if not authz.can(caller, ORG_MANAGE, org.id):
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

    def get_project(self, caller: Subject, project_id: str) -> tuple[Organization, Project]:
        with self._db.unit_of_work() as s:
            return self._project(s, caller, project_id)

    @staticmethod
    def _project(s: Session, caller: Subject, project_id: str) -> tuple[Organization, Project]:
        row = s.execute(
            select(Organization, Project)
            .join(Project, Project.organization_id == Organization.id)
            .where(Project.id == project_id)
        ).first()
        if row is None or not authz.can(caller, WORKSPACE_READ, row[0].id):
            raise NotFound(f"project {project_id!r} not found, or you are not allowed to see it")
        return row[0], row[1]

    def update_project(
        self, caller: Subject, project_id: str, name: str | None, description: str | None
    ) -> tuple[Organization, Project]:
        with self._db.unit_of_work(write=True) as s:
            org, prj = self._project(s, caller, project_id)
            if not authz.can(caller, ORG_MANAGE, org.id):
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

    def delete_project(self, caller: Subject, project_id: str) -> None:
        from cairn.workspaces.model import Workspace

        with self._db.unit_of_work(write=True) as s:
            org, prj = self._project(s, caller, project_id)
            if not authz.can(caller, ORG_MANAGE, org.id):
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
