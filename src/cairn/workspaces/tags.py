"""Workspace tags: attaching and detaching them, and the organization's tag list.

Tags belong to an organization and are shared by its workspaces; one is created the first
time a workspace is tagged with it (concurrently created ones are found, not duplicated).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.authz.permissions import ORG_MANAGE, WORKSPACE_READ, WORKSPACE_WRITE
from cairn.authz.subject import Subject
from cairn.db.engine import Database
from cairn.names import check_tag
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.workspaces import store
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag


def add_tags(
    s: Session, org: Organization, ws: Workspace, names: list[str], pointer: str = "/data"
) -> None:
    """Attach tags by name, creating the organization's tags that do not exist yet."""
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
                tag = s.scalar(select(Tag).where(Tag.organization_id == org.id, Tag.name == name))
                assert tag is not None
        if s.get(WorkspaceTag, (ws.id, tag.id)) is None:
            s.add(WorkspaceTag(workspace_id=ws.id, tag_id=tag.id))
    s.flush()


class TagService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_tags(self, caller: Subject, ws_id: str, names: list[str]) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            authz.require(caller, WORKSPACE_WRITE, store.target(org, ws), doing="tag")
            add_tags(s, org, ws, names)
            s.commit()

    def remove_tags(
        self, caller: Subject, ws_id: str, names: list[str], tag_ids: list[str]
    ) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            authz.require(caller, WORKSPACE_WRITE, store.target(org, ws), doing="untag")
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

    def workspace_tags(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[Tag], int]:
        """One page of a workspace's tags, by name, and their total."""
        with self._db.unit_of_work() as s:
            _, ws = store.find(s, caller, ws_id)
            stmt = (
                select(Tag)
                .join(WorkspaceTag, WorkspaceTag.tag_id == Tag.id)
                .where(WorkspaceTag.workspace_id == ws.id)
            )
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(stmt.order_by(Tag.name).offset(page.offset).limit(page.size))
            return list(rows), total

    def organization_tags(
        self, caller: Subject, org_name: str, page: Page, q: str | None
    ) -> tuple[list[tuple[Tag, int]], int]:
        """One page of an organization's tags with their workspace counts, and their total.

        Only workspaces the caller may read count (``authz.visible``, in SQL), and a caller
        without organization-wide read sees only the tags of workspaces they may read: a tag
        of unreadable workspaces alone (or of none) is not listed to them, so that neither
        names nor counts leak what they may not see."""
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            readable = (
                select(WorkspaceTag.tag_id, WorkspaceTag.workspace_id)
                .join(Workspace, Workspace.id == WorkspaceTag.workspace_id)
                .where(
                    Workspace.organization_id == org.id,
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
                .subquery()
            )
            tags = select(Tag).where(Tag.organization_id == org.id)
            if not authz.can(caller, WORKSPACE_READ, org.id):
                tags = tags.where(Tag.id.in_(select(readable.c.tag_id)))
            if q:
                tags = tags.where(Tag.name.contains(q, autoescape=True))
            total = s.scalar(select(func.count()).select_from(tags.subquery())) or 0
            count = func.count(readable.c.workspace_id)
            stmt = (
                tags.add_columns(count)
                .outerjoin(readable, readable.c.tag_id == Tag.id)
                .group_by(Tag.id)
                .order_by(Tag.name)
                .offset(page.offset)
                .limit(page.size)
            )
            return [(t, int(n)) for t, n in s.execute(stmt)], total

    def delete_organization_tags(self, caller: Subject, org_name: str, tag_ids: list[str]) -> None:
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            authz.require(caller, ORG_MANAGE, orgs.target(org), doing="delete tags in")
            s.execute(delete(Tag).where(Tag.organization_id == org.id, Tag.id.in_(tag_ids)))
            s.commit()
