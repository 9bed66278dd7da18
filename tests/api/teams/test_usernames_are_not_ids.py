"""A username never passes for a user ID (finding M1).

Grants and team memberships name a user by "username or ID". An IdP user whose
`preferred_username` was another user's ID (`user-…`) used to be created with that name, and
the lookup took whichever row came first: grants and memberships addressed to the victim's ID
went to the attacker. Now: the site-admin API refuses usernames shaped like an ID, IdP logins
adjust such a claim (the person still logs in, under another name), and a value shaped like a
user ID is looked up as an ID only — so even a user so named before cannot capture anything.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cairn import ids
from cairn.auth.login import upsert_idp_user
from cairn.auth.model import User
from tests.support.app import (
    CT,
    START,
    InProcessCairn,
    Person,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

RANDOM = "AbCdEfGh12345678"  # 16 base62 characters: the random part of an ID
ISSUER = "https://idp.example.com"


async def _create_user(admin: httpx.AsyncClient, username: str) -> httpx.Response:
    return await admin.post(
        "/api/cairn/v1/admin/users", json={"username": username, "email": "x@example.com"}
    )


async def _user(admin: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = document(await admin.get(f"/api/v2/users/{user_id}"), 200)["data"][
        "attributes"
    ]
    return attributes


async def _token_for(admin: httpx.AsyncClient, user_id: str) -> str:
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "t"}}}
    created = await admin.post(
        f"/api/v2/users/{user_id}/authentication-tokens", json=body, headers=CT
    )
    value: str = document(created, 201)["data"]["attributes"]["token"]
    return value


async def _owners(admin: httpx.AsyncClient, org: str) -> dict[str, Any]:
    teams = document(await admin.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
    owners: dict[str, Any] = next(t for t in teams if t["attributes"]["name"] == "owners")
    return owners


async def _address_by_id(
    app: InProcessCairn, admin: httpx.AsyncClient, victim: Person, impostor_id: str
) -> None:
    """The owner grants write on a workspace to the victim's ID and adds the victim's ID to
    the owners team: both reach the victim, none the impostor."""
    ws = await create_workspace(admin, await create_organization(admin))
    grant = {"role": "write", "user": victim.id, "workspaces": ws.name}
    document(await admin.post(f"/api/cairn/v1/organizations/{ws.org}/grants", json=grant), 201)
    owners = await _owners(admin, ws.org)
    members = {"data": [{"type": "users", "id": victim.id}]}
    added = await admin.post(
        f"/api/v2/teams/{owners['id']}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text

    members_now = (await _owners(admin, ws.org))["relationships"]["users"]["data"]
    assert {u["id"] for u in members_now} == {await _user_id(admin), victim.id}
    async with app.client(victim.token) as person:
        assert (await person.get(f"/api/v2/workspaces/{ws.id}")).status_code == 200
    async with app.client(await _token_for(admin, impostor_id)) as impostor:
        assert (await impostor.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404
        org = await impostor.get(f"/api/v2/organizations/{ws.org}")
        assert org.status_code == 404, org.text


async def _user_id(client: httpx.AsyncClient) -> str:
    user_id: str = document(await client.get("/api/v2/account/details"), 200)["data"]["id"]
    return user_id


@pytest.mark.parametrize(
    "username",
    [f"user-{RANDOM}", f"team-{RANDOM}", f"org-{RANDOM}", f"ws-{RANDOM}", f"USER-{RANDOM}"],
)
async def test_the_admin_api_refuses_usernames_shaped_like_ids(
    admin: httpx.AsyncClient, username: str
) -> None:
    response = await _create_user(admin, username)
    assert response.status_code == 422, response.text
    assert "ID" in response.text


async def test_the_admin_api_refuses_an_existing_users_id_as_a_username(
    admin: httpx.AsyncClient,
) -> None:
    victim = await make_user(admin)
    response = await _create_user(admin, victim.id)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "username",
    ["user-bob", "team-red", f"user-{RANDOM[:15]}", f"user-{RANDOM}9", f"nokind-{RANDOM}"],
)
async def test_names_that_are_not_ids_are_still_usernames(
    admin: httpx.AsyncClient, username: str
) -> None:
    document(await _create_user(admin, username), 201)


async def test_an_idp_user_cannot_take_another_users_id(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The finding's reproducer: an IdP user whose preferred_username is the victim's ID."""
    victim = await make_user(admin, "victim")

    def login() -> str:
        return upsert_idp_user(
            app.ctx.db,
            app.ctx.clock,
            issuer=ISSUER,
            subject="mallory",
            email="mallory@example.com",
            preferred=victim.id,
            groups=[],
            source="192.0.2.1",
        )

    attacker_id = login()
    name = (await _user(admin, attacker_id))["username"]
    assert name != victim.id and not ids.looks_like_any(name)
    assert victim.id in name  # adjusted, not replaced: the person can recognise it
    assert login() == attacker_id  # and logs in again, as the same user
    await _address_by_id(app, admin, victim, attacker_id)


async def test_a_user_named_like_an_id_before_is_never_taken_for_it(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """A user created with an ID-shaped name before the rule (a row as an earlier cairn left
    it): addressing the victim by ID still reaches the victim only."""
    victim = await make_user(admin, "victim")
    legacy_id = ids.new_id("user")
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(User(id=legacy_id, username=victim.id, email="", created_at=START))
        s.commit()
    await _address_by_id(app, admin, victim, legacy_id)


async def test_an_idp_user_named_like_an_id_before_is_renamed_at_login(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    victim = await make_user(admin, "victim")
    legacy_id = ids.new_id("user")
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            User(
                id=legacy_id,
                username=victim.id,
                email="",
                idp_issuer=ISSUER,
                idp_subject="mallory",
                created_at=START,
            )
        )
        s.commit()
    again = upsert_idp_user(
        app.ctx.db,
        app.ctx.clock,
        issuer=ISSUER,
        subject="mallory",
        email="mallory@example.com",
        preferred=victim.id,
        groups=[],
        source="192.0.2.1",
    )
    assert again == legacy_id
    name = (await _user(admin, legacy_id))["username"]
    assert not ids.looks_like_any(name)
