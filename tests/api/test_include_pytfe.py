"""`include=` and the empty module registry through pytfe, against a real server on both
databases: the official SDK hydrates related resources from `included` (a workspace's
outputs, its current state version and organization; a team's users) and reads the registry
(issue 8, item 2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pytfe.errors import NotFound
from pytfe.models import (
    RegistryModuleID,
    WorkspaceIncludeOpt,
    WorkspaceReadOptions,
)

from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.statefile import new_lineage, state_file, upload_inline


def test_pytfe_hydrates_workspace_includes(
    server: CairnServer, api: httpx.Client, admin_token: str
) -> None:
    org = tfe.create_organization(api, tfe.unique_name("inc"))
    ws_id = tfe.create_workspace(api, org, "app")
    tfe.workspace_action(api, ws_id, "lock", 200)
    outputs: dict[str, Any] = {
        "url": {"value": "https://example.com", "type": "string"},
        "token": {"value": "s3cret", "type": "string", "sensitive": True},
    }
    sv = upload_inline(api, ws_id, state_file(1, new_lineage(), outputs=outputs))
    tfe.workspace_action(api, ws_id, "unlock", 200)

    include = [
        WorkspaceIncludeOpt.OUTPUTS,
        WorkspaceIncludeOpt.CURRENT_STATE_VER,
        WorkspaceIncludeOpt.ORGANIZATION,
        WorkspaceIncludeOpt.PROJECT,
    ]
    with tfe.pytfe_client(server, admin_token) as client:
        ws = client.workspaces.read_by_id_with_options(ws_id, WorkspaceReadOptions(include=include))
    by_name = {o.name: o for o in ws.outputs}
    assert set(by_name) == {"url", "token"}
    assert by_name["url"].value == "https://example.com"
    assert by_name["url"].output_type == "string"
    assert by_name["token"].sensitive is True and by_name["token"].value is None
    assert ws.current_state_version is not None
    assert ws.current_state_version.id == sv["id"]
    assert ws.organization is not None and ws.organization.name == org


def test_pytfe_lists_a_teams_users(
    server: CairnServer, api: httpx.Client, admin_token: str
) -> None:
    org = tfe.create_organization(api, tfe.unique_name("inc"))
    teams = tfe.document(api.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
    owners = next(t for t in teams if t["attributes"]["name"] == "owners")
    with tfe.pytfe_client(server, admin_token) as client:
        users = list(client.teams.list_users(owners["id"]))
    me = tfe.document(api.get("/api/v2/account/details"), 200)["data"]
    assert [u.id for u in users] == [me["id"]]
    assert users[0].username == me["attributes"]["username"]


def test_pytfe_reads_the_empty_registry(
    server: CairnServer, api: httpx.Client, admin_token: str
) -> None:
    org = tfe.create_organization(api, tfe.unique_name("reg"))
    wanted = RegistryModuleID(organization=org, namespace=org, name="vpc", provider="aws")
    with tfe.pytfe_client(server, admin_token) as client:
        assert list(client.registry_modules.list(org)) == []
        with pytest.raises(NotFound):
            client.registry_modules.read(wanted)
