"""Request bodies HCP Terraform accepts and clients send (issue 8, item 2): a PATCH without
`data.type` (the type is checked only when given), token creation with no body, `null`, `{}`,
`{"data": null}` or go-tfe's untyped option struct (`"type": ""`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import CT, document, organization_and_workspace

pytestmark = pytest.mark.anyio


async def test_patch_without_type_is_accepted(admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    changed = document(
        await admin.patch(
            f"/api/v2/workspaces/{ws.id}",
            json={"data": {"attributes": {"description": "no type given"}}},
            headers=CT,
        ),
        200,
    )
    assert changed["data"]["attributes"]["description"] == "no type given"
    org = document(
        await admin.patch(
            f"/api/v2/organizations/{ws.org}",
            json={"data": {"attributes": {"email": "ops@example.com"}}},
            headers=CT,
        ),
        200,
    )
    assert org["data"]["attributes"]["email"] == "ops@example.com"
    # Given, the type is still checked, and nothing changes.
    wrong = document(
        await admin.patch(
            f"/api/v2/workspaces/{ws.id}",
            json={"data": {"type": "runs", "attributes": {"description": "typo"}}},
            headers=CT,
        ),
        422,
    )
    assert wrong["errors"][0]["source"] == {"pointer": "/data/type"}
    shown = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)
    assert shown["data"]["attributes"]["description"] == "no type given"
    not_a_string = await admin.patch(
        f"/api/v2/workspaces/{ws.id}", json={"data": {"type": 7}}, headers=CT
    )
    assert not_a_string.status_code == 422


BODIES: list[Any] = [
    b"",
    b"null",
    b"{}",
    b'{"data": null}',
    b'{"data": {"type": "", "attributes": {}}}',  # go-tfe: option structs carry no type
    b'{"data": {"attributes": {}}}',
]


@pytest.mark.parametrize("body", BODIES)
async def test_token_create_bodies(admin: httpx.AsyncClient, body: bytes) -> None:
    ws = await organization_and_workspace(admin)
    teams = document(await admin.get(f"/api/v2/organizations/{ws.org}/teams"), 200)["data"]
    owners = next(t for t in teams if t["attributes"]["name"] == "owners")
    me = document(await admin.get("/api/v2/account/details"), 200)["data"]["id"]
    for path in (
        f"/api/v2/organizations/{ws.org}/authentication-token",
        f"/api/v2/teams/{owners['id']}/authentication-token",
        f"/api/v2/users/{me}/authentication-tokens",
    ):
        created = document(await admin.post(path, content=body, headers=CT), 201)
        assert created["data"]["type"] == "authentication-tokens"
        assert created["data"]["attributes"]["token"]


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"data": []}', b'{"data": {"type": "workspaces"}}', b'{"nodata": 1}', b"7"],
)
async def test_token_create_still_refuses_wrong_bodies(
    admin: httpx.AsyncClient, body: bytes
) -> None:
    ws = await organization_and_workspace(admin)
    response = await admin.post(
        f"/api/v2/organizations/{ws.org}/authentication-token", content=body, headers=CT
    )
    assert response.status_code in (400, 422), response.text
