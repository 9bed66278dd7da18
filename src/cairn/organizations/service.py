"""Organizations and projects: the rules, inside one unit of work each.

What higher domains must do when an organization is created, renamed or deleted (its owners
team, its token's service account, refusing while workspaces are locked) they register as
``OrganizationHooks``; this package imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.authz.permissions import ORG_MANAGE, PROJECT_MANAGE
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Invalid
from cairn.names import check_project_name, check_slug
from cairn.organizations import store
from cairn.organizations.hooks import OrganizationHooks
from cairn.organizations.model import (
    DEFAULT_PROJECT,
    SPECULATIVE_PLAN_CREDENTIALS,
    Organization,
    Project,
)
from cairn.paging import Page

EXECUTION_MODES = ("local", "remote", "agent")


@dataclass
class OrgUpdate:
    name: str | None = None
    email: str | None = None
    default_execution_mode: str | None = None
    speculative_plan_credentials: str | None = None


def check_execution_mode(value: str, pointer: str) -> str:
    if value not in EXECUTION_MODES:
        raise Invalid(
            f"execution mode must be one of {', '.join(EXECUTION_MODES)}, not {value!r}",
            pointer=pointer,
        )
    return value


def check_speculative_plan_credentials(value: str, pointer: str) -> str:
    """A ``speculative-plan-credentials`` value: same, distinct_subject or none (422)."""
    if value not in SPECULATIVE_PLAN_CREDENTIALS:
        raise Invalid(
            "speculative-plan-credentials must be one of "
            f"{', '.join(SPECULATIVE_PLAN_CREDENTIALS)}, not {value[:40]!r}: same gives "
            "speculative plans the tokens a plan gets (HCP Terraform's behaviour), "
            "distinct_subject gives them run_phase:speculative_plan, none gives them none",
            pointer=pointer,
        )
    return value


def _taken(kind: str, name: str | None) -> Invalid:
    return Invalid(
        f"Name has already been taken: {kind} {name!r} exists", pointer="/data/attributes/name"
    )


class OrganizationService:
    def __init__(self, db: Database, clock: Clock, hooks: OrganizationHooks | None = None) -> None:
        self._db = db
        self._clock = clock
        self.hooks = hooks or OrganizationHooks()

    def default_project_id(self, org_id: str) -> str | None:
        with self._db.unit_of_work() as s:
            return store.default_project_id(s, org_id)

    # ---- organizations --------------------------------------------------------------------

    def create(
        self, caller: Subject, name: str, email: str, default_mode: str | None
    ) -> Organization:
        authz.require(caller, authz.SITE_MANAGE, authz.SITE, doing="create organizations in")
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
                raise _taken("organization", name) from None
            s.add(
                Project(
                    id=ids.new_id("project"),
                    organization_id=org.id,
                    name=DEFAULT_PROJECT,
                    is_default=True,
                    created_at=now,
                )
            )
            s.flush()
            for after_create in self.hooks.after_create:
                after_create(s, org, caller)
            s.commit()
            return org

    def list_organizations(
        self, caller: Subject, page: Page, query: str | None
    ) -> tuple[list[Organization], int]:
        with self._db.unit_of_work() as s:
            return store.search(s, caller, page, query)

    def get(self, caller: Subject, name: str) -> Organization:
        with self._db.unit_of_work() as s:
            return store.readable(s, caller, name)

    def _managed(self, s: Session, caller: Subject, name: str, doing: str) -> Organization:
        org = store.readable(s, caller, name)
        authz.require(caller, ORG_MANAGE, store.target(org), doing=doing)
        return org

    def update(self, caller: Subject, name: str, change: OrgUpdate) -> Organization:
        with self._db.unit_of_work(write=True) as s:
            org = self._managed(s, caller, name, "change")
            old_name = org.name
            if change.name is not None and change.name != org.name:
                check_slug("organization", change.name, max_len=100)
                org.name = change.name
            if change.email is not None:
                org.email = change.email
            if change.default_execution_mode is not None:
                org.default_execution_mode = change.default_execution_mode
            if change.speculative_plan_credentials is not None:
                org.speculative_plan_credentials = change.speculative_plan_credentials
            org.updated_at = self._clock.now()
            try:
                s.flush()
                if org.name != old_name:
                    for after_rename in self.hooks.after_rename:
                        after_rename(s, org, old_name)
                s.commit()
            except IntegrityError:
                raise _taken("organization", change.name) from None
            return org

    def delete(self, caller: Subject, name: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org = self._managed(s, caller, name, "delete")
            for before_delete in self.hooks.before_delete:
                before_delete(s, org)
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
            org = store.readable(s, caller, org_name)
            rows, total = store.projects(s, org, page, names, q)
            return org, rows, total

    def workspace_counts(
        self, caller: Subject, org: Organization, project_ids: list[str]
    ) -> dict[str, int]:
        """How many workspaces of each project the caller may read (0 for none)."""
        counts = self.hooks.workspace_counts
        if counts is None or not project_ids:
            return {}
        with self._db.unit_of_work() as s:
            return counts(s, caller, org, project_ids)

    def create_project(
        self, caller: Subject, org_name: str, name: str, description: str
    ) -> tuple[Organization, Project]:
        check_project_name(name)
        with self._db.unit_of_work(write=True) as s:
            org = store.readable(s, caller, org_name)
            # TFE's manage-projects (org-wide project:manage), the owners.
            authz.require(caller, PROJECT_MANAGE, store.target(org), doing="create projects in")
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
                raise _taken("project", name) from None
            return org, prj

    def get_project(self, caller: Subject, project_id: str) -> tuple[Organization, Project]:
        with self._db.unit_of_work() as s:
            return store.project(s, caller, project_id)

    def update_project(
        self, caller: Subject, project_id: str, name: str | None, description: str | None
    ) -> tuple[Organization, Project]:
        with self._db.unit_of_work(write=True) as s:
            org, prj = store.project(s, caller, project_id)
            target = store.project_target(org, prj)
            authz.require(caller, PROJECT_MANAGE, target, doing="change the settings of")
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
                raise _taken("project", name) from None
            return org, prj

    def delete_project(self, caller: Subject, project_id: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, prj = store.project(s, caller, project_id)
            authz.require(caller, PROJECT_MANAGE, store.project_target(org, prj), doing="delete")
            if prj.is_default:
                raise Conflict("the Default Project cannot be deleted")
            for before_delete_project in self.hooks.before_delete_project:
                before_delete_project(s, org, prj)
            s.delete(prj)
            s.commit()
