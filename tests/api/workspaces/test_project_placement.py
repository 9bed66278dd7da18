"""Finding H4: placing a workspace in a project (creating it there, moving it in or out) needs
rights on the project itself, as in HCP Terraform: organization-wide ``workspace:manage``
(team organization-access ``manage-workspaces`` / ``manage-projects``, owners, site admins). A
workspace-scoped ``admin`` grant lets its holder create matching workspaces in the default
project only, so the project claims of the id-tokens minted for them (``sub``,
``terraform_project_id``) are never forged. A project the caller may not read is answered as
one that does not exist (422, no existence leak); one it may read but not manage is a 403."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio


def _ws_body(name: str | None = None, project: str | None = None, **attrs: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "workspaces", "attributes": dict(attrs)}
    if name is not None:
        data["attributes"]["name"] = name
    if project is not None:
        data["relationships"] = {"project": {"data": {"type": "projects", "id": project}}}
    return {"data": data}


async def _project(admin: httpx.AsyncClient, org: str, name: str) -> str:
    body = {"data": {"type": "projects", "attributes": {"name": name}}}
    created = await admin.post(f"/api/v2/organizations/{org}/projects", json=body, headers=CT)
    project_id: str = document(created, 201)["data"]["id"]
    return project_id


async def _default_project(admin: httpx.AsyncClient, org: str) -> str:
    listed = document(await admin.get(f"/api/v2/organizations/{org}/projects"), 200)
    (default,) = [p["id"] for p in listed["data"] if p["attributes"]["name"] == "Default Project"]
    return str(default)


async def _grant_admin(admin: httpx.AsyncClient, org: str, person: Person, pattern: str) -> None:
    grant = {"role": "admin", "workspaces": pattern, "user": person.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)


async def _team(
    admin: httpx.AsyncClient, org: str, name: str, person: Person, **flags: bool
) -> None:
    attrs = {
        "name": name,
        "organization-access": {k.replace("_", "-"): v for k, v in flags.items()},
    }
    created = await admin.post(
        f"/api/v2/organizations/{org}/teams",
        json={"data": {"type": "teams", "attributes": attrs}},
        headers=CT,
    )
    team_id = document(created, 201)["data"]["id"]
    members = {"data": [{"type": "users", "id": person.username}]}
    added = await admin.post(
        f"/api/v2/teams/{team_id}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text


async def _project_of(admin: httpx.AsyncClient, ws_id: str) -> str:
    data = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    return str(data["relationships"]["project"]["data"]["id"])


async def _names(admin: httpx.AsyncClient, org: str) -> set[str]:
    listed = document(await admin.get(f"/api/v2/organizations/{org}/workspaces"), 200)
    return {w["attributes"]["name"] for w in listed["data"]}


async def test_workspace_grant_cannot_create_in_a_project(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The reproducer of H4: olga (admin on dev-*) may not put dev-evil into Prod, which she
    cannot even see; she still creates dev-* workspaces in the default project."""
    org = await create_organization(admin)
    prod = await _project(admin, org, "Prod")
    default = await _default_project(admin, org)
    olga = await make_user(admin, "olga")
    await _grant_admin(admin, org, olga, "dev-*")
    path = f"/api/v2/organizations/{org}/workspaces"
    async with app.client(olga.token) as person:
        assert (await person.get(f"/api/v2/projects/{prod}")).status_code == 404
        refused = await person.post(path, json=_ws_body("dev-evil", prod), headers=CT)
        # As for a project that does not exist: Prod's existence does not leak.
        error = document(refused, 422)["errors"][0]
        assert error["source"] == {"pointer": "/data/relationships/project"}
        assert "Prod" not in error["detail"]
        missing = await person.post(path, json=_ws_body("dev-evil", "prj-nope"), headers=CT)
        assert document(missing, 422)["errors"][0]["source"] == error["source"]
        # Where a workspace goes when no project is named, or the default project by ID.
        made = document(await person.post(path, json=_ws_body("dev-ok"), headers=CT), 201)
        named = await person.post(path, json=_ws_body("dev-ok2", default), headers=CT)
        document(named, 201)
        minted = await person.post(
            f"/api/cairn/v1/workspaces/{made['data']['id']}/id-tokens",
            json={"audience": "sts.amazonaws.com", "run_phase": "apply"},
        )
        claims = jwt.decode(document(minted, 201)["token"], options={"verify_signature": False})
        assert claims["terraform_project_id"] == default
        assert ":project:Default Project:" in claims["sub"]
    assert "dev-evil" not in await _names(admin, org)


async def test_a_readable_project_is_a_403_without_project_rights(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """A team with read-projects sees Prod; with an admin grant on dev-* its member is
    still refused (403) to create workspaces there."""
    org = await create_organization(admin)
    prod = await _project(admin, org, "Prod")
    olga = await make_user(admin, "olga")
    await _grant_admin(admin, org, olga, "dev-*")
    await _team(admin, org, "viewers", olga, read_projects=True)
    async with app.client(olga.token) as person:
        assert (await person.get(f"/api/v2/projects/{prod}")).status_code == 200
        refused = await person.post(
            f"/api/v2/organizations/{org}/workspaces", json=_ws_body("dev-evil", prod), headers=CT
        )
        detail = document(refused, 403)["errors"][0]["detail"]
        assert "Prod" in detail and "workspace:manage" in detail
    assert "dev-evil" not in await _names(admin, org)


async def test_workspace_grant_cannot_move_into_or_out_of_a_project(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    prod = await _project(admin, org, "Prod")
    default = await _default_project(admin, org)
    mine = await create_workspace(admin, org, "dev-x")
    placed = document(
        await admin.post(
            f"/api/v2/organizations/{org}/workspaces",
            json=_ws_body("dev-in-prod", prod),
            headers=CT,
        ),
        201,
    )["data"]["id"]
    olga = await make_user(admin, "olga")
    await _grant_admin(admin, org, olga, "dev-*")
    async with app.client(olga.token) as person:
        # Into Prod: refused, as if Prod did not exist; the workspace is unchanged.
        into = await person.patch(
            f"/api/v2/workspaces/{mine.id}", json=_ws_body(project=prod), headers=CT
        )
        document(into, 422)
        # Out of Prod (someone with rights put it there): refused too.
        out = await person.patch(
            f"/api/v2/workspaces/{placed}", json=_ws_body(project=default), headers=CT
        )
        assert "Prod" in document(out, 403)["errors"][0]["detail"]
        # Her other rights on the workspaces are untouched, also when the body names the
        # project the workspace is already in.
        for ws_id, project in ((mine.id, default), (placed, prod)):
            same = await person.patch(
                f"/api/v2/workspaces/{ws_id}",
                json=_ws_body(project=project, description="still mine"),
                headers=CT,
            )
            assert document(same, 200)["data"]["attributes"]["description"] == "still mine"
    assert await _project_of(admin, mine.id) == default
    assert await _project_of(admin, placed) == prod


@pytest.mark.parametrize("flag", ["manage_projects", "manage_workspaces"])
async def test_project_rights_place_and_move(
    app: InProcessCairn, admin: httpx.AsyncClient, flag: str
) -> None:
    """Organization access manage-projects or manage-workspaces: workspaces created in, and
    moved into and out of, any project (HCP Terraform's project-level access)."""
    org = await create_organization(admin)
    prod = await _project(admin, org, "Prod")
    default = await _default_project(admin, org)
    manager = await make_user(admin, "manager")
    await _team(admin, org, "managers", manager, **{flag: True})
    async with app.client(manager.token) as person:
        made = await person.post(
            f"/api/v2/organizations/{org}/workspaces", json=_ws_body("app", prod), headers=CT
        )
        ws_id = document(made, 201)["data"]["id"]
        assert await _project_of(admin, ws_id) == prod
        moved = await person.patch(
            f"/api/v2/workspaces/{ws_id}", json=_ws_body(project=default), headers=CT
        )
        document(moved, 200)
        assert await _project_of(admin, ws_id) == default
        back = await person.patch(
            f"/api/v2/workspaces/{ws_id}", json=_ws_body(project=prod), headers=CT
        )
        document(back, 200)
    assert await _project_of(admin, ws_id) == prod
