"""Organization and team tokens (service accounts) never turn into another token (finding H3).

`terraform login`'s token form used to accept any API token and answer a new `login` token for
whoever it belonged to — an organization's or a team's service account included. That token
had no expiry, was listed nowhere an owner looks, and kept working after the organization or
team token it came from was revoked. Now: the form refuses such tokens (the page says why),
no code is ever issued or redeemed for a service account, a service account creates no token
of any kind, and a person's kind of token held by a service account (made before) is refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from cairn import ids
from cairn.auth.login import s256
from cairn.auth.model import ApiToken, OAuthCode
from tests.api.login.test_code_expiry import REDIRECT, redeem, terraform_verifier
from tests.support.app import (
    CT,
    START,
    InProcessCairn,
    create_organization,
    document,
    make_user,
    unique_name,
)

pytestmark = pytest.mark.anyio

REFUSED = "organization and team tokens cannot be used to log in"


def _form(token: str, verifier: str) -> dict[str, str]:
    return {
        "client_id": "terraform-cli",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "s",
        "token": token,
    }


async def _org_token(admin: httpx.AsyncClient, org: str) -> str:
    body = {"data": {"type": "authentication-token"}}
    response = await admin.post(
        f"/api/v2/organizations/{org}/authentication-token", json=body, headers=CT
    )
    value: str = document(response, 201)["data"]["attributes"]["token"]
    return value


async def _team(admin: httpx.AsyncClient, org: str) -> str:
    body = {"data": {"type": "teams", "attributes": {"name": unique_name("team")}}}
    response = await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    team_id: str = document(response, 201)["data"]["id"]
    return team_id


async def _team_token(admin: httpx.AsyncClient, team_id: str, *, described: bool) -> str:
    if described:
        path = f"/api/v2/teams/{team_id}/authentication-tokens"
        body: dict[str, Any] = {
            "data": {"type": "authentication-tokens", "attributes": {"description": "ci"}}
        }
    else:
        path = f"/api/v2/teams/{team_id}/authentication-token"
        body = {"data": {"type": "authentication-token"}}
    value: str = document(await admin.post(path, json=body, headers=CT), 201)["data"]["attributes"][
        "token"
    ]
    return value


async def _service_token(admin: httpx.AsyncClient, org: str, kind: str) -> tuple[str, str]:
    """A service-account token of ``kind`` and the path that revokes it."""
    if kind == "organization":
        return await _org_token(admin, org), f"/api/v2/organizations/{org}/authentication-token"
    team_id = await _team(admin, org)
    value = await _team_token(admin, team_id, described=kind == "team-described")
    if kind == "team":
        return value, f"/api/v2/teams/{team_id}/authentication-token"
    listed = document(await admin.get(f"/api/v2/teams/{team_id}/authentication-tokens"), 200)
    return value, f"/api/v2/authentication-tokens/{listed['data'][0]['id']}"


def _codes(app: InProcessCairn) -> int:
    with app.ctx.db.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(OAuthCode)) or 0)


@pytest.mark.parametrize("kind", ["organization", "team", "team-described"])
async def test_the_login_form_refuses_organization_and_team_tokens(
    app: InProcessCairn, admin: httpx.AsyncClient, kind: str
) -> None:
    """The finding's reproducer: the token form must not hand out a code for a service
    account, so there is never a login token to outlive the service token's revocation."""
    org = await create_organization(admin)
    service_token, revoke_path = await _service_token(admin, org, kind)
    verifier = terraform_verifier()
    async with app.client() as browser:
        response = await browser.post("/oauth/authorization", data=_form(service_token, verifier))
        laundered = None
        if response.status_code == 302:  # what the finding saw: follow it to the end
            code = dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]
            answer = await redeem(browser, code, verifier)
            laundered = answer.json().get("access_token")
        assert response.status_code == 401, (response.status_code, laundered)
        assert "location" not in response.headers
        assert REFUSED in response.text
        assert 'name="token"' in response.text  # the form again, for a person's token
    assert _codes(app) == 0

    # The refusal is audited, naming the service account.
    filters = {"filter[action]": "auth.login.authorize", "filter[outcome]": "failure"}
    audit = document(await admin.get("/api/cairn/v1/audit-events", params=filters), 200)
    assert [e["attributes"]["actor-name"][:4] for e in audit["data"]] == ["api-"]

    # Revoking the service token ends it, and nothing made from it is left.
    assert (await admin.delete(revoke_path)).status_code == 204
    async with app.client(service_token) as svc:
        assert (await svc.get("/api/v2/account/details")).status_code == 401


async def test_a_person_still_logs_in_with_the_form(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    person = await make_user(admin)
    verifier = terraform_verifier()
    async with app.client() as browser:
        response = await browser.post("/oauth/authorization", data=_form(person.token, verifier))
        assert response.status_code == 302, response.text
        code = dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]
        token = document(await redeem(browser, code, verifier), 200)["access_token"]
    async with app.client(token) as me:
        details = document(await me.get("/api/v2/account/details"), 200)
        assert details["data"]["attributes"]["username"] == person.username


async def test_an_organization_token_creates_no_token_of_any_kind(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """Every other way an organization token (which holds every right in its organization)
    could make a token that survives its revocation: 403, and nothing is created."""
    org = await create_organization(admin)
    team_id = await _team(admin, org)
    org_token = await _org_token(admin, org)
    async with app.client(org_token) as svc:
        svc_id = document(await svc.get("/api/v2/account/details"), 200)["data"]["id"]
        attempts = {
            "team token": (
                f"/api/v2/teams/{team_id}/authentication-token",
                {"data": {"type": "authentication-token"}},
            ),
            "described team token": (
                f"/api/v2/teams/{team_id}/authentication-tokens",
                {"data": {"type": "authentication-tokens", "attributes": {"description": "x"}}},
            ),
            "organization token": (
                f"/api/v2/organizations/{org}/authentication-token",
                {"data": {"type": "authentication-token"}},
            ),
            "user token for itself": (
                f"/api/v2/users/{svc_id}/authentication-tokens",
                {"data": {"type": "authentication-tokens", "attributes": {"description": "x"}}},
            ),
        }
        for what, (path, body) in attempts.items():
            response = await svc.post(path, json=body, headers=CT)
            assert response.status_code == 403, (what, response.status_code, response.text)
            assert "token" in response.text
    listed = document(await admin.get(f"/api/v2/organizations/{org}/team-tokens"), 200)
    assert listed["data"] == []

    # Revoking the organization token leaves nothing of it behind.
    assert (
        await admin.delete(f"/api/v2/organizations/{org}/authentication-token")
    ).status_code == 204
    with app.ctx.db.unit_of_work() as s:
        left = s.scalars(
            select(ApiToken.kind).where(ApiToken.user_id == svc_id, ApiToken.revoked_at.is_(None))
        ).all()
    assert left == []


@pytest.mark.parametrize("kind", ["login", "user"])
async def test_a_persons_kind_of_token_held_by_a_service_account_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient, kind: str
) -> None:
    """A token laundered by an earlier cairn (a `login` token of `api-org-…`), still in the
    database: refused, so revoking the organization token really ends everything."""
    org = await create_organization(admin)
    org_token = await _org_token(admin, org)
    async with app.client(org_token) as svc:
        svc_id = document(await svc.get("/api/v2/account/details"), 200)["data"]["id"]
    value = "cairn_" + "L" * 43
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            ApiToken(
                id=ids.new_id("token"),
                user_id=svc_id,
                token_hash=app.ctx.keyring.token_hash(value),
                kind=kind,
                description="terraform login from 127.0.0.1",
                created_at=START,
            )
        )
        s.commit()
    async with app.client(value) as laundered:
        response = await laundered.get(f"/api/v2/organizations/{org}")
        assert response.status_code == 401, response.text
        assert "organization or team token" in response.text
