"""Agent pool, pool token and agent rows, read and written in the caller's session.

Lookups by ID answer NotFound both when the row does not exist and when the caller may not
read its organization (the same, so that existence does not leak).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.agents.model import COUNTED, Agent, AgentPool, AgentPoolWorkspace, AgentToken
from cairn.authz.permissions import ORG_READ
from cairn.authz.subject import Subject
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.workspaces.model import Workspace

POOL_SORTS: dict[str, Any] = {
    "name": AgentPool.name.asc(),
    "-name": AgentPool.name.desc(),
    "created-at": AgentPool.created_at.asc(),
    "-created-at": AgentPool.created_at.desc(),
}
TOKEN_SORTS: dict[str, Any] = {
    "created-at": AgentToken.created_at.asc(),
    "-created-at": AgentToken.created_at.desc(),
}


@dataclass
class PoolView:
    """A pool with what its document shows."""

    pool: AgentPool
    org: Organization
    agent_count: int
    workspace_ids: list[str]  # the workspaces that use it (execution-mode agent)
    allowed_workspace_ids: list[str]


@dataclass
class PoolFilter:
    q: str | None = None
    allowed_workspace: str | None = None  # filter[allowed_workspaces][name]
    allowed_project: str | None = None  # filter[allowed_projects][name]
    sort: str = "name"


def pool_not_found(pool_id: str) -> Exception:
    return authz.not_found("agent pool", repr(pool_id))


def pool(s: Session, caller: Subject, pool_id: str) -> tuple[Organization, AgentPool]:
    """The pool ``pool_id`` if the caller may read its organization."""
    found = s.execute(
        select(Organization, AgentPool)
        .join(AgentPool, AgentPool.organization_id == Organization.id)
        .where(AgentPool.id == pool_id)
    ).first()
    if found is None:
        raise pool_not_found(pool_id)
    org, row = found
    if not authz.allowed(caller, ORG_READ, orgs.target(org)):
        raise pool_not_found(pool_id)
    return org, row


def search_pools(
    s: Session, org: Organization, flt: PoolFilter, page: Page
) -> tuple[list[AgentPool], int]:
    stmt = select(AgentPool).where(AgentPool.organization_id == org.id)
    if flt.q:
        stmt = stmt.where(AgentPool.name.contains(flt.q, autoescape=True))
    if flt.allowed_workspace is not None:
        stmt = stmt.where(_allows_workspace_named(org.id, flt.allowed_workspace))
    if flt.allowed_project is not None:
        # cairn has no project allow-lists: only organization-scoped pools allow a project.
        stmt = stmt.where(AgentPool.organization_scoped.is_(True))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(
        stmt.order_by(POOL_SORTS[flt.sort], AgentPool.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


def _allows_workspace_named(org_id: str, name: str) -> ColumnElement[bool]:
    ws_id = (
        select(Workspace.id)
        .where(Workspace.organization_id == org_id, Workspace.name == name)
        .scalar_subquery()
    )
    listed = (
        select(AgentPoolWorkspace.pool_id)
        .where(AgentPoolWorkspace.workspace_id == ws_id)
        .scalar_subquery()
    )
    exists = select(Workspace.id).where(Workspace.id == ws_id).exists()
    return exists & or_(AgentPool.organization_scoped.is_(True), AgentPool.id.in_(listed))


def views(s: Session, org: Organization, pools: list[AgentPool]) -> list[PoolView]:
    """The documents' data of ``pools`` (of ``org``), in three queries whatever their number."""
    ids = [p.id for p in pools]
    counts: dict[str, int] = defaultdict(int)
    users: dict[str, list[str]] = defaultdict(list)
    allowed: dict[str, list[str]] = defaultdict(list)
    if ids:
        for pool_id, n in s.execute(
            select(Agent.pool_id, func.count())
            .where(Agent.pool_id.in_(ids), Agent.status.in_(COUNTED))
            .group_by(Agent.pool_id)
        ):
            if pool_id is not None:
                counts[pool_id] = n
        for pool_id, ws_id in s.execute(
            select(Workspace.agent_pool_id, Workspace.id)
            .where(Workspace.agent_pool_id.in_(ids))
            .order_by(Workspace.id)
        ):
            if pool_id is not None:
                users[pool_id].append(ws_id)
        for pool_id, ws_id in s.execute(
            select(AgentPoolWorkspace.pool_id, AgentPoolWorkspace.workspace_id)
            .where(AgentPoolWorkspace.pool_id.in_(ids))
            .order_by(AgentPoolWorkspace.workspace_id)
        ):
            allowed[pool_id].append(ws_id)
    return [PoolView(p, org, counts[p.id], users[p.id], allowed[p.id]) for p in pools]


def allowed_workspace_ids(s: Session, pool_id: str) -> set[str]:
    return set(
        s.scalars(
            select(AgentPoolWorkspace.workspace_id).where(AgentPoolWorkspace.pool_id == pool_id)
        )
    )


def allows(s: Session, pool: AgentPool, workspace_id: str) -> bool:
    """Whether ``pool`` may run the jobs of workspace ``workspace_id`` (of its organization)."""
    if pool.organization_scoped:
        return True
    found = s.scalar(
        select(AgentPoolWorkspace.pool_id).where(
            AgentPoolWorkspace.pool_id == pool.id, AgentPoolWorkspace.workspace_id == workspace_id
        )
    )
    return found is not None


def set_allowed_workspaces(s: Session, pool_id: str, workspace_ids: list[str]) -> None:
    """Replace the pool's allow-list (the IDs are checked by the caller)."""
    current = allowed_workspace_ids(s, pool_id)
    wanted = set(workspace_ids)
    for ws_id in current - wanted:
        row = s.get(AgentPoolWorkspace, (pool_id, ws_id))
        if row is not None:
            s.delete(row)
    for ws_id in sorted(wanted - current):
        s.add(AgentPoolWorkspace(pool_id=pool_id, workspace_id=ws_id))
    s.flush()


def workspaces_of(s: Session, org_id: str, ids: list[str]) -> dict[str, Workspace]:
    """The workspaces of organization ``org_id`` among ``ids``."""
    if not ids:
        return {}
    rows = s.scalars(
        select(Workspace).where(Workspace.organization_id == org_id, Workspace.id.in_(ids))
    )
    return {w.id: w for w in rows}


def users_of(s: Session, pool_id: str) -> list[Workspace]:
    """The workspaces whose jobs the pool runs."""
    return list(
        s.scalars(
            select(Workspace).where(Workspace.agent_pool_id == pool_id).order_by(Workspace.name)
        )
    )


# ---- tokens ----------------------------------------------------------------------------------


def token(s: Session, token_id: str) -> tuple[Organization, AgentPool, AgentToken] | None:
    found = s.execute(
        select(Organization, AgentPool, AgentToken)
        .join(AgentPool, AgentPool.organization_id == Organization.id)
        .join(AgentToken, AgentToken.pool_id == AgentPool.id)
        .where(AgentToken.id == token_id)
    ).first()
    if found is None:
        return None
    a, b, c = found
    return a, b, c


def tokens(s: Session, pool_id: str, page: Page, sort: str) -> tuple[list[AgentToken], int]:
    stmt = select(AgentToken).where(AgentToken.pool_id == pool_id)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(
        stmt.order_by(TOKEN_SORTS[sort], AgentToken.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


# ---- agents ----------------------------------------------------------------------------------


def agent(s: Session, agent_id: str) -> tuple[Organization, AgentPool, Agent] | None:
    """A pool's agent (the built-in workers, of no pool, are not found here)."""
    found = s.execute(
        select(Organization, AgentPool, Agent)
        .join(AgentPool, AgentPool.organization_id == Organization.id)
        .join(Agent, Agent.pool_id == AgentPool.id)
        .where(Agent.id == agent_id)
    ).first()
    if found is None:
        return None
    a, b, c = found
    return a, b, c


def agents(
    s: Session,
    pool_id: str,
    page: Page,
    *,
    since: datetime | None = None,
    status: str | None = None,
) -> tuple[list[Agent], int]:
    stmt = select(Agent).where(Agent.pool_id == pool_id)
    if since is not None:
        stmt = stmt.where(Agent.last_ping_at >= since)
    if status is not None:
        stmt = stmt.where(Agent.status == status)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(
        stmt.order_by(Agent.created_at.desc(), Agent.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total
