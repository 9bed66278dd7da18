"""TFE team-project access (`/api/v2/team-projects`): list, create, show, update, delete, with
the fixed levels (read, write, maintain, admin) and `custom` with its project-level and
workspace-level attributes, enforced by the authorizer on the project and on every workspace in
it (and on none outside it).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.teams.helpers import (
    add_member,
    lock,
    project,
    seed_state,
    team,
    team_project,
    unlock,
    write_state,
)
from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio


async def _setup(admin: httpx.AsyncClient) -> tuple[str, str, Workspace, Workspace]:
    """An organization with a project holding workspace ``inside`` and, in the default project,
    workspace ``outside``; both have a state."""
    org = await create_organization(admin)
    prj = await project(admin, org, "platform")
    rel = {"project": {"data": {"type": "projects", "id": prj}}}
    body = {"data": {"type": "workspaces", "attributes": {"name": "inside"}, "relationships": rel}}
    made = await admin.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
    inside = Workspace(org, "inside", document(made, 201)["data"]["id"])
    outside = await create_workspace(admin, org, "outside")
    return org, prj, inside, outside


async def _member(admin: httpx.AsyncClient, org: str, name: str) -> tuple[Person, str]:
    person = await make_user(admin, name)
    made = await team(admin, org, name)
    await add_member(admin, made["id"], person.id)
    return person, made["id"]


def _list_url(project_id: str) -> str:
    return f"/api/v2/team-projects?filter%5Bproject%5D%5Bid%5D={project_id}"


async def test_crud_with_fixed_and_custom_levels(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, prj, _, _ = await _setup(admin)
    devs = await team(admin, org, "devs")
    created = document(await team_project(admin, devs["id"], prj, "read"), 201)["data"]
    assert created["type"] == "team-projects"
    assert created["relationships"]["team"]["data"] == {"id": devs["id"], "type": "teams"}
    assert created["relationships"]["project"]["data"] == {"id": prj, "type": "projects"}
    assert created["attributes"] == {
        "access": "read",
        "project-access": {"settings": "read", "teams": "none", "variable-sets": "none"},
        "workspace-access": {
            "runs": "read",
            "sentinel-mocks": "none",
            "state-versions": "read",
            "variables": "read",
            "create": False,
            "locking": False,
            "move": False,
            "delete": False,
            "run-tasks": False,
        },
    }
    tp = created["id"]
    assert tp.startswith("tprj-")
    included = document(await admin.get(f"/api/v2/team-projects/{tp}?include=team,project"), 200)
    assert {(r["type"], r["id"]) for r in included["included"]} == {
        ("teams", devs["id"]),
        ("projects", prj),
    }
    bad = await admin.get(f"/api/v2/team-projects/{tp}?include=workspaces")
    assert bad.status_code == 400, bad.text
    listed = document(await admin.get(_list_url(prj)), 200)
    assert [t["id"] for t in listed["data"]] == [tp]
    assert listed["meta"]["pagination"]["total-count"] == 1
    assert document(await admin.get(f"/api/v2/team-projects/{tp}"), 200)["data"] == created

    # One access per team and project.
    again = await team_project(admin, devs["id"], prj, "write")
    assert again.status_code == 409, again.text

    # To custom: from the access it had, changed where the body says.
    body = {
        "data": {
            "type": "team-projects",
            "attributes": {
                "access": "custom",
                "project-access": {"teams": "read"},
                "workspace-access": {"state-versions": "read-outputs", "locking": True},
            },
        }
    }
    patched = await admin.patch(f"/api/v2/team-projects/{tp}", json=body, headers=CT)
    attrs = document(patched, 200)["data"]["attributes"]
    assert attrs["access"] == "custom"
    assert attrs["project-access"]["teams"] == "read"
    assert attrs["workspace-access"]["state-versions"] == "read-outputs"
    assert attrs["workspace-access"]["locking"] is True
    assert attrs["workspace-access"]["runs"] == "read"  # kept
    shown = document(await admin.get(f"/api/v2/team-projects/{tp}"), 200)["data"]
    assert shown["attributes"] == attrs

    # Back to a fixed level: its values.
    body = {"data": {"type": "team-projects", "attributes": {"access": "maintain"}}}
    patched = await admin.patch(f"/api/v2/team-projects/{tp}", json=body, headers=CT)
    workspace_access = document(patched, 200)["data"]["attributes"]["workspace-access"]
    assert workspace_access["create"] is True and workspace_access["runs"] == "apply"

    assert (await admin.delete(f"/api/v2/team-projects/{tp}")).status_code == 204
    assert document(await admin.get(_list_url(prj)), 200)["data"] == []
    assert (await admin.get(f"/api/v2/team-projects/{tp}")).status_code == 404


@pytest.mark.parametrize(
    ("access", "extra", "status"),
    [
        ("owner", {}, 422),
        ("read", {"workspace-access": {"runs": "apply"}}, 422),
        ("custom", {"workspace-access": {"runs": "destroy"}}, 422),
        ("custom", {"workspace-access": {"create": "yes"}}, 422),
        ("custom", {"project-access": {"settings": "own"}}, 422),
        ("custom", {"project-access": "all"}, 422),
    ],
)
async def test_bad_bodies_are_refused_and_change_nothing(
    app: InProcessCairn, admin: httpx.AsyncClient, access: str, extra: dict[str, Any], status: int
) -> None:
    org, prj, _, _ = await _setup(admin)
    devs = await team(admin, org, "devs")
    refused = await team_project(
        admin,
        devs["id"],
        prj,
        access,
        project_access=extra.get("project-access"),
        workspace_access=extra.get("workspace-access"),
    )
    assert refused.status_code == status, refused.text
    assert refused.json()["errors"][0]["detail"]
    assert document(await admin.get(_list_url(prj)), 200)["data"] == []
    missing = await admin.get("/api/v2/team-projects")
    assert missing.status_code == 400, missing.text


async def test_read_reaches_the_projects_workspaces_and_nothing_else(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, prj, inside, outside = await _setup(admin)
    await seed_state(admin, inside.id)
    person, team_id = await _member(admin, org, "reader")
    async with app.client(person.token) as client:
        assert (await client.get(f"/api/v2/workspaces/{inside.id}")).status_code == 404
        assert (await client.get(f"/api/v2/projects/{prj}")).status_code == 404
    document(await team_project(admin, team_id, prj, "read"), 201)
    async with app.client(person.token) as client:
        document(await client.get(f"/api/v2/workspaces/{inside.id}"), 200)
        document(await client.get(f"/api/v2/projects/{prj}"), 200)
        document(await client.get(f"/api/v2/workspaces/{inside.id}/current-state-version"), 200)
        listed = document(await client.get(f"/api/v2/organizations/{org}/workspaces"), 200)
        assert [w["id"] for w in listed["data"]] == [inside.id]
        assert (await client.get(f"/api/v2/workspaces/{outside.id}")).status_code == 404
        assert (await lock(client, inside.id)).status_code == 403
        # Seeing the project's team access needs project access teams: read.
        assert (await client.get(_list_url(prj))).status_code == 403


async def test_write_maintain_and_admin(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org, prj, inside, outside = await _setup(admin)
    lineage = await seed_state(admin, inside.id)
    writer, writers = await _member(admin, org, "writer")
    maintainer, maintainers = await _member(admin, org, "maintainer")
    boss, bosses = await _member(admin, org, "boss")
    document(await team_project(admin, writers, prj, "write"), 201)
    document(await team_project(admin, maintainers, prj, "maintain"), 201)
    document(await team_project(admin, bosses, prj, "admin"), 201)
    settings = {"data": {"type": "workspaces", "attributes": {"description": "changed"}}}
    rel = {"project": {"data": {"type": "projects", "id": prj}}}

    async with app.client(writer.token) as client:
        assert (await lock(client, inside.id)).status_code == 200
        document(await write_state(client, inside.id, 2, lineage), 201)
        assert (await unlock(client, inside.id)).status_code == 200
        patched = await client.patch(f"/api/v2/workspaces/{inside.id}", json=settings, headers=CT)
        assert patched.status_code == 403, patched.text
        assert (await lock(client, outside.id)).status_code == 404

    async with app.client(maintainer.token) as client:
        document(
            await client.patch(f"/api/v2/workspaces/{inside.id}", json=settings, headers=CT), 200
        )
        body = {"data": {"type": "workspaces", "attributes": {"name": "new"}, "relationships": rel}}
        made = await client.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        document(made, 201)
        # Not outside the project, and not the project's team access or settings.
        body = {"data": {"type": "workspaces", "attributes": {"name": "stray"}}}
        stray = await client.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        assert stray.status_code == 403, stray.text
        given = await team_project(client, writers, prj, "admin")
        assert given.status_code == 403, given.text
        rename = {"data": {"type": "projects", "attributes": {"name": "mine"}}}
        renamed = await client.patch(f"/api/v2/projects/{prj}", json=rename, headers=CT)
        assert renamed.status_code == 403, renamed.text

    async with app.client(boss.token) as client:
        listed = document(await client.get(_list_url(prj)), 200)
        assert len(listed["data"]) == 3
        readers = await team(admin, org, "readers")
        document(await team_project(client, readers["id"], prj, "read"), 201)
        rename = {"data": {"type": "projects", "attributes": {"name": "platform-2"}}}
        document(await client.patch(f"/api/v2/projects/{prj}", json=rename, headers=CT), 200)
        assert (await client.get(f"/api/v2/workspaces/{outside.id}")).status_code == 404


async def test_custom_project_access_is_enforced_without_escalation(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, prj, inside, _ = await _setup(admin)
    await seed_state(admin, inside.id)
    person, team_id = await _member(admin, org, "auditor")
    made = await team_project(
        admin,
        team_id,
        prj,
        "custom",
        project_access={"teams": "manage"},
        workspace_access={"state-versions": "read-outputs"},
    )
    document(made, 201)
    outputs = f"/api/v2/workspaces/{inside.id}/current-state-version-outputs"
    async with app.client(person.token) as client:
        document(await client.get(outputs), 200)
        current = await client.get(f"/api/v2/workspaces/{inside.id}/current-state-version")
        assert current.status_code == 404, current.text
        # Managing the project's teams, they may give what they hold, and no more — not even
        # to their own team.
        others = await team(admin, org, "others")
        fine = await team_project(
            client,
            others["id"],
            prj,
            "custom",
            workspace_access={"state-versions": "read-outputs"},
        )
        document(fine, 201)
        for level in ("read", "admin"):
            beyond = await team_project(client, others["id"], prj, level)
            assert beyond.status_code in (403, 409), beyond.text
        mine = document(await client.get(_list_url(prj)), 200)["data"]
        own = next(t for t in mine if t["relationships"]["team"]["data"]["id"] == team_id)
        body = {"data": {"type": "team-projects", "attributes": {"access": "admin"}}}
        escalated = await client.patch(f"/api/v2/team-projects/{own['id']}", json=body, headers=CT)
        assert escalated.status_code == 403, escalated.text
    shown = document(await admin.get(f"/api/v2/team-projects/{own['id']}"), 200)["data"]
    assert shown["attributes"]["access"] == "custom"


async def test_strangers_are_told_nothing(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org, prj, _, _ = await _setup(admin)
    devs = await team(admin, org, "devs")
    tp = document(await team_project(admin, devs["id"], prj, "read"), 201)["data"]["id"]
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as client:
        assert (await client.get(_list_url(prj))).status_code == 404
        assert (await client.get(f"/api/v2/team-projects/{tp}")).status_code == 404
        assert (await client.delete(f"/api/v2/team-projects/{tp}")).status_code == 404
        made = await team_project(client, devs["id"], prj, "admin")
        assert made.status_code == 404, made.text
    document(await admin.get(f"/api/v2/team-projects/{tp}"), 200)


async def test_custom_create_creates_workspaces_in_the_project_only(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, prj, inside, outside = await _setup(admin)
    person, team_id = await _member(admin, org, "creator")
    made = await team_project(admin, team_id, prj, "custom", workspace_access={"create": True})
    document(made, 201)
    rel = {"project": {"data": {"type": "projects", "id": prj}}}
    async with app.client(person.token) as client:
        body = {"data": {"type": "workspaces", "attributes": {"name": "new"}, "relationships": rel}}
        created = await client.post(
            f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT
        )
        document(created, 201)
        body = {"data": {"type": "workspaces", "attributes": {"name": "stray"}}}
        stray = await client.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        assert stray.status_code == 403, stray.text
        # Creating is not administering: the settings of the project's workspaces stay closed.
        settings = {"data": {"type": "workspaces", "attributes": {"description": "x"}}}
        patched = await client.patch(f"/api/v2/workspaces/{inside.id}", json=settings, headers=CT)
        assert patched.status_code == 403, patched.text
        assert (await client.get(f"/api/v2/workspaces/{outside.id}")).status_code == 404
