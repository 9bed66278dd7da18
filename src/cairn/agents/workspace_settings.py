"""The workspace rule agents own: ``execution-mode: agent`` needs an agent pool of the same
organization that allows the workspace, and an agent pool is set only with that mode.

Registered in ``app.py`` as a ``WorkspaceHooks.check_settings`` callback: it runs inside the
workspace service's transaction, on the row about to be written, and refuses with a 422.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn.agents import store
from cairn.agents.model import AgentPool
from cairn.errors import Invalid
from cairn.organizations.model import Organization
from cairn.workspaces.model import Workspace

_POOL = "/data/attributes/agent-pool-id"


def check_agent_pool(s: Session, org: Organization, ws: Workspace) -> None:
    """Refuse a workspace whose execution mode and agent pool do not go together."""
    if ws.execution_mode != "agent":
        if ws.agent_pool_id is not None:
            raise Invalid(
                "agent-pool-id can only be set with execution-mode 'agent' (this workspace's "
                f"is {ws.execution_mode!r}); set execution-mode to 'agent', or leave the pool out",
                pointer=_POOL,
            )
        return
    if ws.agent_pool_id is None:
        raise Invalid(
            "execution-mode 'agent' needs agent-pool-id: the ID of an agent pool of "
            f"organization {org.name} that allows this workspace",
            pointer=_POOL,
        )
    # The row is not flushed yet (nor may it be: its pool may not exist), so no autoflush.
    with s.no_autoflush:
        pool = s.scalar(
            select(AgentPool).where(
                AgentPool.id == ws.agent_pool_id, AgentPool.organization_id == org.id
            )
        )
        allowed = pool is not None and store.allows(s, pool, ws.id)
    if pool is None:
        raise Invalid(
            f"agent pool {ws.agent_pool_id!r} does not exist in organization {org.name}",
            pointer=_POOL,
        )
    if not allowed:
        raise Invalid(
            f"agent pool {pool.name!r} does not allow workspace {ws.name!r}: add the workspace "
            "to the pool's allowed-workspaces, or make the pool organization-scoped",
            pointer=_POOL,
        )
