"""API tokens through the TFE API, on both metadata backends: user tokens over httpx
(pytfe has no calls for them), organization and team tokens through pytfe.

A token is shown once (the create answer), listed and read without its value, refused as
soon as it is revoked or expired, and stored only as a keyed hash; every create and revoke is
in the audit log, which never holds a token value either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pytfe import TFEClient
from pytfe.errors import AuthError, NotFound
from pytfe.models import OrganizationTokenCreateOptions, TeamTokenCreateOptions

from tests.support import api as tfe_api
from tests.support.concurrency import simultaneously
from tests.support.server import CairnServer
from tests.tokens.support import (
    CT,
    authenticates,
    create_user_token,
    dump_database,
    grant_team,
    list_user_tokens,
    make_team,
    make_user,
    me,
    token_body,
    token_hash,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def values() -> list[str]:
    """Every token value a test saw; checked against the audit log at the end of the test."""
    return []


@pytest.fixture(autouse=True)
def no_token_in_audit_log(api: httpx.Client, values: list[str]) -> Iterator[None]:
    yield
    if values:
        text = _all_audit_events(api)
        for value in values:
            assert value not in text


def _all_audit_events(api: httpx.Client) -> str:
    chunks: list[str] = []
    page = 1
    while True:
        response = api.get(
            "/api/cairn/v1/audit-events", params={"page[number]": page, "page[size]": 100}
        )
        doc = tfe_api.document(response, 200)
        chunks.append(response.text)
        if not doc["meta"]["pagination"]["next-page"]:
            return "\n".join(chunks)
        page += 1


def _audit(api: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    params = {f"filter[{k}]": v for k, v in filters.items()}
    doc = tfe_api.document(api.get("/api/cairn/v1/audit-events", params=params), 200)
    events: list[dict[str, Any]] = doc["data"]
    return events


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- user tokens -----------------------------------------------------------------------------


def test_a_user_token_is_shown_once_and_listed_without_its_value(
    server: CairnServer, api: httpx.Client, values: list[str]
) -> None:
    user_id = me(api)["id"]
    token_id, value = create_user_token(api, user_id, "laptop")
    values.append(value)
    assert token_id.startswith("at-")

    listed = {t["id"]: t for t in list_user_tokens(api, user_id)}
    assert token_id in listed
    attrs = listed[token_id]["attributes"]
    assert "token" not in attrs
    assert attrs["description"] == "laptop"
    assert attrs["last-used-at"] is None
    assert attrs["expired-at"] is None
    assert attrs["created-at"].endswith("Z")

    shown = tfe_api.document(api.get(f"/api/v2/authentication-tokens/{token_id}"), 200)["data"]
    assert shown["type"] == "authentication-tokens"
    assert "token" not in shown["attributes"]
    assert value not in api.get(f"/api/v2/users/{user_id}/authentication-tokens").text

    # the token works, and its use is recorded
    with server.client(value) as client:
        assert me(client)["id"] == user_id
    shown = tfe_api.document(api.get(f"/api/v2/authentication-tokens/{token_id}"), 200)["data"]
    used = datetime.fromisoformat(shown["attributes"]["last-used-at"])
    assert abs(datetime.now(UTC) - used) < timedelta(minutes=1)


def test_a_revoked_token_is_refused_at_once(
    server: CairnServer, api: httpx.Client, values: list[str]
) -> None:
    user_id = me(api)["id"]
    keep_id, keep = create_user_token(api, user_id, "keep")
    gone_id, gone = create_user_token(api, user_id, "to revoke")
    values += [keep, gone]
    assert authenticates(server, gone) == 200

    tfe_api.expect(api.delete(f"/api/v2/authentication-tokens/{gone_id}", headers=CT), 204)

    assert authenticates(server, gone) == 401
    assert authenticates(server, keep) == 200  # one by one: the other token still works
    with server.client(gone) as client:
        detail = client.get("/api/v2/account/details").json()["errors"][0]["detail"]
    assert "revoked" in detail
    ids = {t["id"] for t in list_user_tokens(api, user_id)}
    assert gone_id not in ids and keep_id in ids
    tfe_api.expect(api.get(f"/api/v2/authentication-tokens/{gone_id}"), 404)
    tfe_api.expect(api.delete(f"/api/v2/authentication-tokens/{gone_id}", headers=CT), 404)

    created = _audit(api, action="token.create", subject=gone_id)
    revoked = _audit(api, action="token.revoke", subject=gone_id)
    assert len(created) == 1 and len(revoked) == 1
    event = revoked[0]["attributes"]
    assert event["actor-name"] == "admin"
    assert event["subject"] == f"{gone_id} (to revoke)"
    assert event["details"]["token_id"] == gone_id
    assert event["outcome"] == "success"
    assert event["source-address"] == "127.0.0.1"


def test_an_expired_token_is_refused(
    server: CairnServer, api: httpx.Client, values: list[str]
) -> None:
    user_id = me(api)["id"]
    expires = datetime.now(UTC) + timedelta(seconds=3)
    token_id, value = create_user_token(api, user_id, "short", _iso(expires))
    values.append(value)
    listed = {t["id"]: t for t in list_user_tokens(api, user_id)}
    assert listed[token_id]["attributes"]["expired-at"] == _iso(expires)
    assert authenticates(server, value) == 200

    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    with server.client(value) as client:
        response = client.get("/api/v2/account/details")
    assert response.status_code == 401
    assert "expired" in response.json()["errors"][0]["detail"]
    # still listed (with its expiry) until revoked
    assert token_id in {t["id"] for t in list_user_tokens(api, user_id)}


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"expired-at": "2000-01-01T00:00:00Z"}, "/data/attributes/expired-at"),
        ({"expired-at": "next tuesday"}, "/data/attributes/expired-at"),
        ({"expired-at": 12}, "/data/attributes/expired-at"),
        ({"description": 7}, "/data/attributes/description"),
        ({"description": "x" * 256}, "/data/attributes/description"),
    ],
)
def test_bad_token_requests_are_refused_and_change_nothing(
    api: httpx.Client, attributes: dict[str, Any], pointer: str
) -> None:
    user_id = me(api)["id"]
    before = list_user_tokens(api, user_id)
    body = {"data": {"type": "authentication-tokens", "attributes": attributes}}
    response = api.post(f"/api/v2/users/{user_id}/authentication-tokens", json=body, headers=CT)
    error = tfe_api.document(response, 422)["errors"][0]
    assert error["source"]["pointer"] == pointer
    wrong_type = api.post(
        f"/api/v2/users/{user_id}/authentication-tokens",
        json={"data": {"type": "workspaces", "attributes": {}}},
        headers=CT,
    )
    tfe_api.expect(wrong_type, 422)
    assert list_user_tokens(api, user_id) == before


def test_people_manage_only_their_own_tokens(
    server: CairnServer, api: httpx.Client, values: list[str]
) -> None:
    admin_id = me(api)["id"]
    admin_token_id, admin_value = create_user_token(api, admin_id, "the admin's")
    bob_id, bob_value = make_user(api, "bob")
    values += [admin_value, bob_value]

    with server.client(bob_value) as bob:
        assert me(bob)["attributes"]["is-service-account"] is False
        own_id, own_value = create_user_token(bob, bob_id, "bob's second")
        values.append(own_value)
        assert {t["id"] for t in list_user_tokens(bob, bob_id)} >= {own_id}
        # another person's tokens: invisible, and not writable
        tfe_api.expect(bob.get(f"/api/v2/users/{admin_id}/authentication-tokens"), 404)
        tfe_api.expect(bob.get(f"/api/v2/authentication-tokens/{admin_token_id}"), 404)
        tfe_api.expect(
            bob.delete(f"/api/v2/authentication-tokens/{admin_token_id}", headers=CT), 404
        )
        tfe_api.expect(
            bob.post(
                f"/api/v2/users/{admin_id}/authentication-tokens",
                json=token_body("sneaky"),
                headers=CT,
            ),
            403,
        )
        tfe_api.expect(bob.get("/api/cairn/v1/audit-events"), 404)
        # bob revokes his own
        tfe_api.expect(bob.delete(f"/api/v2/authentication-tokens/{own_id}", headers=CT), 204)
    assert authenticates(server, admin_value) == 200
    assert authenticates(server, own_value) == 401
    # a site admin sees and revokes anyone's tokens
    bobs = list_user_tokens(api, bob_id)
    assert len(bobs) == 1
    tfe_api.expect(api.delete(f"/api/v2/authentication-tokens/{bobs[0]['id']}", headers=CT), 204)
    assert authenticates(server, bob_value) == 401
    tfe_api.expect(api.get("/api/v2/users/user-0000000000000000/authentication-tokens"), 404)


# ---- organization tokens (pytfe) -------------------------------------------------------------


def test_organization_token_through_pytfe(
    server: CairnServer, api: httpx.Client, tfe: TFEClient, org: str, values: list[str]
) -> None:
    with pytest.raises(NotFound):
        tfe.organization_tokens.read(org)

    first = tfe.organization_tokens.create(org)
    assert first.token and first.token.startswith("cairn_")
    values.append(first.token)
    read = tfe.organization_tokens.read(org)
    assert read.id == first.id
    assert not read.token  # shown only once

    # it acts as the organization's service account
    with server.client(first.token) as client:
        account = me(client)
        assert account["attributes"]["username"] == f"api-org-{org}"
        assert account["attributes"]["is-service-account"] is True
        tfe_api.expect(client.get(f"/api/v2/organizations/{org}"), 200)
        # service accounts cannot mint user tokens that would survive the org token
        tfe_api.expect(
            client.post(
                f"/api/v2/users/{account['id']}/authentication-tokens",
                json=token_body("escape"),
                headers=CT,
            ),
            403,
        )
        tfe_api.expect(client.get("/api/cairn/v1/audit-events"), 404)

    # creating again replaces it; an expiry is kept
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    second = tfe.organization_tokens.create_with_options(
        org, OrganizationTokenCreateOptions.model_validate({"expired_at": expires})
    )
    assert second.token
    values.append(second.token)
    assert second.id != first.id
    assert second.expired_at == expires
    assert authenticates(server, first.token) == 401
    assert authenticates(server, second.token) == 200
    assert tfe.organization_tokens.read(org).id == second.id
    replaced = _audit(api, action="token.revoke", subject=first.id)
    assert replaced[0]["attributes"]["details"]["reason"] == "replaced"

    as_org = tfe_api.pytfe_client(server, second.token)
    try:
        assert as_org.organizations.read(org).name == org
        tfe.organization_tokens.delete(org)
        with pytest.raises(AuthError):
            as_org.organizations.read(org)
    finally:
        as_org.close()
    assert authenticates(server, second.token) == 401
    with pytest.raises(NotFound):
        tfe.organization_tokens.read(org)
    with pytest.raises(NotFound):
        tfe.organization_tokens.delete(org)
    assert len(_audit(api, action="token.", subject=second.id)) == 2  # create + revoke


def test_organization_tokens_need_org_manage(
    server: CairnServer, api: httpx.Client, org: str, values: list[str]
) -> None:
    _, bob_value = make_user(api, "nobody")
    values.append(bob_value)
    path = f"/api/v2/organizations/{org}/authentication-token"
    with server.client(bob_value) as bob:
        tfe_api.expect(bob.post(path, headers=CT), 404)  # the organization is invisible to him
        tfe_api.expect(bob.get(path), 404)
        tfe_api.expect(bob.delete(path, headers=CT), 404)
    tfe_api.expect(api.get(path), 404)  # and nothing was created
    tfe_api.expect(api.post(path, params={"token": "audit-trails"}, headers=CT), 400)


def test_simultaneous_creates_leave_one_organization_token(
    server: CairnServer, admin_token: str, org: str, values: list[str]
) -> None:
    """Creating replaces: however many race, exactly one organization token stays valid."""

    def create() -> str:
        with server.client(admin_token) as client:
            response = client.post(f"/api/v2/organizations/{org}/authentication-token", headers=CT)
            value: str = tfe_api.document(response, 201)["data"]["attributes"]["token"]
            return value

    made = simultaneously([create] * 6)
    values += made
    assert len(set(made)) == 6
    valid = [v for v in made if authenticates(server, v) == 200]
    assert len(valid) == 1
    with server.client(valid[0]) as client:
        assert me(client)["attributes"]["username"] == f"api-org-{org}"


# ---- team tokens (pytfe) ---------------------------------------------------------------------


def test_team_token_through_pytfe(
    server: CairnServer, api: httpx.Client, tfe: TFEClient, org: str, values: list[str]
) -> None:
    team_id = make_team(api, org)
    readable = tfe_api.create_workspace(api, org, tfe_api.unique_name("shared"))
    hidden = tfe_api.create_workspace(api, org, tfe_api.unique_name("private"))
    grant_team(api, team_id, readable, "read")

    token = tfe.team_tokens.create(team_id)
    assert token.token and token.token.startswith("cairn_")
    values.append(token.token)
    assert not tfe.team_tokens.read(team_id).token
    assert tfe.team_tokens.read(team_id).id == token.id
    by_id = tfe.team_tokens.read_by_id(token.id)
    assert by_id.team is not None and by_id.team.id == team_id

    # it has exactly the team's rights
    with server.client(token.token) as client:
        assert me(client)["attributes"]["username"] == f"api-team-{team_id}"
        tfe_api.expect(client.get(f"/api/v2/workspaces/{readable}"), 200)
        tfe_api.expect(client.get(f"/api/v2/workspaces/{hidden}"), 404)

    # described tokens come in addition to the team token
    described = tfe.team_tokens.create_with_options(
        team_id, TeamTokenCreateOptions(description="ci deploy")
    )
    assert described.token
    values.append(described.token)
    assert described.description == "ci deploy"
    listed = {t.id: t for t in tfe.team_tokens.list(org)}
    assert set(listed) == {token.id, described.id}
    assert all(not t.token for t in listed.values())

    # the legacy create replaces only the descriptionless token
    renewed = tfe.team_tokens.create(team_id)
    assert renewed.token
    values.append(renewed.token)
    assert authenticates(server, token.token) == 401
    assert authenticates(server, described.token) == 200

    tfe.team_tokens.delete_by_id(described.id)
    assert authenticates(server, described.token) == 401
    tfe.team_tokens.delete(team_id)
    assert authenticates(server, renewed.token) == 401
    with pytest.raises(NotFound):
        tfe.team_tokens.read(team_id)
    assert list(tfe.team_tokens.list(org)) == []


def test_team_tokens_need_org_manage(
    server: CairnServer, api: httpx.Client, org: str, values: list[str]
) -> None:
    team_id = make_team(api, org)
    team_token = tfe_api.document(
        api.post(f"/api/v2/teams/{team_id}/authentication-token", headers=CT), 201
    )["data"]["attributes"]["token"]
    _, bob_value = make_user(api, "outsider")
    values += [team_token, bob_value]
    with server.client(bob_value) as bob:
        tfe_api.expect(bob.post(f"/api/v2/teams/{team_id}/authentication-token", headers=CT), 404)
        tfe_api.expect(bob.get(f"/api/v2/teams/{team_id}/authentication-token"), 404)
    # a team token without organization rights cannot renew itself or mint others
    with server.client(team_token) as client:
        tfe_api.expect(
            client.post(f"/api/v2/teams/{team_id}/authentication-token", headers=CT), 403
        )
        tfe_api.expect(client.post(f"/api/v2/organizations/{org}/authentication-token"), 403)
    assert authenticates(server, team_token) == 200


# ---- what is stored --------------------------------------------------------------------------


def test_the_database_holds_hashes_never_token_values(
    server: CairnServer,
    api: httpx.Client,
    tfe: TFEClient,
    org: str,
    admin_token: str,
    values: list[str],
) -> None:
    user_id = me(api)["id"]
    _, user_value = create_user_token(api, user_id, "dump check")
    org_value = tfe.organization_tokens.create(org).token
    team_value = tfe.team_tokens.create(make_team(api, org)).token
    assert org_value and team_value
    values += [user_value, org_value, team_value]

    dump = dump_database(server)
    assert "api_tokens" in dump
    for value in [*values, admin_token]:
        assert value not in dump
        assert value.removeprefix("cairn_") not in dump
        assert token_hash(server, value) in dump  # what is kept instead
