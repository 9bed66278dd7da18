"""GitHub App installations (listed at create, synced, served at ``/github-app/…``, usable as
a workspace's ``github-app-installation-id``) and the OAuth browser flow of an OAuth-app
connection against a real authorization server (node ``oidc-provider`` as GitLab's
``/oauth/*``, ``tests/support/vcs/gitlab_op.py``): one-time link, state bound to the browser,
code exchanged, token stored sealed; replays, other browsers and denials refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cairn.vcs.github_app import Installation
from cairn.vcs.model import OAuthToken
from tests.api.vcs.conftest import forge_users, installations
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)
from tests.support.vcs.gitlab_op import GitLabOp, GitLabOpUnavailable, start_gitlab_op

pytestmark = pytest.mark.anyio


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_github_app_installations(app: InProcessCairn) -> None:
    listing = installations(app)
    listing.listed = [
        Installation(id=11, account="acme", account_type="Organization"),
        Installation(id=12, account="alice", account_type="User"),
    ]
    async with app.client(app.admin_token) as admin:
        org = await create_organization(admin)
        body = {
            "data": {
                "type": "oauth-clients",
                "attributes": {
                    "service-provider": "github",
                    "http-url": "https://github.example",
                    "api-url": "https://api.github.example",
                    "app-id": "4242",
                    "private-key": _pem(),
                    "webhook-secret": "hook-secret",
                },
            }
        }
        conn = document(
            await admin.post(f"/api/v2/organizations/{org}/oauth-clients", json=body, headers=CT),
            201,
        )["data"]
        listed = document(await admin.get("/api/v2/github-app/installations"), 200)["data"]
        assert {(i["attributes"]["installation-id"], i["attributes"]["name"]) for i in listed} == {
            (11, "acme"),
            (12, "alice"),
        }
        acme = next(i for i in listed if i["attributes"]["name"] == "acme")
        assert acme["id"].startswith("ghain-")
        assert acme["attributes"]["installation-type"] == "Organization"
        assert acme["attributes"]["oauth-client-id"] == conn["id"]
        shown = document(await admin.get(f"/api/v2/github-app/installation/{acme['id']}"), 200)
        assert shown["data"]["id"] == acme["id"]
        assert (await admin.get("/api/v2/github-app/installation/ghain-nope")).status_code == 404

        # A workspace on the installation: it names the installation, as HCP renders it (the
        # installation's token is what cairn uses), also after a change of other settings.
        vcs = {"identifier": "acme/infra", "github-app-installation-id": acme["id"]}
        ws = document(
            await admin.post(
                f"/api/v2/organizations/{org}/workspaces",
                json={"data": {"type": "workspaces", "attributes": {"name": "w", "vcs-repo": vcs}}},
                headers=CT,
            ),
            201,
        )["data"]
        repo = ws["attributes"]["vcs-repo"]
        assert repo["github-app-installation-id"] == acme["id"]
        assert repo["oauth-token-id"] is None
        branch = {"vcs-repo": {"branch": "release"}}
        kept = document(
            await admin.patch(
                f"/api/v2/workspaces/{ws['id']}",
                json={"data": {"type": "workspaces", "attributes": branch}},
                headers=CT,
            ),
            200,
        )["data"]["attributes"]["vcs-repo"]
        assert (kept["branch"], kept["github-app-installation-id"]) == ("release", acme["id"])
        # Named by its token instead, the repository renders the token.
        by_token = {"vcs-repo": {"oauth-token-id": acme["attributes"]["oauth-token-id"]}}
        switched = document(
            await admin.patch(
                f"/api/v2/workspaces/{ws['id']}",
                json={"data": {"type": "workspaces", "attributes": by_token}},
                headers=CT,
            ),
            200,
        )["data"]["attributes"]["vcs-repo"]
        assert switched["oauth-token-id"] == acme["attributes"]["oauth-token-id"]
        assert switched["github-app-installation-id"] is None
        assert repo["service-provider"] == "github"
        assert repo["repository-http-url"] == "https://github.example/acme/infra"
        # GitHub identifiers are owner/repo.
        bad = {"identifier": "acme/sub/infra", "github-app-installation-id": acme["id"]}
        r = await admin.patch(
            f"/api/v2/workspaces/{ws['id']}",
            json={"data": {"type": "workspaces", "attributes": {"vcs-repo": bad}}},
            headers=CT,
        )
        assert document(r, 422)["errors"][0]["source"]["pointer"].endswith("identifier")

        # The App is uninstalled from acme: a sync drops it and disconnects its workspace.
        listing.listed = listing.listed[1:]
        synced = document(
            await admin.post(f"/api/v2/oauth-clients/{conn['id']}/actions/sync-installations"),
            200,
        )["data"]
        assert [i["attributes"]["name"] for i in synced] == ["alice"]
        gone = document(await admin.get(f"/api/v2/workspaces/{ws['id']}"), 200)["data"]
        assert gone["attributes"]["vcs-repo"] is None
        assert listing.asked == ["4242", "4242"]

        # Installations are shown only to those who manage VCS settings of the organization.
        outsider = await make_user(admin, "outsider")
    async with app.client(outsider.token) as client:
        assert document(await client.get("/api/v2/github-app/installations"), 200)["data"] == []
        alice = synced[0]["id"]
        assert (await client.get(f"/api/v2/github-app/installation/{alice}")).status_code == 404


@pytest.fixture(scope="module")
def gitlab_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabOp]:
    try:
        op = start_gitlab_op(Path(tmp_path_factory.mktemp("gitlab-op")))
    except GitLabOpUnavailable as err:
        pytest.skip(str(err))
    try:
        yield op
    finally:
        op.stop()


async def _oauth_connection(
    app: InProcessCairn, admin: httpx.AsyncClient, op: GitLabOp, org: str
) -> dict[str, Any]:
    body = {
        "data": {
            "type": "oauth-clients",
            "attributes": {
                "service-provider": "gitlab_community_edition",
                "http-url": op.url,
                "api-url": op.url + "/api/v4",
                "key": "cairn-app",
                "secret": "placeholder",
            },
        }
    }
    conn: dict[str, Any] = document(
        await admin.post(f"/api/v2/organizations/{org}/oauth-clients", json=body, headers=CT), 201
    )["data"]
    # Register the application at the forge with cairn's callback (client IDs are per test).
    registered = op.add_client(redirect_uris=(conn["attributes"]["callback-url"],))
    patch = {
        "data": {"attributes": {"key": registered.client_id, "secret": registered.client_secret}}
    }
    document(await admin.patch(f"/api/v2/oauth-clients/{conn['id']}", json=patch, headers=CT), 200)
    return conn


async def _link(client: httpx.AsyncClient, conn_id: str, **attrs: Any) -> str:
    body = {"data": {"attributes": attrs}} if attrs else None
    r = await client.post(f"/api/cairn/v1/oauth-clients/{conn_id}/connect", json=body)
    url: str = document(r, 201)["data"]["attributes"]["url"]
    return url


async def test_oauth_browser_flow(app: InProcessCairn, gitlab_op: GitLabOp) -> None:
    forge_users(app)  # whoami on the new token: the stand-in does not know it (user left blank)
    async with app.client(app.admin_token) as admin:
        org = await create_organization(admin)
        conn = await _oauth_connection(app, admin, gitlab_op, org)
        person = await make_user(admin, "connector")
        from tests.api.teams.helpers import add_member, team

        vcs_team = await team(admin, org, "vcs", {"manage-vcs-settings": True})
        await add_member(admin, vcs_team["id"], person.id)

    async with app.client(person.token) as me:
        url = await _link(me, conn["id"])
    path = urlsplit(url).path
    async with app.client() as browser:
        opened = await browser.get(path)
        assert opened.status_code == 302, opened.text
        authorize = opened.headers["location"]
        assert authorize.startswith(gitlab_op.url + "/oauth/authorize?")
        cookie = opened.cookies.get("cairn_vcs_connect")
        assert cookie
        # The link is single-use.
        again = await browser.get(path)
        assert again.status_code == 400 and "already" in again.text
        # The user agrees at the forge, which redirects to cairn's callback with code and state.
        answer = gitlab_op.authorize(authorize)
        assert set(answer) >= {"code", "state"}
        callback = f"/api/cairn/v1/oauth-clients/{conn['id']}/callback"
        # Without the browser's cookie: refused, state not used up.
        async with app.client() as other:
            refused = await other.get(callback, params=answer)
        assert refused.status_code == 400 and "another browser" in refused.text
        done = await browser.get(callback, params=answer)
        assert done.status_code == 200, done.text
        assert "Connected" in done.text
        replay = await browser.get(callback, params=answer)
        assert replay.status_code == 400 and "already" in replay.text
        denied = await browser.get(callback, params={"error": "access_denied", "state": "x"})
        assert denied.status_code == 400 and "did not authorise" in denied.text
        forged = await browser.get(path.replace("/connect/", "/connect/x"))
        assert forged.status_code == 401

    async with app.client(app.admin_token) as admin:
        toks = document(await admin.get(f"/api/v2/oauth-clients/{conn['id']}/oauth-tokens"), 200)
        [tok] = toks["data"]
        assert tok["attributes"]["status"] == "ok"
        assert tok["attributes"]["expires-at"] is not None
    with app.ctx.db.unit_of_work() as s:
        row = s.get(OAuthToken, tok["id"])
        assert row is not None and row.refresh_token_sealed is not None
        access = app.ctx.keyring.open(
            row.access_token_sealed, aad=f"oauth_tokens:{row.id}:access:0"
        )
    assert gitlab_op.check(access.decode())["active"] is True
    assert gitlab_op.stats()["by_grant_type"].get("authorization_code", 0) >= 1

    # Re-authorisation of that token: a new grant, generation + 1.
    async with app.client(person.token) as me:
        url = await _link(me, conn["id"], **{"oauth-token-id": tok["id"]})
    async with app.client() as browser:
        opened = await browser.get(urlsplit(url).path)
        answer = gitlab_op.authorize(opened.headers["location"])
        done = await browser.get(
            f"/api/cairn/v1/oauth-clients/{conn['id']}/callback",
            params=answer,
        )
        assert done.status_code == 200 and "authorised again" in done.text, done.text
    with app.ctx.db.unit_of_work() as s:
        row = s.get(OAuthToken, tok["id"])
        assert row is not None and row.generation == 1


async def test_connect_refusals(app: InProcessCairn) -> None:
    forge = forge_users(app)
    forge.known["glpat-x"] = ("alice", None)
    async with app.client(app.admin_token) as admin:
        org = await create_organization(admin)
        body = {
            "data": {
                "type": "oauth-clients",
                "attributes": {
                    "service-provider": "gitlab_hosted",
                    "http-url": "https://gitlab.example",
                    "api-url": "https://gitlab.example/api/v4",
                    "oauth-token-string": "glpat-x",
                },
            }
        }
        pat = document(
            await admin.post(f"/api/v2/organizations/{org}/oauth-clients", json=body, headers=CT),
            201,
        )["data"]
        # A token connection is not authorised in a browser.
        r = await admin.post(f"/api/cairn/v1/oauth-clients/{pat['id']}/connect")
        assert document(r, 422)["errors"][0]["detail"].startswith("VCS connection")
        member = await make_user(admin, "member")
        ws = await create_workspace(admin, org)
        assert ws.id
    async with app.client(member.token) as client:
        r = await client.post(f"/api/cairn/v1/oauth-clients/{pat['id']}/connect")
        assert r.status_code == 404
    async with app.client() as anonymous:
        r = await anonymous.post(f"/api/cairn/v1/oauth-clients/{pat['id']}/connect")
        assert r.status_code == 401
        # A callback without state: 400 page.
        r = await anonymous.get(f"/api/cairn/v1/oauth-clients/{pat['id']}/callback")
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
        r = await anonymous.get(
            f"/api/cairn/v1/oauth-clients/{pat['id']}/callback",
            params={"code": "c", "state": "unknown"},
        )
        assert r.status_code == 400 and "unknown" in r.text
    assert dict(parse_qsl("a=b")) == {"a": "b"}
