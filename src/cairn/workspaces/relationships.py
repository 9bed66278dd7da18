"""Relationship endpoints that change many workspaces at once, named from the other side:
``POST /projects/:id/relationships/workspaces`` (move workspaces into a project) and
``POST/DELETE /tags/:id/relationships/workspaces`` (put an organization tag on workspaces or
take it off).

Each is all-or-nothing in one unit of work: every workspace is checked (readable, else 422
naming it as not existing; the right to change it, else 403) before anything changes.
Moving takes ``workspace:manage`` on the workspace and the right to place workspaces in both
the project it leaves and the one it enters (``authz.require_placement``, as a PATCH of the
workspace's project does); tagging takes ``workspace:write`` on each workspace.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.permissions import ORG_READ, WORKSPACE_MANAGE, WORKSPACE_READ, WORKSPACE_WRITE
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.workspaces import store
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag

# One request names at most this many workspaces (parse_resource_list's bound as well).
MAX_WORKSPACES_PER_REQUEST = 100


def _workspaces(
    s: Session, caller: Subject, org: Organization, ws_ids: list[str]
) -> list[Workspace]:
    """The named workspaces of ``org``, each readable by the caller (else 422: a workspace
    it may not read is answered as one that does not exist)."""
    wanted = list(dict.fromkeys(ws_ids))
    rows = {
        w.id: w
        for w in s.scalars(
            select(Workspace).where(Workspace.id.in_(wanted), Workspace.organization_id == org.id)
        )
    }
    found: list[Workspace] = []
    for i, ws_id in enumerate(wanted):
        ws = rows.get(ws_id)
        if ws is None or not authz.allowed(caller, WORKSPACE_READ, store.target(org, ws)):
            raise Invalid(
                f"workspace {ws_id!r} does not exist in organization {org.name!r}",
                pointer=f"/data/{i}",
            )
        found.append(ws)
    return found


def _insert(s: Session) -> Any:
    """The dialect's INSERT, which has ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL)."""
    # Imported here: the PostgreSQL dialect costs ~60 ms of a SQLite start (bench/startup.py).
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class WorkspaceRelationships:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def move_to_project(self, caller: Subject, project_id: str, ws_ids: list[str]) -> None:
        """Move workspaces into a project (a workspace already there stays)."""
        with self._db.unit_of_work(write=True) as s:
            org, prj = orgs.project(s, caller, project_id)
            target = orgs.project_target(org, prj)
            authz.require_placement(caller, target, doing="move workspaces into")
            now = self._clock.now()
            for ws in _workspaces(s, caller, org, ws_ids):
                if ws.project_id == prj.id:
                    continue
                authz.require(caller, WORKSPACE_MANAGE, store.target(org, ws), doing="move")
                store.leave_project(s, caller, org, ws)
                ws.project_id = prj.id
                ws.updated_at = now
            s.flush()
            s.commit()

    def tag_workspaces(self, caller: Subject, tag_id: str, ws_ids: list[str]) -> None:
        """Put an organization tag on workspaces (one already tagged stays so)."""
        with self._db.unit_of_work(write=True) as s:
            org, tag = self._tag(s, caller, tag_id)
            chosen = _workspaces(s, caller, org, ws_ids)
            for ws in chosen:
                authz.require(caller, WORKSPACE_WRITE, store.target(org, ws), doing="tag")
            if chosen:
                # A workspace tagged already (or concurrently) stays so: no error.
                s.execute(
                    _insert(s)(WorkspaceTag)
                    .values([{"workspace_id": w.id, "tag_id": tag.id} for w in chosen])
                    .on_conflict_do_nothing()
                )
            s.commit()

    def untag_workspaces(self, caller: Subject, tag_id: str, ws_ids: list[str]) -> None:
        """Take an organization tag off workspaces (the tag itself stays)."""
        with self._db.unit_of_work(write=True) as s:
            org, tag = self._tag(s, caller, tag_id)
            chosen = _workspaces(s, caller, org, ws_ids)
            for ws in chosen:
                authz.require(caller, WORKSPACE_WRITE, store.target(org, ws), doing="untag")
            if chosen:
                s.execute(
                    delete(WorkspaceTag).where(
                        WorkspaceTag.tag_id == tag.id,
                        WorkspaceTag.workspace_id.in_([w.id for w in chosen]),
                    )
                )
            s.commit()

    @staticmethod
    def _tag(s: Session, caller: Subject, tag_id: str) -> tuple[Organization, Tag]:
        """A tag by ID, if the caller may read its organization (else 404, no leak)."""
        row = s.execute(
            select(Organization, Tag)
            .join(Tag, Tag.organization_id == Organization.id)
            .where(Tag.id == tag_id)
        ).first()
        if row is None or not authz.allowed(caller, ORG_READ, orgs.target(row[0])):
            raise authz.not_found("tag", repr(tag_id))
        return row[0], row[1]
