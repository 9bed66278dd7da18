"""Pending invitations from the invitee's side (issue 8): `GET /organization-memberships` lists
the `invited` memberships of the caller's own email (as HCP Terraform does), and a login
through the IdP with that email takes them up — the person joins the invitation's teams (or
the organization, in no team), the invitation goes, `org.member.accept` is audited — unless
the IdP marks the email unverified."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    document,
    make_user,
    unique_name,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.com"


def _invite(email: str, teams: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "organization-memberships", "attributes": {"email": email}}
    if teams is not None:
        data["relationships"] = {"teams": {"data": [{"type": "teams", "id": t} for t in teams]}}
    return {"data": data}


async def _invited(admin: httpx.AsyncClient, org: str, email: str, teams: list[str]) -> str:
    path = f"/api/v2/organizations/{org}/organization-memberships"
    made = document(await admin.post(path, json=_invite(email, teams), headers=CT), 201)["data"]
    assert made["attributes"]["status"] == "invited"
    return str(made["id"])


async def _team(admin: httpx.AsyncClient, org: str, name: str) -> str:
    attrs = {"name": name, "visibility": "organization"}
    made = await admin.post(
        f"/api/v2/organizations/{org}/teams",
        json={"data": {"type": "teams", "attributes": attrs}},
        headers=CT,
    )
    return str(document(made, 201)["data"]["id"])


async def _token_for(admin: httpx.AsyncClient, user_id: str) -> str:
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "t"}}}
    made = await admin.post(f"/api/v2/users/{user_id}/authentication-tokens", json=body, headers=CT)
    return str(document(made, 201)["data"]["attributes"]["token"])


async def _team_members(admin: httpx.AsyncClient, team_id: str) -> list[str]:
    team = document(await admin.get(f"/api/v2/teams/{team_id}"), 200)["data"]
    return [u["id"] for u in team["relationships"]["users"]["data"]]


async def _pending(admin: httpx.AsyncClient, org: str) -> list[str]:
    listed = document(
        await admin.get(
            f"/api/v2/organizations/{org}/organization-memberships",
            params={"filter[status]": "invited"},
        ),
        200,
    )
    return [d["attributes"]["email"] for d in listed["data"]]


async def _accepted_events(admin: httpx.AsyncClient, subject_suffix: str) -> list[dict[str, Any]]:
    events = document(
        await admin.get(
            "/api/cairn/v1/audit-events",
            params={"filter[action]": "org.member.accept", "page[size]": "100"},
        ),
        200,
    )["data"]
    return [e for e in events if e["attributes"]["subject"].endswith(subject_suffix)]


def _idp_login(app: InProcessCairn, subject: str, email: str, verified: bool | None) -> str:
    """The step of the IdP callback that follows a verified ID token."""
    return app.ctx.login.upsert_idp_user(
        issuer=ISSUER,
        subject=subject,
        email=email,
        preferred=subject,
        groups=[],
        source="192.0.2.9",
        email_verified=verified,
    )


async def test_own_invitations_are_listed_and_shown(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    first, second = await create_organization(admin), await create_organization(admin)
    devs = await _team(admin, first, "devs")
    email = f"{unique_name('gwen')}@example.com"
    in_first = await _invited(admin, first, email, [devs])
    in_second = await _invited(admin, second, email, [])
    username = unique_name("gwen")
    made = await admin.post(
        "/api/cairn/v1/admin/users", json={"username": username, "email": email.upper()}
    )
    gwen_id = str(document(made, 201)["data"]["id"])
    other = await make_user(admin, "other")
    async with app.client(await _token_for(admin, gwen_id)) as gwen:
        mine = document(await gwen.get("/api/v2/organization-memberships"), 200)
        assert mine["meta"]["pagination"]["total-count"] == 2
        by_org = {d["relationships"]["organization"]["data"]["id"]: d for d in mine["data"]}
        assert set(by_org) == {first, second}
        assert by_org[first]["id"] == in_first
        assert by_org[first]["attributes"] == {"status": "invited", "email": email}
        assert by_org[first]["relationships"]["teams"]["data"] == [{"type": "teams", "id": devs}]
        assert by_org[first]["relationships"]["user"]["data"] == {"type": "users", "id": gwen_id}
        assert by_org[second]["id"] == in_second
        # Paged like any list.
        page = document(
            await gwen.get("/api/v2/organization-memberships", params={"page[size]": "1"}), 200
        )
        assert len(page["data"]) == 1 and page["meta"]["pagination"]["total-pages"] == 2
        # Her own invitation is hers to see, not anyone else's.
        shown = document(await gwen.get(f"/api/v2/organization-memberships/{in_first}"), 200)
        assert shown["data"]["attributes"]["status"] == "invited"
    async with app.client(other.token) as c:
        assert document(await c.get("/api/v2/organization-memberships"), 200)["data"] == []
        assert (await c.get(f"/api/v2/organization-memberships/{in_first}")).status_code == 404


async def test_an_idp_login_takes_up_the_invitations_of_its_email(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    first, second = await create_organization(admin), await create_organization(admin)
    devs = await _team(admin, first, "devs")
    email = f"{unique_name('ivy')}@example.com"
    await _invited(admin, first, email, [devs])
    await _invited(admin, second, email, [])

    ivy_id = _idp_login(app, unique_name("ivy"), email.title(), verified=True)  # first login

    assert await _pending(admin, first) == [] and await _pending(admin, second) == []
    assert ivy_id in await _team_members(admin, devs)
    async with app.client(await _token_for(admin, ivy_id)) as ivy:
        mine = document(await ivy.get("/api/v2/organization-memberships"), 200)["data"]
        assert {d["relationships"]["organization"]["data"]["id"] for d in mine} == {first, second}
        assert {d["attributes"]["status"] for d in mine} == {"active"}
    username = document(await admin.get(f"/api/v2/users/{ivy_id}"), 200)["data"]["attributes"][
        "username"
    ]
    events = await _accepted_events(admin, f"/{username}")
    assert sorted(e["attributes"]["subject"] for e in events) == sorted(
        [f"{first}/{username}", f"{second}/{username}"]
    )
    # The next login finds nothing left to take up.
    assert _idp_login(app, username, email, verified=None) != ""
    assert len(await _accepted_events(admin, f"/{username}")) == 2


async def test_an_email_the_idp_marks_unverified_takes_up_nothing(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    devs = await _team(admin, org, "devs")
    email = f"{unique_name('mallory')}@example.com"
    await _invited(admin, org, email, [devs])

    user_id = _idp_login(app, unique_name("mallory"), email, verified=False)

    assert await _pending(admin, org) == [email]
    assert user_id not in await _team_members(admin, devs)
