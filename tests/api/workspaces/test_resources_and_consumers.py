"""Workspace resources (`GET /workspaces/:id/resources`), remote-state consumers and
`global-remote-state`, moving workspaces into a project from the project's side and tagging
workspaces from the tag's side — HCP Terraform's shapes, through raw HTTP, with the
authorizer's 404 (may not read) / 403 (may read, may not change)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from cairn.errors import Forbidden
from cairn.state.resources import read_resources
from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    create_organization,
    create_workspace,
    document,
    make_user,
)
from tests.support.statefile import new_lineage, null_resource, state_file, version_body

pytestmark = pytest.mark.anyio


async def _upload(client: httpx.AsyncClient, ws_id: str, raw: bytes) -> str:
    """Lock, upload `raw` inline, unlock; the new version's ID."""
    document(await client.post(f"/api/v2/workspaces/{ws_id}/actions/lock", headers=CT), 200)
    created = await client.post(
        f"/api/v2/workspaces/{ws_id}/state-versions", json=version_body(raw), headers=CT
    )
    sv_id: str = document(created, 201)["data"]["id"]
    document(await client.post(f"/api/v2/workspaces/{ws_id}/actions/unlock", headers=CT), 200)
    return sv_id


def _state_with_modules() -> bytes:
    counted = null_resource("web", 2)
    for i, instance in enumerate(counted["instances"]):
        instance["index_key"] = i
    keyed = null_resource("named", 1)
    keyed["instances"][0]["index_key"] = "blue"
    keyed["module"] = "module.net"
    data = {
        "mode": "data",
        "type": "null_data_source",
        "name": "x",
        "provider": "p",
        "instances": [{}],
    }
    return state_file(3, new_lineage(), resources=[counted, keyed, data])


async def _grant(admin: httpx.AsyncClient, org: str, person: Person, role: str, ws: str) -> None:
    grant = {"role": role, "workspaces": ws, "user": person.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)


# ---- resources ---------------------------------------------------------------------------------


async def test_resources_list_the_current_state(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await create_workspace(admin, await create_organization(admin))
    empty = document(await admin.get(f"/api/v2/workspaces/{ws.id}/resources"), 200)
    assert empty["data"] == [] and empty["meta"]["pagination"]["total-count"] == 0

    sv_id = await _upload(admin, ws.id, _state_with_modules())
    listed = document(await admin.get(f"/api/v2/workspaces/{ws.id}/resources"), 200)
    assert listed["meta"]["pagination"]["total-count"] == 3
    by_address = {r["attributes"]["address"]: r for r in listed["data"]}
    assert set(by_address) == {
        "null_resource.web[0]",
        "null_resource.web[1]",
        'module.net.null_resource.named["blue"]',
    }
    web1 = by_address["null_resource.web[1]"]
    assert web1["type"] == "resources" and web1["id"].startswith("wsr-")
    assert web1["attributes"] | {"created-at": None, "updated-at": None} == {
        "address": "null_resource.web[1]",
        "name": "web",
        "created-at": None,
        "updated-at": None,
        "module": "root",
        "provider": "hashicorp/null",
        "provider-type": "null_resource",
        "modified-by-state-version-id": sv_id,
        "name-index": "1",
    }
    assert by_address['module.net.null_resource.named["blue"]']["attributes"]["module"] == (
        "module.net"
    )
    # Paged by the database's rules: page 2 of size 2 holds the third.
    paged = document(
        await admin.get(
            f"/api/v2/workspaces/{ws.id}/resources", params={"page[size]": 2, "page[number]": 2}
        ),
        200,
    )
    assert len(paged["data"]) == 1 and paged["meta"]["pagination"]["prev-page"] == 1


def test_format_3_resources_are_listed() -> None:
    state = {
        "version": 3,
        "serial": 1,
        "lineage": "x",
        "modules": [
            {
                "path": ["root"],
                "outputs": {},
                "resources": {"aws_instance.a": {}, "data.aws_ami.b": {}},
            },
            {"path": ["root", "net"], "outputs": {}, "resources": {"aws_subnet.s.1": {}}},
        ],
    }
    found = list(read_resources([json.dumps(state).encode()]))
    assert [(r.address, r.module, r.name_index) for r in found] == [
        ("aws_instance.a", "root", None),
        ("module.net.aws_subnet.s[1]", "module.net", "1"),
    ]


async def test_resources_need_state_read(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org)
    await _upload(admin, ws.id, _state_with_modules())
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as c:
        assert (await c.get(f"/api/v2/workspaces/{ws.id}/resources")).status_code == 404
    reader = await make_user(admin, "reader")
    await _grant(admin, org, reader, "read", ws.name)
    async with app.client(reader.token) as c:
        assert len(document(await c.get(f"/api/v2/workspaces/{ws.id}/resources"), 200)["data"]) == 3


# ---- remote-state consumers --------------------------------------------------------------------


def _ids(*ws_ids: str) -> dict[str, Any]:
    return {"data": [{"type": "workspaces", "id": i} for i in ws_ids]}


async def _consumers(client: httpx.AsyncClient, ws_id: str) -> list[str]:
    listed = await client.get(f"/api/v2/workspaces/{ws_id}/relationships/remote-state-consumers")
    return [w["id"] for w in document(listed, 200)["data"]]


async def test_remote_state_consumers_round_trip(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    source = await create_workspace(admin, org, "source")
    a = await create_workspace(admin, org, "a")
    b = await create_workspace(admin, org, "b")
    path = f"/api/v2/workspaces/{source.id}/relationships/remote-state-consumers"
    assert await _consumers(admin, source.id) == []
    assert (await admin.post(path, json=_ids(a.id, b.id, a.id), headers=CT)).status_code == 204
    assert await _consumers(admin, source.id) == [a.id, b.id]
    assert (await admin.post(path, json=_ids(a.id), headers=CT)).status_code == 204  # again: fine
    assert (await admin.request("DELETE", path, json=_ids(a.id), headers=CT)).status_code == 204
    assert await _consumers(admin, source.id) == [b.id]
    assert (await admin.patch(path, json=_ids(a.id), headers=CT)).status_code == 204
    assert await _consumers(admin, source.id) == [a.id]
    assert (await admin.patch(path, json={"data": []}, headers=CT)).status_code == 204
    assert await _consumers(admin, source.id) == []

    # Bad input: nothing changes.
    other_org_ws = await create_workspace(admin, await create_organization(admin))
    bodies: list[dict[str, Any]] = [
        _ids(other_org_ws.id),
        _ids(source.id),
        _ids("ws-nope"),
        {"data": []},
    ]
    for body in bodies:
        refused = await admin.post(path, json=body, headers=CT)
        assert refused.status_code == 422, refused.text
    wrong_type = {"data": [{"type": "teams", "id": a.id}]}
    assert (await admin.post(path, json=wrong_type, headers=CT)).status_code == 422
    assert await _consumers(admin, source.id) == []

    # global-remote-state: stored and returned.
    shown = document(await admin.get(f"/api/v2/workspaces/{source.id}"), 200)["data"]
    assert shown["attributes"]["global-remote-state"] is False
    body = {"data": {"type": "workspaces", "attributes": {"global-remote-state": True}}}
    changed = document(
        await admin.patch(f"/api/v2/workspaces/{source.id}", json=body, headers=CT), 200
    )
    assert changed["data"]["attributes"]["global-remote-state"] is True


async def test_remote_state_consumers_authorization(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    source = await create_workspace(admin, org, "source")
    other = await create_workspace(admin, org, "other")
    path = f"/api/v2/workspaces/{source.id}/relationships/remote-state-consumers"
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as c:
        assert (await c.get(path)).status_code == 404
        assert (await c.post(path, json=_ids(other.id), headers=CT)).status_code == 404
    writer = await make_user(admin, "writer")
    await _grant(admin, org, writer, "write", "*")
    async with app.client(writer.token) as c:
        assert (await c.get(path)).status_code == 200
        assert (await c.post(path, json=_ids(other.id), headers=CT)).status_code == 403
    assert await _consumers(admin, source.id) == []


async def test_consumers_enforced_for_workspace_scoped_callers(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The rule state reads apply to a caller whose access comes through a workspace (a run's
    token, once runs exist): a subject kind carrying `workspace_id`. Users and teams are read
    as themselves (their grants decide), as in HCP Terraform."""
    org = await create_organization(admin)
    source = await create_workspace(admin, org, "source")
    consumer = await create_workspace(admin, org, "consumer")
    outsider = await create_workspace(admin, org, "outsider")
    await _upload(admin, source.id, state_file(1, new_lineage()))

    @dataclasses.dataclass(frozen=True)
    class RunLike:  # what a run/job subject will carry; the admin's rights otherwise
        workspace_id: str
        id: str = "run-test"
        name: str = "run"
        token_id: str = ""
        is_site_admin: bool = True
        kind: str = "run"

    states = app.ctx.states

    def reads(via: str) -> bool:
        try:
            states.current(RunLike(via), source.id)  # type: ignore[arg-type]
        except Forbidden:
            return False
        return True

    assert reads(source.id)  # a workspace reads its own state
    assert not reads(consumer.id) and not reads(outsider.id)
    path = f"/api/v2/workspaces/{source.id}/relationships/remote-state-consumers"
    assert (await admin.post(path, json=_ids(consumer.id), headers=CT)).status_code == 204
    assert reads(consumer.id) and not reads(outsider.id)
    body = {"data": {"type": "workspaces", "attributes": {"global-remote-state": True}}}
    document(await admin.patch(f"/api/v2/workspaces/{source.id}", json=body, headers=CT), 200)
    assert reads(outsider.id)
    # Never across organizations, even with global-remote-state.
    foreign = await create_workspace(admin, await create_organization(admin))
    assert not reads(foreign.id)
    # A person's own token is read as the person.
    assert (
        await admin.get(f"/api/v2/workspaces/{source.id}/current-state-version")
    ).status_code == 200


# ---- projects and tags from the other side ----------------------------------------------------


async def _team(admin: httpx.AsyncClient, org: str, person: Person, **flags: bool) -> None:
    attrs = {"name": "readers", "organization-access": flags}
    made = await admin.post(
        f"/api/v2/organizations/{org}/teams",
        json={"data": {"type": "teams", "attributes": attrs}},
        headers=CT,
    )
    team_id = document(made, 201)["data"]["id"]
    members = {"data": [{"type": "users", "id": person.username}]}
    added = await admin.post(
        f"/api/v2/teams/{team_id}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text


async def _project(admin: httpx.AsyncClient, org: str, name: str) -> str:
    body = {"data": {"type": "projects", "attributes": {"name": name}}}
    made = await admin.post(f"/api/v2/organizations/{org}/projects", json=body, headers=CT)
    return str(document(made, 201)["data"]["id"])


async def _project_of(admin: httpx.AsyncClient, ws_id: str) -> str:
    data = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    return str(data["relationships"]["project"]["data"]["id"])


async def test_move_workspaces_into_a_project(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    a = await create_workspace(admin, org, "a")
    b = await create_workspace(admin, org, "b")
    prj = await _project(admin, org, "apps")
    path = f"/api/v2/projects/{prj}/relationships/workspaces"
    assert (await admin.post(path, json=_ids(a.id, b.id), headers=CT)).status_code == 204
    assert await _project_of(admin, a.id) == prj and await _project_of(admin, b.id) == prj

    # A workspace-scoped admin may not place workspaces in a project (H4's rule): 403, and
    # nothing moved; one who may not read the project: 404.
    c = await create_workspace(admin, org, "c")
    before = await _project_of(admin, c.id)
    person = await make_user(admin, "wsadmin")
    await _grant(admin, org, person, "admin", "c")
    async with app.client(person.token) as client:
        assert (await client.post(path, json=_ids(c.id), headers=CT)).status_code == 404
    await _team(admin, org, person, **{"read-projects": True})
    async with app.client(person.token) as client:
        assert (await client.post(path, json=_ids(c.id), headers=CT)).status_code == 403
    assert await _project_of(admin, c.id) == before
    # An unknown workspace: 422, and the others of the request did not move.
    refused = await admin.post(path, json=_ids(c.id, "ws-unknown"), headers=CT)
    assert refused.status_code == 422
    assert await _project_of(admin, c.id) == before
    assert (
        await admin.post(
            "/api/v2/projects/prj-nope/relationships/workspaces", json=_ids(c.id), headers=CT
        )
    ).status_code == 404


async def test_tag_and_untag_workspaces_from_the_tag(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    a = await create_workspace(admin, org, "a", **{"tag-names": ["prod"]})
    b = await create_workspace(admin, org, "b")
    tags = document(await admin.get(f"/api/v2/organizations/{org}/tags"), 200)["data"]
    (tag_id,) = [t["id"] for t in tags if t["attributes"]["name"] == "prod"]
    path = f"/api/v2/tags/{tag_id}/relationships/workspaces"
    assert (await admin.post(path, json=_ids(a.id, b.id), headers=CT)).status_code == 204
    shown = document(await admin.get(f"/api/v2/workspaces/{b.id}"), 200)["data"]
    assert shown["attributes"]["tag-names"] == ["prod"]
    assert (await admin.request("DELETE", path, json=_ids(a.id), headers=CT)).status_code == 204
    shown = document(await admin.get(f"/api/v2/workspaces/{a.id}"), 200)["data"]
    assert shown["attributes"]["tag-names"] == []

    reader = await make_user(admin, "reader")
    await _grant(admin, org, reader, "read", "*")
    async with app.client(reader.token) as client:
        assert (await client.post(path, json=_ids(a.id), headers=CT)).status_code == 403
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as client:
        assert (await client.post(path, json=_ids(a.id), headers=CT)).status_code == 404
    assert (
        await admin.post(
            "/api/v2/tags/tag-nope/relationships/workspaces", json=_ids(a.id), headers=CT
        )
    ).status_code == 404
