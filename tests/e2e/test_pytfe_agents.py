"""Agent pools, agent tokens and agents through the official Python SDK, pytfe 1.5.0, against
a real cairn server over HTTPS, on both metadata backends: pools create/list/read/update/
assign/delete, tokens create (value once)/list/read/delete, agents list/read after a
registration through the agent protocol, and a workspace moved to execution-mode agent."""

from __future__ import annotations

import pytest
from pytfe import TFEClient
from pytfe.errors import NotFound, TFEError
from pytfe.models import (
    AgentPoolAssignToWorkspacesOptions,
    AgentPoolCreateOptions,
    AgentPoolListOptions,
    AgentPoolUpdateOptions,
    AgentTokenCreateOptions,
    WorkspaceCreateOptions,
    WorkspaceUpdateOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e


def test_agent_pools_tokens_and_agents(tfe: TFEClient, org: str, server: CairnServer) -> None:
    pool = tfe.agent_pools.create(org, AgentPoolCreateOptions(name="builders"))
    assert pool.id.startswith("apool-")
    assert (pool.name, pool.organization_scoped, pool.agent_count) == ("builders", True, 0)
    other = tfe.agent_pools.create(
        org, AgentPoolCreateOptions(name="narrow", organization_scoped=False)
    )
    assert [p.name for p in tfe.agent_pools.list(org)] == ["builders", "narrow"]
    found = tfe.agent_pools.list(org, AgentPoolListOptions(query="narr"))
    assert [p.id for p in found] == [other.id]
    read = tfe.agent_pools.read(pool.id)
    assert (read.id, read.name) == (pool.id, "builders")
    renamed = tfe.agent_pools.update(pool.id, AgentPoolUpdateOptions(name="runners"))
    assert renamed.name == "runners"

    ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("agented")))
    assigned = tfe.agent_pools.assign_to_workspaces(
        other.id, AgentPoolAssignToWorkspacesOptions(workspace_ids=[ws.id])
    )
    assert [w.id for w in assigned.allowed_workspaces] == [ws.id]
    moved = tfe.workspaces.update_by_id(
        ws.id, WorkspaceUpdateOptions(execution_mode="agent", agent_pool_id=other.id)
    )
    assert moved.execution_mode == "agent"
    with pytest.raises(TFEError):  # in use
        tfe.agent_pools.delete(other.id)

    # Tokens: the value once, then only metadata; served at /authentication-tokens/:id too.
    token = tfe.agent_tokens.create(pool.id, AgentTokenCreateOptions(description="ci"))
    assert token.id.startswith("at-") and token.token and token.token.startswith("cairn_apool_")
    listed = list(tfe.agent_tokens.list(pool.id))
    assert [(t.id, t.description, t.token) for t in listed] == [(token.id, "ci", None)]
    assert tfe.agent_tokens.read(token.id).description == "ci"

    # An agent registers with the token; pytfe lists and reads it.
    with server.client() as http:
        registered = http.post(
            "/api/agent/v1/register",
            json={"name": "runner-1", "version": "0.1", "accept": ["plan", "apply"]},
            headers={"Authorization": f"Bearer {token.token}"},
        )
    assert registered.status_code == 201, registered.text
    agents = list(tfe.agents.list(pool.id))
    assert [(a.name, a.status.value if a.status else None) for a in agents] == [
        ("runner-1", "idle")
    ]
    assert tfe.agents.read(agents[0].id).name == "runner-1"
    assert tfe.agent_pools.read(pool.id).agent_count == 1

    tfe.agent_tokens.delete(token.id)
    with pytest.raises(NotFound):
        tfe.agent_tokens.read(token.id)
    tfe.agent_pools.delete(pool.id)
    with pytest.raises(NotFound):
        tfe.agent_pools.read(pool.id)
