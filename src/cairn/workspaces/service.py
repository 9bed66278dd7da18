"""Workspaces: creation, lookup, search, settings, tags and the lock."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import principal_actor, record
from cairn.auth.model import User
from cairn.authz.permissions import (
    ORG_MANAGE,
    WORKSPACE_LOCK,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
    WORKSPACE_WRITE,
)
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from cairn.names import check_slug, check_tag
from cairn.organizations.model import Organization, Project
from cairn.organizations.service import OrganizationService
from cairn.paging import Page
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag

MAX_WORKSPACE_NAME = 90


def workspace_not_found(ws_id: str) -> NotFound:
    """The answer for a workspace that does not exist and for one the caller may not read
    (the same, so that existence does not leak)."""
    return NotFound(f"workspace {ws_id!r} not found, or you are not allowed to see it")


@dataclass
class WorkspaceView:
    """A workspace with what its document shows: organization, tags, caller's permissions."""

    ws: Workspace
    org: Organization
    project_name: str
    tags: list[str]
    permissions: frozenset[str]
    locked_by_name: str | None = None


@dataclass
class WorkspaceSettings:
    """Attributes a create or update may set; None means "leave as is" (or default)."""

    name: str | None = None
    description: str | None = None
    execution_mode: str | None = None
    terraform_version: str | None = None
    auto_apply: bool | None = None
    working_directory: str | None = None
    allow_destroy_plan: bool | None = None
    global_remote_state: bool | None = None
    speculative_enabled: bool | None = None
    queue_all_runs: bool | None = None
    project_id: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ListFilter:
    name: str | None = None
    wildcard: str | None = None
    tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    project_id: str | None = None
    sort: str = "name"


_SORTS: dict[str, Any] = {
    "name": Workspace.name.asc(),
    "-name": Workspace.name.desc(),
    "created-at": Workspace.created_at.asc(),
    "-created-at": Workspace.created_at.desc(),
    "updated-at": Workspace.updated_at.asc(),
    "-updated-at": Workspace.updated_at.desc(),
}


class WorkspaceService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ---- lookups ----------------------------------------------------------------------------

    @staticmethod
    def find(s: Session, caller: Subject, ws_id: str) -> tuple[Organization, Workspace]:
        row = s.execute(
            select(Organization, Workspace)
            .join(Workspace, Workspace.organization_id == Organization.id)
            .where(Workspace.id == ws_id)
        ).first()
        if row is None or not authz.can(caller, WORKSPACE_READ, row[0].id, row[1].name, row[1].id):
            raise workspace_not_found(ws_id)
        return row[0], row[1]

    @staticmethod
    def find_by_name(
        s: Session, caller: Subject, org_name: str, name: str
    ) -> tuple[Organization, Workspace]:
        org = OrganizationService.readable(s, caller, org_name)
        ws = s.scalar(
            select(Workspace).where(Workspace.organization_id == org.id, Workspace.name == name)
        )
        if ws is None or not authz.can(caller, WORKSPACE_READ, org.id, ws.name, ws.id):
            raise NotFound(
                f"workspace {org_name}/{name} not found, or you are not allowed to see it"
            )
        return org, ws

    def _view(self, s: Session, caller: Subject, org: Organization, ws: Workspace) -> WorkspaceView:
        return self._views(s, caller, org, [ws])[0]

    @staticmethod
    def _views(
        s: Session, caller: Subject, org: Organization, rows: list[Workspace]
    ) -> list[WorkspaceView]:
        ws_ids = [w.id for w in rows]
        tags: dict[str, list[str]] = defaultdict(list)
        if ws_ids:
            for ws_id, tag_name in s.execute(
                select(WorkspaceTag.workspace_id, Tag.name)
                .join(Tag, Tag.id == WorkspaceTag.tag_id)
                .where(WorkspaceTag.workspace_id.in_(ws_ids))
                .order_by(Tag.name)
            ):
                tags[ws_id].append(tag_name)
        project_names = dict(
            s.execute(
                select(Project.id, Project.name).where(Project.organization_id == org.id)
            ).all()
        )
        lockers = {w.locked_by_id for w in rows if w.locked_by_kind == "users" and w.locked_by_id}
        names = (
            dict(s.execute(select(User.id, User.username).where(User.id.in_(lockers))).all())
            if lockers
            else {}
        )
        return [
            WorkspaceView(
                ws=w,
                org=org,
                project_name=project_names.get(w.project_id, ""),
                tags=tags[w.id],
                permissions=authz.permissions(caller, org.id, w.name, w.id),
                locked_by_name=names.get(w.locked_by_id or ""),
            )
            for w in rows
        ]

    def get(self, caller: Subject, ws_id: str) -> WorkspaceView:
        with self._db.unit_of_work() as s:
            org, ws = self.find(s, caller, ws_id)
            return self._view(s, caller, org, ws)

    def get_by_name(self, caller: Subject, org_name: str, name: str) -> WorkspaceView:
        with self._db.unit_of_work() as s:
            org, ws = self.find_by_name(s, caller, org_name, name)
            return self._view(s, caller, org, ws)

    def resolve(self, caller: Subject, org_name: str | None, name_or_id: str) -> str:
        """The ID of a workspace named by ID, or by organization and name."""
        with self._db.unit_of_work() as s:
            if org_name is None:
                return self.find(s, caller, name_or_id)[1].id
            return self.find_by_name(s, caller, org_name, name_or_id)[1].id

    def search(
        self, caller: Subject, org_name: str, flt: ListFilter, page: Page
    ) -> tuple[list[WorkspaceView], int]:
        with self._db.unit_of_work() as s:
            org = OrganizationService.readable(s, caller, org_name)
            stmt = select(Workspace).where(Workspace.organization_id == org.id)
            if flt.name:
                stmt = stmt.where(Workspace.name.contains(flt.name, autoescape=True))
            if flt.wildcard:
                stmt = stmt.where(Workspace.name.like(_wildcard(flt.wildcard), escape="\\"))
            if flt.project_id:
                stmt = stmt.where(Workspace.project_id == flt.project_id)
            for tag in flt.tags:
                stmt = stmt.where(
                    Workspace.id.in_(
                        select(WorkspaceTag.workspace_id)
                        .join(Tag, Tag.id == WorkspaceTag.tag_id)
                        .where(Tag.organization_id == org.id, Tag.name == tag)
                    )
                )
            if flt.exclude_tags:
                stmt = stmt.where(
                    Workspace.id.not_in(
                        select(WorkspaceTag.workspace_id)
                        .join(Tag, Tag.id == WorkspaceTag.tag_id)
                        .where(Tag.organization_id == org.id, Tag.name.in_(flt.exclude_tags))
                    )
                )
            rows = [
                w
                for w in s.scalars(stmt.order_by(_SORTS[flt.sort], Workspace.id))
                if authz.can(caller, WORKSPACE_READ, org.id, w.name, w.id)
            ]
            chosen = rows[page.offset : page.offset + page.size]
            return self._views(s, caller, org, chosen), len(rows)

    # ---- create / update / delete ------------------------------------------------------------

    def create(self, caller: Subject, org_name: str, change: WorkspaceSettings) -> WorkspaceView:
        name = check_slug("workspace", change.name or "", max_len=MAX_WORKSPACE_NAME)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org = OrganizationService.readable(s, caller, org_name)
            if not authz.can(caller, ORG_MANAGE, org.id) and not authz.can(
                caller, WORKSPACE_MANAGE, org.id, name
            ):
                raise Forbidden(f"you may not create workspaces in organization {org_name!r}")
            project_id = self._project_id(s, org, change.project_id)
            ws = Workspace(
                id=ids.new_id("workspace"),
                organization_id=org.id,
                project_id=project_id,
                name=name,
                description=change.description or "",
                execution_mode=change.execution_mode or org.default_execution_mode,
                terraform_version=change.terraform_version or "latest",
                auto_apply=bool(change.auto_apply),
                working_directory=change.working_directory or "",
                allow_destroy_plan=True
                if change.allow_destroy_plan is None
                else change.allow_destroy_plan,
                global_remote_state=bool(change.global_remote_state),
                speculative_enabled=True
                if change.speculative_enabled is None
                else change.speculative_enabled,
                queue_all_runs=bool(change.queue_all_runs),
                created_at=now,
                updated_at=now,
            )
            s.add(ws)
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: workspace {org_name}/{name} exists",
                    pointer="/data/attributes/name",
                ) from None
            self._add_tags(s, org, ws, change.tags, "/data/attributes/tag-names")
            s.commit()
            return self._view(s, caller, org, ws)

    @staticmethod
    def _project_id(s: Session, org: Organization, project_id: str | None) -> str:
        if project_id is None:
            found = s.scalar(
                select(Project.id).where(Project.organization_id == org.id, Project.is_default)
            )
            if found is None:
                raise Conflict(f"organization {org.name!r} has no default project")
            return found
        found = s.scalar(
            select(Project.id).where(Project.organization_id == org.id, Project.id == project_id)
        )
        if found is None:
            raise Invalid(
                f"project {project_id!r} does not exist in organization {org.name!r}",
                pointer="/data/relationships/project",
            )
        return found

    def update(self, caller: Subject, ws_id: str, change: WorkspaceSettings) -> WorkspaceView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_MANAGE, org.id, ws.name, ws.id):
                raise Forbidden(
                    f"you may not change the settings of workspace {org.name}/{ws.name}"
                )
            if change.name is not None and change.name != ws.name:
                ws.name = check_slug("workspace", change.name, max_len=MAX_WORKSPACE_NAME)
            for attr in (
                "description",
                "execution_mode",
                "terraform_version",
                "auto_apply",
                "working_directory",
                "allow_destroy_plan",
                "global_remote_state",
                "speculative_enabled",
                "queue_all_runs",
            ):
                value = getattr(change, attr)
                if value is not None:
                    setattr(ws, attr, value)
            if change.project_id is not None:
                ws.project_id = self._project_id(s, org, change.project_id)
            ws.updated_at = self._clock.now()
            taken = f"{org.name}/{change.name}"  # read before a failed flush spoils the objects
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: workspace {taken} exists",
                    pointer="/data/attributes/name",
                ) from None
            s.commit()
            return self._view(s, caller, org, ws)

    def delete(self, caller: Subject, ws_id: str, *, safe: bool) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_MANAGE, org.id, ws.name, ws.id):
                raise Forbidden(f"you may not delete workspace {org.name}/{ws.name}")
            if ws.locked_by_id is not None and not (
                ws.locked_by_kind == "users" and ws.locked_by_id == caller.id
            ):
                raise Conflict(
                    f"workspace {org.name}/{ws.name} is locked; unlock it before deleting it"
                )
            if safe and ws.resource_count > 0:
                raise Conflict(
                    f"workspace {org.name}/{ws.name} still manages {ws.resource_count} resource "
                    "instance(s); destroy them first, or delete the workspace without safe-delete"
                )
            # Conditional on the lock state read above, so a lock taken meanwhile wins.
            gone = affected(
                s.execute(
                    delete(Workspace).where(
                        Workspace.id == ws.id,
                        Workspace.locked_by_id.is_(None)
                        if ws.locked_by_id is None
                        else Workspace.locked_by_id == ws.locked_by_id,
                    )
                )
            )
            if gone != 1:
                raise Conflict(f"workspace {org.name}/{ws.name} was locked meanwhile; try again")
            s.commit()

    # ---- the lock ----------------------------------------------------------------------------

    def lock(self, caller: Subject, ws_id: str, reason: str) -> WorkspaceView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_LOCK, org.id, ws.name, ws.id):
                raise Forbidden(f"you may not lock workspace {org.name}/{ws.name}")
            won = affected(
                s.execute(
                    update(Workspace)
                    .where(Workspace.id == ws.id, Workspace.locked_by_id.is_(None))
                    .values(
                        locked_by_kind="users",
                        locked_by_id=caller.id,
                        lock_reason=reason[:500],
                        locked_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            if won != 1:
                s.rollback()
                raise Conflict(self._held_message(s, org, ws.id, "is already locked"))
            self._audit(s, caller, "workspace.lock", org, ws, reason=reason[:500])
            s.commit()
            s.refresh(ws)
            return self._view(s, caller, org, ws)

    def unlock(self, caller: Subject, ws_id: str) -> WorkspaceView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_LOCK, org.id, ws.name, ws.id):
                raise Forbidden(f"you may not unlock workspace {org.name}/{ws.name}")
            done = affected(
                s.execute(
                    update(Workspace)
                    .where(
                        Workspace.id == ws.id,
                        Workspace.locked_by_kind == "users",
                        Workspace.locked_by_id == caller.id,
                    )
                    .values(locked_by_kind=None, locked_by_id=None, lock_reason="", locked_at=None)
                    .execution_options(synchronize_session=False)
                )
            )
            if done != 1:
                s.rollback()
                s.refresh(ws)
                if ws.locked_by_id is None:
                    raise Conflict(f"workspace {org.name}/{ws.name} is already unlocked")
                raise Conflict(
                    self._held_message(s, org, ws.id, "is locked")
                    + "; only the holder can unlock it (an admin can force-unlock)"
                )
            self._audit(s, caller, "workspace.unlock", org, ws)
            s.commit()
            s.refresh(ws)
            return self._view(s, caller, org, ws)

    def force_unlock(self, caller: Subject, ws_id: str) -> WorkspaceView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_MANAGE, org.id, ws.name, ws.id):
                raise Forbidden(
                    f"force-unlock of workspace {org.name}/{ws.name} needs admin rights on it"
                )
            done = affected(
                s.execute(
                    update(Workspace)
                    .where(Workspace.id == ws.id, Workspace.locked_by_id.is_not(None))
                    .values(locked_by_kind=None, locked_by_id=None, lock_reason="", locked_at=None)
                    .execution_options(synchronize_session=False)
                )
            )
            if done != 1:
                raise Conflict(f"workspace {org.name}/{ws.name} is already unlocked")
            self._audit(s, caller, "workspace.force_unlock", org, ws, holder=ws.locked_by_id)
            s.commit()
            s.refresh(ws)
            return self._view(s, caller, org, ws)

    def _audit(
        self,
        s: Session,
        caller: Subject,
        action: str,
        org: Organization,
        ws: Workspace,
        **details: Any,
    ) -> None:
        record(
            s,
            at=self._clock.now(),
            actor=principal_actor(caller.id, caller.name),
            action=action,
            subject=f"{org.name}/{ws.name}",
            workspace_id=ws.id,
            **details,
        )

    @staticmethod
    def _held_message(s: Session, org: Organization, ws_id: str, verb: str) -> str:
        ws = s.get(Workspace, ws_id, populate_existing=True)
        if ws is None:
            return "the workspace no longer exists"
        holder = "someone"
        if ws.locked_by_kind == "users" and ws.locked_by_id:
            name = s.scalar(select(User.username).where(User.id == ws.locked_by_id))
            holder = f"User {name!r}" if name else f"user {ws.locked_by_id}"
        elif ws.locked_by_id:
            holder = f"{ws.locked_by_kind} {ws.locked_by_id}"
        since = f" since {ws.locked_at:%Y-%m-%d %H:%M:%S} UTC" if ws.locked_at else ""
        return f"workspace {org.name}/{ws.name} {verb} by {holder}{since}"

    # ---- tags --------------------------------------------------------------------------------

    @staticmethod
    def _add_tags(
        s: Session, org: Organization, ws: Workspace, names: list[str], pointer: str = "/data"
    ) -> None:
        for i, raw in enumerate(names):
            name = check_tag(raw, pointer=f"{pointer}/{i}")
            tag = s.scalar(select(Tag).where(Tag.organization_id == org.id, Tag.name == name))
            if tag is None:
                tag = Tag(
                    id=ids.new_id("tag"),
                    organization_id=org.id,
                    name=name,
                    created_at=ws.updated_at,
                )
                try:
                    with s.begin_nested():
                        s.add(tag)
                except IntegrityError:  # created concurrently by another request
                    tag = s.scalar(
                        select(Tag).where(Tag.organization_id == org.id, Tag.name == name)
                    )
                    assert tag is not None
            if s.get(WorkspaceTag, (ws.id, tag.id)) is None:
                s.add(WorkspaceTag(workspace_id=ws.id, tag_id=tag.id))
        s.flush()

    def add_tags(self, caller: Subject, ws_id: str, names: list[str]) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_WRITE, org.id, ws.name, ws.id):
                raise Forbidden(f"you may not tag workspace {org.name}/{ws.name}")
            self._add_tags(s, org, ws, names)
            s.commit()

    def remove_tags(
        self, caller: Subject, ws_id: str, names: list[str], tag_ids: list[str]
    ) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = self.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_WRITE, org.id, ws.name, ws.id):
                raise Forbidden(f"you may not untag workspace {org.name}/{ws.name}")
            ids_to_drop = set(tag_ids)
            if names:
                ids_to_drop |= set(
                    s.scalars(
                        select(Tag.id).where(Tag.organization_id == org.id, Tag.name.in_(names))
                    )
                )
            if ids_to_drop:
                s.execute(
                    delete(WorkspaceTag).where(
                        WorkspaceTag.workspace_id == ws.id, WorkspaceTag.tag_id.in_(ids_to_drop)
                    )
                )
            s.commit()

    def workspace_tags(self, caller: Subject, ws_id: str) -> list[Tag]:
        with self._db.unit_of_work() as s:
            _, ws = self.find(s, caller, ws_id)
            return list(
                s.scalars(
                    select(Tag)
                    .join(WorkspaceTag, WorkspaceTag.tag_id == Tag.id)
                    .where(WorkspaceTag.workspace_id == ws.id)
                    .order_by(Tag.name)
                )
            )

    def organization_tags(
        self, caller: Subject, org_name: str, page: Page, q: str | None
    ) -> tuple[list[tuple[Tag, int]], int]:
        with self._db.unit_of_work() as s:
            org = OrganizationService.readable(s, caller, org_name)
            count = func.count(WorkspaceTag.workspace_id)
            stmt = (
                select(Tag, count)
                .outerjoin(WorkspaceTag, WorkspaceTag.tag_id == Tag.id)
                .where(Tag.organization_id == org.id)
                .group_by(Tag.id)
            )
            if q:
                stmt = stmt.where(Tag.name.contains(q, autoescape=True))
            rows = [(t, int(n)) for t, n in s.execute(stmt.order_by(Tag.name))]
            return rows[page.offset : page.offset + page.size], len(rows)

    def delete_organization_tags(self, caller: Subject, org_name: str, tag_ids: list[str]) -> None:
        with self._db.unit_of_work(write=True) as s:
            org = OrganizationService.readable(s, caller, org_name)
            if not authz.can(caller, ORG_MANAGE, org.id):
                raise Forbidden(f"you may not delete tags in organization {org_name!r}")
            s.execute(delete(Tag).where(Tag.organization_id == org.id, Tag.id.in_(tag_ids)))
            s.commit()


def _wildcard(pattern: str) -> str:
    if len(pattern) > 200:
        raise BadRequest("search[wildcard-name] is too long", parameter="search[wildcard-name]")
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")
