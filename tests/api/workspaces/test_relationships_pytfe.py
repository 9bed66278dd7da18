"""Workspace resources, remote-state consumers, moving workspaces into a project and tagging
workspaces from the tag's side, through the official SDK (pytfe) against a real server on
both databases."""

from __future__ import annotations

import httpx
from pytfe import TFEClient
from pytfe.models import (
    Workspace,
    WorkspaceAddRemoteStateConsumersOptions,
    WorkspaceRemoveRemoteStateConsumersOptions,
    WorkspaceUpdateRemoteStateConsumersOptions,
)
from pytfe.models.organization_tags import AddWorkspacesToTagOptions

from tests.support import api as tfe_api
from tests.support.statefile import new_lineage, null_resource, state_file, upload_inline


def test_workspace_resources(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    ws_id = tfe_api.create_workspace(api, org, "app")
    tfe_api.workspace_action(api, ws_id, "lock", 200)
    sv = upload_inline(api, ws_id, state_file(1, new_lineage(), resources=[null_resource("a")]))
    tfe_api.workspace_action(api, ws_id, "unlock", 200)
    (found,) = list(tfe.workspace_resources.list(ws_id))
    assert found.address == "null_resource.a"
    assert found.provider == "hashicorp/null" and found.provider_type == "null_resource"
    assert found.module == "root" and found.modified_by_state_version_id == sv["id"]


def test_remote_state_consumers(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    source = tfe_api.create_workspace(api, org, "source")
    a = tfe_api.create_workspace(api, org, "a")
    b = tfe_api.create_workspace(api, org, "b")
    tfe.workspaces.add_remote_state_consumers(
        source, WorkspaceAddRemoteStateConsumersOptions(workspaces=[Workspace(id=a)])
    )
    assert [w.id for w in tfe.workspaces.list_remote_state_consumers(source)] == [a]
    tfe.workspaces.update_remote_state_consumers(
        source, WorkspaceUpdateRemoteStateConsumersOptions(workspaces=[Workspace(id=b)])
    )
    assert [w.id for w in tfe.workspaces.list_remote_state_consumers(source)] == [b]
    tfe.workspaces.remove_remote_state_consumers(
        source, WorkspaceRemoveRemoteStateConsumersOptions(workspaces=[Workspace(id=b)])
    )
    assert list(tfe.workspaces.list_remote_state_consumers(source)) == []


def test_move_workspaces_and_tag_them(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    ws_id = tfe_api.create_workspace(api, org, "app", **{"tag-names": ["prod"]})
    other = tfe_api.create_workspace(api, org, "other")
    body = {"data": {"type": "projects", "attributes": {"name": "apps"}}}
    made = api.post(f"/api/v2/organizations/{org}/projects", json=body)
    prj = tfe_api.document(made, 201)["data"]["id"]
    tfe.projects.move_workspaces(prj, [ws_id])
    shown = tfe_api.document(api.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    assert shown["relationships"]["project"]["data"]["id"] == prj

    (tag,) = [t for t in tfe.organization_tags.list(org) if t.name == "prod"]
    tfe.organization_tags.add_workspaces(
        org, tag.id, AddWorkspacesToTagOptions(workspace_ids=[other])
    )
    shown = tfe_api.document(api.get(f"/api/v2/workspaces/{other}"), 200)["data"]
    assert shown["attributes"]["tag-names"] == ["prod"]
