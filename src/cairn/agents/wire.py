"""TFE API documents of agent pools, agents and agent (pool) tokens (HCP Terraform's Agent
Pools, Agents and Agent Tokens pages; what pytfe 1.5.0 parses)."""

from __future__ import annotations

from typing import Any

from cairn.agents.service import AgentView, TokenView
from cairn.agents.store import PoolView
from cairn.authz.subject import USER_TYPE
from cairn.clock import iso8601

POOL_TYPE = "agent-pools"
AGENT_TYPE = "agents"
TOKEN_TYPE = "authentication-tokens"  # noqa: S105 - a JSON:API type
INCLUDABLE = ("workspaces",)


def _workspaces(ids: list[str]) -> dict[str, Any]:
    return {"data": [{"id": i, "type": "workspaces"} for i in ids]}


def pool(v: PoolView) -> dict[str, Any]:
    p = v.pool
    base = f"/api/v2/agent-pools/{p.id}"
    return {
        "id": p.id,
        "type": POOL_TYPE,
        "attributes": {
            "name": p.name,
            "created-at": iso8601(p.created_at),
            "organization-scoped": p.organization_scoped,
            "agent-count": v.agent_count,
        },
        "relationships": {
            "organization": {"data": {"id": v.org.name, "type": "organizations"}},
            "agents": {"links": {"related": f"{base}/agents"}},
            "authentication-tokens": {"links": {"related": f"{base}/authentication-tokens"}},
            "workspaces": _workspaces(v.workspace_ids),
            "allowed-workspaces": _workspaces(v.allowed_workspace_ids),
            "allowed-projects": {"data": []},
            "excluded-workspaces": {"data": []},
        },
        "links": {"self": base},
    }


def agent(v: AgentView) -> dict[str, Any]:
    a = v.agent
    return {
        "id": a.id,
        "type": AGENT_TYPE,
        "attributes": {
            "name": a.name,
            "status": a.status,
            "version": a.version or None,
            "ip-address": a.ip_address or None,
            "last-ping-at": iso8601(a.last_ping_at),
        },
        "relationships": {"agent-pool": {"data": {"id": v.pool.id, "type": POOL_TYPE}}},
        "links": {"self": f"/api/v2/agents/{a.id}"},
    }


def token(v: TokenView) -> dict[str, Any]:
    """An agent token; its value only in the answer to a create (``v.value``)."""
    t = v.token
    attrs: dict[str, Any] = {
        "created-at": iso8601(t.created_at),
        "last-used-at": iso8601(t.last_used_at),
        "description": t.description or None,
    }
    if v.value is not None:
        attrs["token"] = v.value
    creator = t.created_by_id
    return {
        "id": t.id,
        "type": TOKEN_TYPE,
        "attributes": attrs,
        "relationships": {
            "created-by": {"data": {"id": creator, "type": USER_TYPE} if creator else None},
            "agent-pool": {"data": {"id": v.pool.id, "type": POOL_TYPE}},
        },
        "links": {"self": f"/api/v2/authentication-tokens/{t.id}"},
    }
