"""Tokens carry HCP Terraform's `created-by` relationship (issue 8, item 2): the person whose
token created them — on user, organization and team tokens, in the create answer, the show
and the lists."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

BODY = {"data": {"type": "authentication-tokens", "attributes": {"description": "ci"}}}


def _creator(doc: dict[str, object]) -> object:
    data = doc["data"]
    assert isinstance(data, dict)
    return data["relationships"]["created-by"]["data"]


async def test_created_by_names_the_person_who_asked(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    me = document(await admin.get("/api/v2/account/details"), 200)["data"]["id"]
    org = await create_organization(admin)
    teams = document(await admin.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
    owners = next(t for t in teams if t["attributes"]["name"] == "owners")
    admin_made = {"id": me, "type": "users"}

    org_token = document(
        await admin.post(f"/api/v2/organizations/{org}/authentication-token", headers=CT), 201
    )
    assert _creator(org_token) == admin_made
    shown = document(await admin.get(f"/api/v2/organizations/{org}/authentication-token"), 200)
    assert _creator(shown) == admin_made

    team_token = document(
        await admin.post(
            f"/api/v2/teams/{owners['id']}/authentication-tokens", json=BODY, headers=CT
        ),
        201,
    )
    assert _creator(team_token) == admin_made
    assert team_token["data"]["relationships"]["team"]["data"]["id"] == owners["id"]
    listed = document(await admin.get(f"/api/v2/teams/{owners['id']}/authentication-tokens"), 200)
    assert all(t["relationships"]["created-by"]["data"] == admin_made for t in listed["data"])

    # The admin made a token for Pia (make_user); Pia makes one herself.
    pia = await make_user(admin, "pia")
    async with app.client(pia.token) as client:
        own = document(
            await client.post(
                f"/api/v2/users/{pia.id}/authentication-tokens", json=BODY, headers=CT
            ),
            201,
        )
        assert _creator(own) == {"id": pia.id, "type": "users"}
        mine = document(await client.get(f"/api/v2/users/{pia.id}/authentication-tokens"), 200)
    creators = sorted(str(t["relationships"]["created-by"]["data"]["id"]) for t in mine["data"])
    assert creators == sorted([me, pia.id])
