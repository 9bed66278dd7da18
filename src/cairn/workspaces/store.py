"""Workspace rows, read and written in the caller's session (its unit of work).

Other domains look workspaces up here (``find``, ``find_by_name``), never through a service.
Lists are filtered by the authorizer in SQL (``authz.visible``) and paged by the database.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.auth.model import User
from cairn.authz.permissions import ORG_READ, WORKSPACE_READ
from cairn.authz.subject import USER_TYPE, Subject
from cairn.db.base import Base, table_of
from cairn.errors import BadRequest, Conflict, Invalid, NotFound
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization, Project
from cairn.paging import Page
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag


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
class ListFilter:
    name: str | None = None
    wildcard: str | None = None
    tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    project_id: str | None = None
    sort: str = "name"


# search[tags] / search[exclude-tags]: how many tags one list request may name (go-tfe and
# Terraform send a handful), and how long each may be (the longest tag name).
MAX_SEARCH_TAGS = 50
MAX_SEARCH_TAG_LENGTH = 255

SORTS: dict[str, Any] = {
    "name": Workspace.name.asc(),
    "-name": Workspace.name.desc(),
    "created-at": Workspace.created_at.asc(),
    "-created-at": Workspace.created_at.desc(),
    "updated-at": Workspace.updated_at.asc(),
    "-updated-at": Workspace.updated_at.desc(),
}


def target(org: Organization, ws: Workspace) -> authz.Ws:
    """The workspace as the authorizer sees it."""
    return authz.Ws(org.id, org.name, ws.id, ws.name, ws.project_id)


def workspace_not_found(ws_id: str) -> NotFound:
    """The answer for a workspace named by ID that does not exist or that the caller may not
    read (the same, so that existence does not leak; its name is not told either)."""
    return authz.not_found("workspace", repr(ws_id))


# Statements of every workspace show, built once (building one costs more than running it).
_FIND = (
    select(Organization, Workspace)
    .join(Workspace, Workspace.organization_id == Organization.id)
    .where(Workspace.id == bindparam("ws_id"))
)
_TAGS = (
    select(WorkspaceTag.workspace_id, Tag.name)
    .join(Tag, Tag.id == WorkspaceTag.tag_id)
    .where(WorkspaceTag.workspace_id.in_(bindparam("ws_ids", expanding=True)))
    .order_by(Tag.name)
)
_BY_NAME = select(Workspace).where(
    Workspace.organization_id == bindparam("org_id"), Workspace.name == bindparam("name")
)
_PROJECT_NAMES = select(Project.id, Project.name).where(
    Project.organization_id == bindparam("org_id")
)


# ---- workspace show, through Core ---------------------------------------------------------------
# Every ``GET /workspaces/:id`` and ``…/organizations/:org/workspaces/:name`` reads one row with
# its organization, project name and lock holder's name: one Core select (every column of the
# tables, whatever columns later revisions add) on the request's connection, and one for the
# tags. No Session, no identity map: the ORM's loading cost several times the queries.


class _Detached:
    """Builds instances of ``model`` from a slice of a Core row (its mapped columns, in mapper
    order, from ``start``): detached — they belong to no Session, so changing one changes
    nothing —, for reading. The values go straight into the instance's ``__dict__``, as the
    ORM's loader does: the mapped constructor's attribute events cost more than the query.
    (``Mapper.columns``, unlike ``column_attrs``, does not configure every mapper.)"""

    def __init__(self, model: type[Base], start: int = 0) -> None:
        mapper = model.__mapper__
        self._keys = list(mapper.columns.keys())
        self.columns = list(mapper.columns)
        self._start, self._stop = start, start + len(self._keys)
        self._new = mapper.class_manager.new_instance

    def __call__(self, row: Sequence[Any]) -> Any:
        obj = self._new()
        obj.__dict__.update(zip(self._keys, row[self._start : self._stop], strict=True))
        return obj


@dataclass(frozen=True)
class _ShowStatements:
    by_id: Select[Any]
    by_name: Select[Any]
    org_by_name: Select[Any]
    ws: _Detached
    org: _Detached
    org_alone: _Detached


@functools.cache
def _show() -> _ShowStatements:
    """The statements of workspace show, built at the first show (not at import: a start of
    ``cairn serve`` pays for every module-level statement)."""
    ws_t, org_t, prj_t, usr_t = (table_of(m) for m in (Workspace, Organization, Project, User))
    ws = _Detached(Workspace)
    org = _Detached(Organization, len(ws.columns))
    both = (
        select(*ws.columns, *org.columns, prj_t.c.name, usr_t.c.username)
        .select_from(ws_t)
        .join(org_t, org_t.c.id == ws_t.c.organization_id)
        .outerjoin(prj_t, prj_t.c.id == ws_t.c.project_id)
        .outerjoin(
            usr_t, and_(ws_t.c.locked_by_kind == USER_TYPE, usr_t.c.id == ws_t.c.locked_by_id)
        )
    )
    org_alone = _Detached(Organization)
    return _ShowStatements(
        by_id=both.where(ws_t.c.id == bindparam("ws_id")),
        by_name=both.where(org_t.c.name == bindparam("org_name"), ws_t.c.name == bindparam("name")),
        org_by_name=select(*org_alone.columns).where(org_t.c.name == bindparam("org_name")),
        ws=ws,
        org=org,
        org_alone=org_alone,
    )


_PROJECT_NAME, _LOCKED_BY_NAME = -2, -1  # the last two columns of a show's row


def show(conn: Connection, caller: Subject, ws_id: str) -> WorkspaceView:
    """The document's worth of a workspace named by ID, if the caller may read it (Core)."""
    st = _show()
    row = conn.execute(st.by_id, {"ws_id": ws_id}).first()
    if row is None:
        raise workspace_not_found(ws_id)
    org: Organization = st.org(row)
    ws: Workspace = st.ws(row)
    if not authz.allowed(caller, WORKSPACE_READ, target(org, ws)):
        raise workspace_not_found(ws_id)
    return _view(conn, caller, org, ws, row[_PROJECT_NAME], row[_LOCKED_BY_NAME])


def show_by_name(conn: Connection, caller: Subject, org_name: str, name: str) -> WorkspaceView:
    """The document's worth of a workspace named by organization and name, if the caller may
    read it (Core); the same answers as ``find_by_name``."""
    st = _show()
    row = conn.execute(st.by_name, {"org_name": org_name, "name": name}).first()
    if row is None:
        # Which answer: the organization's (missing or hidden), else the workspace's.
        found = conn.execute(st.org_by_name, {"org_name": org_name}).first()
        if found is None:
            raise authz.not_found("organization", repr(org_name))
        authz.require(caller, ORG_READ, orgs.target(st.org_alone(found)))
        raise authz.not_found("workspace", f"{org_name}/{name}")
    org: Organization = st.org(row)
    ws: Workspace = st.ws(row)
    authz.require(caller, ORG_READ, orgs.target(org))
    authz.require(caller, WORKSPACE_READ, target(org, ws))
    return _view(conn, caller, org, ws, row[_PROJECT_NAME], row[_LOCKED_BY_NAME])


def _view(
    conn: Connection,
    caller: Subject,
    org: Organization,
    ws: Workspace,
    project_name: str | None,
    locked_by_name: str | None,
) -> WorkspaceView:
    return WorkspaceView(
        ws=ws,
        org=org,
        project_name=project_name or "",
        tags=[tag for _, tag in conn.execute(_TAGS, {"ws_ids": [ws.id]})],
        permissions=authz.permissions(caller, org.id, ws.name, ws.id),
        locked_by_name=locked_by_name,
    )


def find(s: Session, caller: Subject, ws_id: str) -> tuple[Organization, Workspace]:
    """A workspace by ID, and its organization, if the caller may read it."""
    row = s.execute(_FIND, {"ws_id": ws_id}).first()
    if row is None or not authz.allowed(caller, WORKSPACE_READ, target(row[0], row[1])):
        raise workspace_not_found(ws_id)
    return row[0], row[1]


def find_by_name(
    s: Session, caller: Subject, org_name: str, name: str
) -> tuple[Organization, Workspace]:
    """A workspace by organization and name, if the caller may read it."""
    org = orgs.readable(s, caller, org_name)
    ws = s.scalar(_BY_NAME, {"org_id": org.id, "name": name})
    if ws is None:
        raise authz.not_found("workspace", f"{org_name}/{name}")
    authz.require(caller, WORKSPACE_READ, target(org, ws))
    return org, ws


def views(
    s: Session, caller: Subject, org: Organization, rows: list[Workspace]
) -> list[WorkspaceView]:
    """The documents' worth of each workspace: three queries whatever the number of rows."""
    ws_ids = [w.id for w in rows]
    tags: dict[str, list[str]] = defaultdict(list)
    if ws_ids:
        for ws_id, tag_name in s.execute(_TAGS, {"ws_ids": ws_ids}):
            tags[ws_id].append(tag_name)
    project_names = dict(s.execute(_PROJECT_NAMES, {"org_id": org.id}).all())
    lockers = {h.id for w in rows if (h := w.holder) is not None and h.is_user}
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


def view(s: Session, caller: Subject, org: Organization, ws: Workspace) -> WorkspaceView:
    return views(s, caller, org, [ws])[0]


def search(
    s: Session, caller: Subject, org: Organization, flt: ListFilter, page: Page
) -> tuple[list[Workspace], int]:
    """One page of the workspaces of ``org`` the caller may read, and their total: filtered,
    counted and paged by the database (the authorizer's rule as a WHERE clause)."""
    stmt = _filtered(select(Workspace), org, flt).where(
        authz.visible(
            caller,
            WORKSPACE_READ,
            org.id,
            workspace_id=Workspace.id.expression,
            workspace_name=Workspace.name.expression,
            dialect=s.get_bind().dialect.name,
            project_id=Workspace.project_id.expression,
        )
    )
    total = (
        s.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None))
        or 0
    )
    rows = s.scalars(
        stmt.order_by(SORTS[flt.sort], Workspace.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


def _filtered(stmt: Select[Any], org: Organization, flt: ListFilter) -> Select[Any]:
    stmt = stmt.where(Workspace.organization_id == org.id)
    if flt.name:
        stmt = stmt.where(Workspace.name.contains(flt.name, autoescape=True))
    if flt.wildcard:
        stmt = stmt.where(Workspace.name.like(_wildcard(flt.wildcard), escape="\\"))
    if flt.project_id:
        stmt = stmt.where(Workspace.project_id == flt.project_id)
    tags = _search_tags(flt.tags, "search[tags]")
    if tags:
        # One IN for all tags: the workspaces holding every one of them (a workspace's tags
        # are distinct, so holding all n is having n of them), whatever the number of tags.
        stmt = stmt.where(
            Workspace.id.in_(
                select(WorkspaceTag.workspace_id)
                .join(Tag, Tag.id == WorkspaceTag.tag_id)
                .where(Tag.organization_id == org.id, Tag.name.in_(tags))
                .group_by(WorkspaceTag.workspace_id)
                .having(func.count() == len(tags))
            )
        )
    excluded = _search_tags(flt.exclude_tags, "search[exclude-tags]")
    if excluded:
        stmt = stmt.where(
            Workspace.id.not_in(
                select(WorkspaceTag.workspace_id)
                .join(Tag, Tag.id == WorkspaceTag.tag_id)
                .where(Tag.organization_id == org.id, Tag.name.in_(excluded))
            )
        )
    return stmt


def _search_tags(values: list[str], parameter: str) -> list[str]:
    """The distinct tags of a search parameter, refused (400) beyond the limits."""
    if len(values) > MAX_SEARCH_TAGS:
        raise BadRequest(
            f"{parameter} names {len(values)} tags; at most {MAX_SEARCH_TAGS} are allowed",
            parameter=parameter,
        )
    for value in values:
        if len(value) > MAX_SEARCH_TAG_LENGTH:
            raise BadRequest(
                f"{parameter} holds a tag of {len(value)} characters; a tag has at most "
                f"{MAX_SEARCH_TAG_LENGTH}",
                parameter=parameter,
            )
    return sorted(set(values))


def _wildcard(pattern: str) -> str:
    if len(pattern) > 200:
        raise BadRequest("search[wildcard-name] is too long", parameter="search[wildcard-name]")
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def project_target(org: Organization, prj: Project) -> authz.Project:
    """The project as the authorizer sees it."""
    return authz.Project(org.id, org.name, prj.id, prj.name, prj.is_default)


def placement(
    s: Session, caller: Subject, org: Organization, wanted: str | None, *, doing: str
) -> str:
    """The project a workspace goes into, if the caller may place workspaces there
    (``authz.require_placement``): ``wanted`` if it is one of ``org``'s, else the
    organization's default project when none is named. A project the caller may not read is
    answered as one that does not exist (no existence leak)."""
    if wanted is None:
        found = orgs.default_project_id(s, org.id)
        if found is None:
            raise Conflict(f"organization {org.name!r} has no default project")
        return found
    prj = s.scalar(select(Project).where(Project.organization_id == org.id, Project.id == wanted))
    # The default project is where the caller's workspaces go anyway (its ID is in their
    # documents): naming it is like naming none.
    hidden = prj is not None and not (
        prj.is_default or authz.allowed(caller, WORKSPACE_READ, project_target(org, prj))
    )
    if prj is None or hidden:
        raise Invalid(
            f"project {wanted!r} does not exist in organization {org.name!r}",
            pointer="/data/relationships/project",
        )
    authz.require_placement(caller, project_target(org, prj), doing=doing)
    return prj.id


def leave_project(s: Session, caller: Subject, org: Organization, ws: Workspace) -> None:
    """Refuse to take ``ws`` out of its project unless the caller may place workspaces there
    (moving a workspace takes rights on both projects, as in HCP Terraform)."""
    prj = s.get(Project, ws.project_id)
    if prj is not None:
        authz.require_placement(caller, project_target(org, prj), doing="move workspaces out of")


def count_locked(s: Session, org_id: str) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(Workspace)
            .where(Workspace.organization_id == org_id, Workspace.locked_by_id.is_not(None))
        )
        or 0
    )


def count_in_project(s: Session, project_id: str) -> int:
    return (
        s.scalar(
            select(func.count()).select_from(Workspace).where(Workspace.project_id == project_id)
        )
        or 0
    )


def readable_counts_by_project(
    s: Session, caller: Subject, org: Organization, project_ids: list[str]
) -> dict[str, int]:
    """How many workspaces of each of ``project_ids`` the caller may read, in one grouped query
    filtered by the authorizer's rule."""
    stmt = (
        select(Workspace.project_id, func.count())
        .where(
            Workspace.organization_id == org.id,
            Workspace.project_id.in_(project_ids),
            authz.visible(
                caller,
                WORKSPACE_READ,
                org.id,
                workspace_id=Workspace.id.expression,
                workspace_name=Workspace.name.expression,
                dialect=s.get_bind().dialect.name,
                project_id=Workspace.project_id.expression,
            ),
        )
        .group_by(Workspace.project_id)
    )
    return {str(pid): int(n) for pid, n in s.execute(stmt)}
