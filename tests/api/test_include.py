"""`include=`: compound documents as HCP Terraform answers them (issue 8, item 2).

A top-level `included` array holds each related resource the include paths reach, once, as a
full document, and only what the caller may read; an include the primary type does not offer
is a 400 whose detail go-tfe maps to `ErrInvalidIncludeValue` ("Invalid include parameter");
an empty `include=` (Terraform 1.0.3 sends one) changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
    organization_and_workspace,
)

pytestmark = pytest.mark.anyio


def _keys(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["type"], r["id"]) for r in doc.get("included", [])]


async def _state_with_outputs(admin: httpx.AsyncClient, ws: Workspace) -> dict[str, Any]:
    """Lock, upload a state with a plain and a sensitive output, unlock; the new version."""
    state = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": 1,
        "lineage": "7f5e4c1a-9d55-4e0e-9a43-2a1b9d2c3e4f",
        "outputs": {
            "url": {"value": "https://example.com", "type": "string"},
            "password": {"value": "hunter2", "type": "string", "sensitive": True},
        },
        "resources": [],
    }
    raw = json.dumps(state).encode()
    attributes = {
        "serial": 1,
        "lineage": state["lineage"],
        "md5": hashlib.md5(raw, usedforsecurity=False).hexdigest(),
        "state": base64.b64encode(raw).decode(),
    }
    lock = f"/api/v2/workspaces/{ws.id}/actions/lock"
    document(await admin.post(lock, json={"data": {"type": ""}}, headers=CT), 200)
    body = {"data": {"type": "state-versions", "attributes": attributes}}
    created = document(
        await admin.post(f"/api/v2/workspaces/{ws.id}/state-versions", json=body, headers=CT), 201
    )
    data: dict[str, Any] = created["data"]
    return data


async def test_workspace_includes_its_related_resources_once(admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    sv = await _state_with_outputs(admin, ws)  # the workspace stays locked by the admin
    paths = [
        "organization",
        "project",
        "locked_by",
        "current_state_version",
        "current_state_version.outputs",
        "outputs",
        "current_run",  # documented; cairn has no runs yet, so nothing is included for it
        "readme",
    ]
    doc = document(await admin.get(f"/api/v2/workspaces/{ws.id}?include={','.join(paths)}"), 200)
    keys = _keys(doc)
    assert len(keys) == len(set(keys)), "each related resource is included once"
    types = [t for t, _ in keys]
    assert types.count("organizations") == 1
    assert types.count("projects") == 1
    assert types.count("users") == 1  # the lock holder
    assert ("state-versions", sv["id"]) in keys
    assert types.count("state-version-outputs") == 2
    assert types.count("workspace-outputs") == 2
    by_key = {(r["type"], r["id"]): r for r in doc["included"]}
    org = by_key[("organizations", ws.org)]
    assert org["attributes"]["name"] == ws.org
    outputs = {
        r["attributes"]["name"]: r for r in doc["included"] if r["type"] == "workspace-outputs"
    }
    assert outputs["url"]["attributes"]["value"] == "https://example.com"
    assert outputs["password"]["attributes"]["sensitive"] is True
    assert outputs["password"]["attributes"]["value"] is None, "sensitive values stay hidden"
    linkage = doc["data"]["relationships"]["outputs"]["data"]
    assert sorted(o["id"] for o in linkage) == sorted(o["id"] for o in outputs.values())
    # Full documents, as their own endpoints answer them.
    shown = document(await admin.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
    assert by_key[("state-versions", sv["id"])]["attributes"] == shown["attributes"]


async def test_go_tfe_spellings_and_repeated_parameters(admin: httpx.AsyncClient) -> None:
    """go-tfe sends `current-state-version`; pytfe may repeat `include`."""
    ws = await organization_and_workspace(admin)
    sv = await _state_with_outputs(admin, ws)
    doc = document(
        await admin.get(
            f"/api/v2/workspaces/{ws.id}",
            params=[("include", "current-state-version"), ("include", "organization")],
        ),
        200,
    )
    assert ("state-versions", sv["id"]) in _keys(doc)
    assert ("organizations", ws.org) in _keys(doc)


async def test_empty_include_changes_nothing_and_unknown_is_400(admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    plain = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)
    empty = document(await admin.get(f"/api/v2/workspaces/{ws.id}?include="), 200)
    assert "included" not in plain and "included" not in empty
    assert plain == empty
    listed = document(await admin.get(f"/api/v2/organizations/{ws.org}/workspaces?include="), 200)
    assert "included" not in listed

    for url in (
        f"/api/v2/workspaces/{ws.id}?include=secrets",
        f"/api/v2/workspaces/{ws.id}?include=organization,nope",
        f"/api/v2/organizations/{ws.org}/workspaces?include=current_state_version.nope",
        f"/api/v2/organizations/{ws.org}?include=workspaces",
    ):
        refused = document(await admin.get(url), 400)
        error = refused["errors"][0]
        assert error["status"] == "400"
        # go-tfe's checkResponseCode: a 400 containing this is ErrInvalidIncludeValue.
        assert "Invalid include parameter" in error["detail"]
        assert error["source"] == {"parameter": "include"}


async def test_list_includes_shared_resources_once(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    for _ in range(3):
        await create_workspace(admin, org)
    doc = document(
        await admin.get(f"/api/v2/organizations/{org}/workspaces?include=organization,project"),
        200,
    )
    assert len(doc["data"]) == 3
    assert sorted(t for t, _ in _keys(doc)) == ["organizations", "projects"]
    assert doc["meta"]["pagination"]["total-count"] == 3


async def test_organization_entitlements_and_default_project(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    doc = document(
        await admin.get(f"/api/v2/organizations/{org}?include=entitlement_set,default-project"),
        200,
    )
    rels = doc["data"]["relationships"]
    ent = rels["entitlement-set"]["data"]
    prj = rels["default-project"]["data"]
    assert ("entitlement-sets", ent["id"]) in _keys(doc)
    assert ("projects", prj["id"]) in _keys(doc)
    included = {r["type"]: r for r in doc["included"]}
    assert included["entitlement-sets"]["attributes"]["state-storage"] is True
    assert included["projects"]["attributes"]["is-default"] is True
    # Lists offer the same, and carry the default project's linkage too.
    listed = document(await admin.get("/api/v2/organizations?include=default_project"), 200)
    assert ("projects", prj["id"]) in _keys(listed)
    # Projects include their organization.
    shown = document(await admin.get(f"/api/v2/projects/{prj['id']}?include=organization"), 200)
    assert _keys(shown) == [("organizations", org)]


async def test_state_versions_include_creator_and_outputs(admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    sv = await _state_with_outputs(admin, ws)
    doc = document(
        await admin.get(
            f"/api/v2/workspaces/{ws.id}/state-versions?include=created_by,outputs,run"
        ),
        200,
    )
    keys = _keys(doc)
    creator = sv["relationships"]["created-by"]["data"]
    assert (creator["type"], creator["id"]) in keys
    outputs = [r for r in doc["included"] if r["type"] == "state-version-outputs"]
    assert {o["attributes"]["name"] for o in outputs} == {"url", "password"}
    hidden = next(o for o in outputs if o["attributes"]["name"] == "password")
    assert hidden["attributes"]["value"] is None


async def test_teams_and_team_access_include(admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    person = await make_user(admin, "ana")
    body = {"data": {"type": "teams", "attributes": {"name": "devs", "visibility": "organization"}}}
    team = document(
        await admin.post(f"/api/v2/organizations/{ws.org}/teams", json=body, headers=CT), 201
    )["data"]
    members = {"data": [{"type": "users", "id": person.id}]}
    add = await admin.post(
        f"/api/v2/teams/{team['id']}/relationships/users", json=members, headers=CT
    )
    assert add.status_code == 204
    shown = document(await admin.get(f"/api/v2/teams/{team['id']}?include=users"), 200)
    users = [r for r in shown["included"] if r["type"] == "users"]
    assert [u["id"] for u in users] == [person.id]
    assert users[0]["attributes"]["username"] == person.username
    assert "email" not in users[0]["attributes"], "another user's e-mail is not shown"
    # A member's organization membership: linked from the team, included as a full document.
    with_memberships = document(
        await admin.get(f"/api/v2/teams/{team['id']}?include=organization-memberships"), 200
    )
    (linked,) = with_memberships["data"]["relationships"]["organization-memberships"]["data"]
    (membership,) = [
        r for r in with_memberships["included"] if r["type"] == "organization-memberships"
    ]
    assert membership["id"] == linked["id"]
    assert membership["attributes"]["status"] == "active"
    assert membership["relationships"]["user"]["data"]["id"] == person.id
    assert team["id"] in [t["id"] for t in membership["relationships"]["teams"]["data"]]

    grant = {
        "data": {
            "type": "team-workspaces",
            "attributes": {"access": "read"},
            "relationships": {
                "team": {"data": {"type": "teams", "id": team["id"]}},
                "workspace": {"data": {"type": "workspaces", "id": ws.id}},
            },
        }
    }
    access = document(await admin.post("/api/v2/team-workspaces", json=grant, headers=CT), 201)
    listed = document(
        await admin.get(
            f"/api/v2/team-workspaces?filter[workspace][id]={ws.id}&include=team,workspace"
        ),
        200,
    )
    assert access["data"]["id"] in [d["id"] for d in listed["data"]]
    assert ("teams", team["id"]) in _keys(listed)
    assert ("workspaces", ws.id) in _keys(listed)


async def test_included_only_what_the_caller_may_read(app: Any, admin: httpx.AsyncClient) -> None:
    """A reader of one workspace (through her team's workspace access) asks for its project
    too: the project, which she may not read (404), is left out; what she may read is
    included."""
    ws = await organization_and_workspace(admin)
    await _state_with_outputs(admin, ws)
    person = await make_user(admin, "rita")
    body = {"data": {"type": "teams", "attributes": {"name": "readers", "visibility": "secret"}}}
    team = document(
        await admin.post(f"/api/v2/organizations/{ws.org}/teams", json=body, headers=CT), 201
    )["data"]
    members = {"data": [{"type": "users", "id": person.id}]}
    add = await admin.post(
        f"/api/v2/teams/{team['id']}/relationships/users", json=members, headers=CT
    )
    assert add.status_code == 204
    grant = {
        "data": {
            "type": "team-workspaces",
            "attributes": {"access": "read"},
            "relationships": {
                "team": {"data": {"type": "teams", "id": team["id"]}},
                "workspace": {"data": {"type": "workspaces", "id": ws.id}},
            },
        }
    }
    document(await admin.post("/api/v2/team-workspaces", json=grant, headers=CT), 201)
    paths = "organization,project,current_state_version,outputs"

    async with app.client(person.token) as rita:
        doc = document(await rita.get(f"/api/v2/workspaces/{ws.id}?include={paths}"), 200)
        project = doc["data"]["relationships"]["project"]["data"]["id"]
        assert (await rita.get(f"/api/v2/projects/{project}")).status_code == 404
        types = sorted({t for t, _ in _keys(doc)})
        assert types == ["organizations", "state-versions", "workspace-outputs"]
        assert ("projects", project) not in _keys(doc)
    # The admin, who may read the project, gets it.
    full = document(await admin.get(f"/api/v2/workspaces/{ws.id}?include={paths}"), 200)
    assert ("projects", project) in _keys(full)


async def test_page_zero_is_the_first_page(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    await create_workspace(admin, org)
    zero = document(
        await admin.get(f"/api/v2/organizations/{org}/workspaces?page[number]=0&page[size]=5"), 200
    )
    one = document(
        await admin.get(f"/api/v2/organizations/{org}/workspaces?page[number]=1&page[size]=5"), 200
    )
    assert zero == one
    assert zero["meta"]["pagination"]["current-page"] == 1
    assert (await admin.get("/api/v2/organizations?page[number]=000")).status_code == 200
    assert (await admin.get("/api/v2/organizations?page[size]=0")).status_code == 400
    assert (await admin.get("/api/v2/organizations?page[number]=-1")).status_code == 400
