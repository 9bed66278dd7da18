"""Helpers of the team tests: teams, members, team-workspace and team-project access, and a
state to read, through the TFE API of an in-process cairn."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.app import CT, document
from tests.support.statefile import new_lineage, state_file, version_body


async def team(
    admin: httpx.AsyncClient,
    org: str,
    name: str,
    flags: dict[str, bool] | None = None,
    visibility: str = "secret",
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"name": name, "visibility": visibility}
    if flags is not None:
        attributes["organization-access"] = flags
    body = {"data": {"type": "teams", "attributes": attributes}}
    created = await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    data: dict[str, Any] = document(created, 201)["data"]
    return data


async def add_member(admin: httpx.AsyncClient, team_id: str, user_id: str) -> None:
    body = {"data": [{"type": "users", "id": user_id}]}
    added = await admin.post(f"/api/v2/teams/{team_id}/relationships/users", json=body, headers=CT)
    assert added.status_code == 204, added.text


async def team_workspace(
    admin: httpx.AsyncClient, team_id: str, ws_id: str, access: str, **attributes: Any
) -> httpx.Response:
    body = {
        "data": {
            "type": "team-workspaces",
            "attributes": {"access": access, **attributes},
            "relationships": {
                "team": {"data": {"type": "teams", "id": team_id}},
                "workspace": {"data": {"type": "workspaces", "id": ws_id}},
            },
        }
    }
    return await admin.post("/api/v2/team-workspaces", json=body, headers=CT)


async def team_project(
    client: httpx.AsyncClient,
    team_id: str,
    project_id: str,
    access: str,
    *,
    project_access: dict[str, Any] | None = None,
    workspace_access: dict[str, Any] | None = None,
) -> httpx.Response:
    attributes: dict[str, Any] = {"access": access}
    if project_access is not None:
        attributes["project-access"] = project_access
    if workspace_access is not None:
        attributes["workspace-access"] = workspace_access
    body = {
        "data": {
            "type": "team-projects",
            "attributes": attributes,
            "relationships": {
                "team": {"data": {"type": "teams", "id": team_id}},
                "project": {"data": {"type": "projects", "id": project_id}},
            },
        }
    }
    return await client.post("/api/v2/team-projects", json=body, headers=CT)


async def project(admin: httpx.AsyncClient, org: str, name: str) -> str:
    body = {"data": {"type": "projects", "attributes": {"name": name}}}
    made = await admin.post(f"/api/v2/organizations/{org}/projects", json=body, headers=CT)
    project_id: str = document(made, 201)["data"]["id"]
    return project_id


async def lock(client: httpx.AsyncClient, ws_id: str) -> httpx.Response:
    body = {"data": {"type": "", "attributes": {"reason": "a test"}}}
    return await client.post(f"/api/v2/workspaces/{ws_id}/actions/lock", json=body, headers=CT)


async def unlock(client: httpx.AsyncClient, ws_id: str) -> httpx.Response:
    return await client.post(f"/api/v2/workspaces/{ws_id}/actions/unlock", json=None, headers=CT)


async def write_state(
    client: httpx.AsyncClient, ws_id: str, serial: int, lineage: str
) -> httpx.Response:
    """A state with one output, written inline (the workspace must be locked by ``client``)."""
    raw = state_file(serial, lineage, outputs={"region": {"value": "eu", "type": "string"}})
    return await client.post(
        f"/api/v2/workspaces/{ws_id}/state-versions", json=version_body(raw), headers=CT
    )


async def seed_state(admin: httpx.AsyncClient, ws_id: str) -> str:
    """The admin writes a first state to the workspace; returns its lineage."""
    lineage = new_lineage()
    assert (await lock(admin, ws_id)).status_code == 200
    document(await write_state(admin, ws_id, 1, lineage), 201)
    assert (await unlock(admin, ws_id)).status_code == 200
    return lineage
