"""Finding I5: a site admin disables (and enables again) a person's account.

``users.disabled_at`` was enforced but nothing set it: an IdP user removed at the IdP kept their
``terraform login`` tokens and IdP-sourced memberships until someone revoked and removed them
by hand. Now ``POST /api/cairn/v1/admin/users/{user}/actions/disable`` (and ``cairn user
disable NAME``, tests/cli/test_user_disable.py) in one transaction revokes every token the
person holds, deletes their unredeemed login codes, removes their IdP-sourced team memberships
(manual ones are kept), and audits it; their next login is refused by every path with a clear
message. ``…/actions/enable`` lets them log in again; revoked tokens stay revoked.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.auth.login import parse_authorization, s256
from cairn.auth.model import ApiToken
from cairn.authz.model import TeamMembership
from cairn.errors import Unauthorized
from tests.api.login.test_code_expiry import REDIRECT, authorize, redeem, terraform_verifier
from tests.api.login.test_login_limits import with_idp
from tests.idp.fakes import FakeIdp
from tests.idp.fakes import parse_authorization as parse_idp_authorization
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    document,
    make_user,
    unique_name,
)

pytestmark = pytest.mark.anyio

USERS = "/api/cairn/v1/admin/users"
ISSUER = "https://idp.example.com"
DISABLED = "this user is disabled in cairn"


async def _team(admin: httpx.AsyncClient, org: str, idp_group: str | None = None) -> str:
    attrs: dict[str, Any] = {"name": unique_name("team")}
    if idp_group is not None:
        attrs["sso-team-id"] = idp_group
    body = {"data": {"type": "teams", "attributes": attrs}}
    response = await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    team_id: str = document(response, 201)["data"]["id"]
    return team_id


async def _token_for(admin: httpx.AsyncClient, user_id: str) -> str:
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "laptop"}}}
    response = await admin.post(
        f"/api/v2/users/{user_id}/authentication-tokens", json=body, headers=CT
    )
    value: str = document(response, 201)["data"]["attributes"]["token"]
    return value


def _idp_login(app: InProcessCairn, groups: list[str]) -> str:
    """The user behind IdP subject ``alice-sub`` after a login with ``groups`` (the step of
    the IdP callback that follows a verified ID token)."""
    return app.ctx.login.upsert_idp_user(
        issuer=ISSUER,
        subject="alice-sub",
        email="alice@example.com",
        preferred="alice",
        groups=groups,
        source="192.0.2.7",
    )


def _memberships(app: InProcessCairn, user_id: str) -> dict[str, str]:
    with app.ctx.db.unit_of_work() as s:
        rows = s.scalars(select(TeamMembership).where(TeamMembership.user_id == user_id))
        return {m.team_id: m.source for m in rows}


def _events(app: InProcessCairn, action: str) -> list[AuditEvent]:
    with app.ctx.db.unit_of_work() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


async def _whoami(app: InProcessCairn, token: str) -> httpx.Response:
    async with app.client(token) as client:
        return await client.get("/api/v2/account/details")


async def test_disabling_revokes_every_token_drops_idp_teams_and_refuses_logins(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    idp_team = await _team(admin, org, idp_group="platform")
    manual_team = await _team(admin, org)
    user_id = _idp_login(app, ["platform"])
    members = {"data": [{"type": "users", "id": user_id}]}
    added = await admin.post(
        f"/api/v2/teams/{manual_team}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text
    assert _memberships(app, user_id) == {idp_team: "idp", manual_team: "manual"}
    api_token = await _token_for(admin, user_id)
    async with app.client() as browser:  # terraform login through the token form
        verifier = terraform_verifier()
        login_token = document(
            await redeem(browser, await authorize(browser, api_token, verifier), verifier), 200
        )["access_token"]
        # a code issued just before the account is disabled is never redeemed afterwards
        late_verifier = terraform_verifier()
        late_code = await authorize(browser, api_token, late_verifier)
    for token in (api_token, login_token):
        assert (await _whoami(app, token)).status_code == 200

    response = await admin.post(f"{USERS}/alice/actions/disable")
    doc = document(response, 200)
    assert doc["data"]["id"] == user_id and doc["data"]["disabled"] is True
    assert doc["data"]["disabled-at"] is not None
    assert doc["meta"]["changed"] is True
    assert len(doc["meta"]["revoked-tokens"]) == 2
    assert doc["meta"]["removed-idp-teams"] == [idp_team]

    for token in (api_token, login_token):
        refused = await _whoami(app, token)
        assert refused.status_code == 401
        assert DISABLED in refused.json()["errors"][0]["detail"]
    assert _memberships(app, user_id) == {manual_team: "manual"}
    with app.ctx.db.unit_of_work() as s:
        tokens = s.scalars(select(ApiToken).where(ApiToken.user_id == user_id))
        assert all(t.revoked_at is not None for t in tokens)

    async with app.client() as browser:
        late = await redeem(browser, late_code, late_verifier)
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        form = {
            "client_id": "terraform-cli",
            "code_challenge": s256(terraform_verifier()),
            "code_challenge_method": "S256",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "state": "s",
            "token": api_token,
        }
        page = await browser.post("/oauth/authorization", data=form)
        assert page.status_code == 401 and "location" not in page.headers
        assert DISABLED in page.text
    with pytest.raises(Unauthorized, match=DISABLED):  # the IdP login refuses them too
        _idp_login(app, ["platform"])
    assert _memberships(app, user_id) == {manual_team: "manual"}

    (disable_event,) = _events(app, "user.disable")
    details = json.loads(disable_event.details)
    assert disable_event.subject == "alice"
    assert sorted(details["revoked_tokens"]) == sorted(doc["meta"]["revoked-tokens"])
    assert details["removed_idp_memberships"] == [idp_team]
    revoked = [e for e in _events(app, "token.revoke") if "user disabled" in e.details]
    assert len(revoked) == 2

    listed = document(await admin.get(USERS), 200)["data"]
    assert next(u for u in listed if u["id"] == user_id)["disabled-at"] is not None


async def test_enabling_lets_them_log_in_again_with_new_tokens_only(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    person = await make_user(admin)
    disabled = document(await admin.post(f"{USERS}/{person.id}/actions/disable"), 200)
    assert disabled["meta"]["revoked-tokens"]
    again = document(await admin.post(f"{USERS}/{person.username}/actions/disable"), 200)
    assert again["meta"] == {"changed": False, "revoked-tokens": [], "removed-idp-teams": []}
    assert len(_events(app, "user.disable")) == 1

    enabled = document(await admin.post(f"{USERS}/{person.username}/actions/enable"), 200)
    assert enabled["data"]["disabled"] is False and enabled["meta"]["changed"] is True
    assert len(_events(app, "user.enable")) == 1
    old = await _whoami(app, person.token)
    assert old.status_code == 401 and "revoked" in old.json()["errors"][0]["detail"]
    fresh = await _token_for(admin, person.id)
    assert (await _whoami(app, fresh)).status_code == 200
    assert (
        document(await admin.post(f"{USERS}/{person.id}/actions/enable"), 200)["meta"]["changed"]
        is False
    )


async def test_only_site_admins_disable_and_never_themselves_or_service_accounts(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    person, other = await make_user(admin), await make_user(admin)
    async with app.client(person.token) as client:
        refused = await client.post(f"{USERS}/{other.id}/actions/disable")
        assert refused.status_code == 403, refused.text
    assert (await _whoami(app, other.token)).status_code == 200

    me = document(await admin.get("/api/v2/account/details"), 200)["data"]["id"]
    own = await admin.post(f"{USERS}/{me}/actions/disable")
    assert own.status_code == 409 and "your own account" in own.text

    org = await create_organization(admin)
    body = {"data": {"type": "authentication-token"}}
    created = await admin.post(
        f"/api/v2/organizations/{org}/authentication-token", json=body, headers=CT
    )
    org_token = document(created, 201)["data"]["attributes"]["token"]
    service_id = document(await _whoami(app, org_token), 200)["data"]["id"]
    service = await admin.post(f"{USERS}/{service_id}/actions/disable")
    assert service.status_code == 409 and "revoke the organization or team token" in service.text

    missing = await admin.post(f"{USERS}/nobody-here/actions/disable")
    assert missing.status_code == 404
    assert not _events(app, "user.disable")


async def test_a_disabled_user_code_from_the_idp_path_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The IdP callback asks for a code after the user is known; a user disabled in between
    gets none (``issue_code``)."""
    user_id = _idp_login(app, [])
    document(await admin.post(f"{USERS}/{user_id}/actions/disable"), 200)
    req = parse_authorization(
        {
            "client_id": "terraform-cli",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "code_challenge": s256(terraform_verifier()),
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    with pytest.raises(Unauthorized, match=DISABLED):
        app.ctx.login.issue_code(user_id, req, source="", via="identity provider")


async def test_a_disabled_idp_user_is_refused_at_the_callback(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The whole IdP login over HTTP (the in-process FakeIdp): it works, then the person is
    disabled and the next login ends on a 401 page saying so, without a code."""
    fake = FakeIdp(clock=app.clock)
    idp_app, http = with_idp(app, fake)
    query = {
        "client_id": "terraform-cli",
        "code_challenge": s256(terraform_verifier()),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "s",
    }
    try:
        async with idp_app.client() as browser:

            async def login() -> httpx.Response:
                begin = await browser.get("/oauth/authorization", params=query)
                assert begin.status_code == 302, begin.text
                auth = parse_idp_authorization(begin.headers["location"])
                return await browser.get("/auth/oidc/callback", params=fake.callback(auth))

            first = await login()
            assert first.status_code == 302, first.text
            assert first.headers["location"].startswith(REDIRECT)
            users = document(await admin.get(USERS), 200)["data"]
            bob = next(u for u in users if u["idp-issuer"] == fake.issuer)
            document(await admin.post(f"{USERS}/{bob['id']}/actions/disable"), 200)
            refused = await login()
            assert refused.status_code == 401 and "location" not in refused.headers
            assert DISABLED in refused.text
    finally:
        http.close()
