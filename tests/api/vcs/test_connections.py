"""VCS connections (``oauth-clients``) and their tokens through the TFE API, in-process on
SQLite and PostgreSQL: every kind created, listed, shown, changed and deleted; no secret in any
answer or log line; who may (manage-vcs-settings); bad input refused with nothing stored;
project-scoped connections; and the workspace ``vcs-repo`` settings they feed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from cairn.vcs.github_app import Installation
from cairn.vcs.model import OAuthClient, OAuthToken
from tests.api.teams.helpers import add_member, team
from tests.api.vcs.conftest import forge_users, installations
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

PAT = "glpat-secret-value-0123456789"
GH_PAT = "ghp_secretvalue0123456789abcdef"
OAUTH_SECRET = "gloas-client-secret-abcdef"
HOOK_SECRET = "app-webhook-secret-xyz"
EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


PEM = _pem()
SECRETS = (PAT, GH_PAT, OAUTH_SECRET, HOOK_SECRET, PEM.splitlines()[1])


def _client_body(attrs: dict[str, Any], rels: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "oauth-clients", "attributes": attrs}
    if rels is not None:
        data["relationships"] = rels
    return {"data": data}


def gitlab_pat(**extra: Any) -> dict[str, Any]:
    return _client_body(
        {
            "service-provider": "gitlab_hosted",
            "name": "gitlab",
            "http-url": "https://gitlab.example",
            "api-url": "https://gitlab.example/api/v4",
            "oauth-token-string": PAT,
            **extra,
        }
    )


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def _count(app: InProcessCairn, model: Any) -> int:
    with app.ctx.db.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


async def test_every_kind_of_connection_lifecycle(
    any_app: InProcessCairn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forge = forge_users(any_app)
    forge.known[PAT] = ("alice", EXPIRES)
    forge.known[GH_PAT] = ("octocat", None)
    listing = installations(any_app)
    listing.listed = [Installation(id=77, account="acme", account_type="Organization")]
    answers: list[str] = []
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        base = f"/api/v2/organizations/{org}/oauth-clients"

        async def create(body: dict[str, Any]) -> dict[str, Any]:
            r = await admin.post(base, json=body, headers=CT)
            answers.append(r.text)
            data: dict[str, Any] = document(r, 201)["data"]
            return data

        pat = await create(gitlab_pat())
        a = pat["attributes"]
        assert a["service-provider"] == "gitlab_hosted"
        assert a["connection-type"] == "access-token"
        assert a["secret"] is None and "oauth-token-string" not in a
        assert a["api-url"] == "https://gitlab.example/api/v4"
        assert a["organization-scoped"] is True
        assert a["webhook-url"] == f"{any_app.url}/api/cairn/v1/vcs-hooks/{pat['id']}"
        assert a["callback-url"] is None
        assert forge.asked == [("gitlab_token", "https://gitlab.example/api/v4")]
        [tok_ref] = pat["relationships"]["oauth-tokens"]["data"]

        oauth = await create(
            _client_body(
                {
                    "service-provider": "gitlab_community_edition",
                    "http-url": "https://gitlab.corp.example/",
                    "api-url": "https://gitlab.corp.example/api/v4",
                    "key": "app-id-123",
                    "secret": OAUTH_SECRET,
                }
            )
        )
        oa = oauth["attributes"]
        assert oa["connection-type"] == "oauth-app" and oa["key"] == "app-id-123"
        assert oa["http-url"] == "https://gitlab.corp.example"  # trailing / dropped
        assert oa["callback-url"].endswith(f"/api/cairn/v1/oauth-clients/{oauth['id']}/callback")
        assert oauth["relationships"]["oauth-tokens"]["data"] == []

        app_conn = await create(
            _client_body(
                {
                    "service-provider": "github",
                    "http-url": "https://github.example",
                    "api-url": "https://api.github.example",
                    "app-id": "12345",
                    "private-key": PEM,
                    "webhook-secret": HOOK_SECRET,
                    "allow-fork-plans": True,
                }
            )
        )
        assert app_conn["attributes"]["connection-type"] == "github-app"
        assert app_conn["attributes"]["app-id"] == "12345"
        assert app_conn["attributes"]["allow-fork-plans"] is True
        assert listing.asked == ["12345"]
        assert len(app_conn["relationships"]["oauth-tokens"]["data"]) == 1  # its installation

        gh_oauth = await create(
            _client_body(
                {
                    "service-provider": "github_enterprise",
                    "http-url": "https://ghe.example",
                    "api-url": "https://ghe.example/api/v3",
                    "key": "Iv1.abc",
                    "secret": OAUTH_SECRET,
                }
            )
        )
        gh_pat = await create(
            _client_body(
                {
                    "service-provider": "github",
                    "http-url": "https://github.example",
                    "api-url": "https://api.github.example",
                    "oauth-token-string": GH_PAT,
                }
            )
        )
        with any_app.ctx.db.unit_of_work() as s:
            kinds = {c.id: c.kind for c in s.scalars(select(OAuthClient))}
        assert kinds == {
            pat["id"]: "gitlab_token",
            oauth["id"]: "gitlab_oauth",
            app_conn["id"]: "github_app",
            gh_oauth["id"]: "github_oauth",
            gh_pat["id"]: "github_token",
        }

        # List and show.
        listed = document(await admin.get(base), 200)
        answers.append(str(listed))
        assert {c["id"] for c in listed["data"]} == set(kinds)
        assert listed["meta"]["pagination"]["total-count"] == 5
        shown = await admin.get(f"/api/v2/oauth-clients/{oauth['id']}")
        answers.append(shown.text)
        assert document(shown, 200)["data"]["attributes"]["key"] == "app-id-123"

        # Tokens: under the client and under the organization (pytfe's path).
        toks = document(await admin.get(f"/api/v2/oauth-clients/{pat['id']}/oauth-tokens"), 200)
        [tok] = toks["data"]
        assert tok["id"] == tok_ref["id"]
        ta = tok["attributes"]
        assert ta["service-provider-user"] == "alice"
        assert ta["has-ssh-key"] is False
        assert ta["status"] == "ok" and ta["status-reason"] is None
        assert ta["expires-at"] == "2027-01-01T00:00:00.000Z"
        assert tok["relationships"]["oauth-client"]["data"]["id"] == pat["id"]
        org_toks = document(await admin.get(f"/api/v2/organizations/{org}/oauth-tokens"), 200)
        assert sorted(t["id"] for t in org_toks["data"]) == sorted(
            [
                tok["id"],
                gh_pat["relationships"]["oauth-tokens"]["data"][0]["id"],
                app_conn["relationships"]["oauth-tokens"]["data"][0]["id"],
            ]
        )
        answers.append(str(org_toks))

        # The token is sealed at rest, under its row's aad.
        with any_app.ctx.db.unit_of_work() as s:
            row = s.get(OAuthToken, tok["id"])
            assert row is not None
            assert PAT.encode() not in row.access_token_sealed
            assert (
                any_app.ctx.keyring.open(
                    row.access_token_sealed, aad=f"oauth_tokens:{row.id}:access:0"
                )
                == PAT.encode()
            )

        # PATCH a token's SSH key (write-only), then remove it.
        one_tok = f"/api/v2/oauth-tokens/{tok['id']}"
        body: dict[str, Any] = {
            "data": {"type": "oauth-tokens", "attributes": {"ssh-key": "-----BEGIN KEY-"}}
        }
        patched = document(await admin.patch(one_tok, json=body, headers=CT), 200)["data"]
        assert patched["attributes"]["has-ssh-key"] is True
        assert "ssh-key" not in patched["attributes"]
        body["data"]["attributes"]["ssh-key"] = None
        patched = document(await admin.patch(one_tok, json=body, headers=CT), 200)["data"]
        assert patched["attributes"]["has-ssh-key"] is False

        # PATCH a client: name, scope; a new secret is taken, never shown.
        one = f"/api/v2/oauth-clients/{oauth['id']}"
        changed = await admin.patch(
            one,
            json=_client_body({"name": "renamed", "secret": OAUTH_SECRET + "2"}),
            headers=CT,
        )
        answers.append(changed.text)
        assert document(changed, 200)["data"]["attributes"]["name"] == "renamed"
        refused = await admin.patch(
            one, json=_client_body({"service-provider": "github"}), headers=CT
        )
        assert document(refused, 422)["errors"][0]["source"]["pointer"].endswith("service-provider")

        # Delete a token, then clients: 204, then 404.
        assert (await admin.delete(one_tok)).status_code == 204
        assert (await admin.get(one_tok)).status_code == 404
        for c in (pat, oauth, app_conn, gh_oauth, gh_pat):
            assert (await admin.delete(f"/api/v2/oauth-clients/{c['id']}")).status_code == 204
            assert (await admin.get(f"/api/v2/oauth-clients/{c['id']}")).status_code == 404
        assert document(await admin.get(base), 200)["data"] == []
        assert _count(any_app, OAuthToken) == 0
    _no_secret(*answers, caplog.text)


async def test_bad_input_is_refused_and_nothing_is_stored(any_app: InProcessCairn) -> None:
    forge = forge_users(any_app)
    forge.known[PAT] = ("alice", None)
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        base = f"/api/v2/organizations/{org}/oauth-clients"
        bad: list[tuple[dict[str, Any], str]] = [
            (gitlab_pat(**{"service-provider": None}), "service-provider"),
            (gitlab_pat(**{"service-provider": "bitbucket_server"}), "service-provider"),
            (gitlab_pat(**{"http-url": "ftp://gitlab.example"}), "http-url"),
            (gitlab_pat(**{"api-url": "https://user:pw@gitlab.example/api/v4"}), "api-url"),
            (gitlab_pat(**{"api-url": None}), "api-url"),
            (gitlab_pat(key="k", secret="s"), "/data/attributes"),
            (gitlab_pat(**{"oauth-token-string": None}), "/data/attributes"),
            (gitlab_pat(**{"oauth-token-string": None, "key": "k"}), "secret"),
            (
                gitlab_pat(**{"oauth-token-string": None, "app-id": "1", "private-key": PEM}),
                "/data/attributes",
            ),
            (
                gitlab_pat(
                    **{
                        "service-provider": "github",
                        "oauth-token-string": None,
                        "app-id": "1",
                        "private-key": "not a key",
                        "webhook-secret": "x",
                    }
                ),
                "private-key",
            ),
            (
                gitlab_pat(
                    **{
                        "service-provider": "github",
                        "oauth-token-string": None,
                        "app-id": "abc",
                        "private-key": PEM,
                    }
                ),
                "app-id",
            ),
            (
                gitlab_pat(
                    **{
                        "service-provider": "github",
                        "oauth-token-string": None,
                        "app-id": "1",
                        "private-key": PEM,
                    }
                ),
                "webhook-secret",
            ),
            (gitlab_pat(**{"oauth-token-string": "glpat-unknown"}), "oauth-token-string"),
            (gitlab_pat(name=7), "name"),
            (
                gitlab_pat(rels={"projects": {"data": [{"type": "projects", "id": "prj-nope"}]}}),
                "/data/relationships/projects/data/0",
            ),
        ]
        for body, pointer in bad:
            if "rels" in body["data"]["attributes"]:
                body["data"]["relationships"] = body["data"]["attributes"].pop("rels")
            r = await admin.post(base, json=body, headers=CT)
            err = document(r, 422)["errors"][0]
            assert err["source"]["pointer"].endswith(pointer), (pointer, err)
            _no_secret(r.text)
        # Not a document at all; too large.
        assert (await admin.post(base, content=b"[]", headers=CT)).status_code == 400
        huge = gitlab_pat(name="x" * 200_000)
        assert (await admin.post(base, json=huge, headers=CT)).status_code == 413
        assert _count(any_app, OAuthClient) == 0
        assert _count(any_app, OAuthToken) == 0
        # An unknown organization: 404.
        r = await admin.post("/api/v2/organizations/nope/oauth-clients", json=gitlab_pat())
        assert r.status_code == 404


async def test_who_may_manage_vcs_connections(any_app: InProcessCairn) -> None:
    forge = forge_users(any_app)
    forge.known[PAT] = ("alice", None)
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        base = f"/api/v2/organizations/{org}/oauth-clients"
        conn = document(await admin.post(base, json=gitlab_pat(), headers=CT), 201)["data"]
        tok_id = conn["relationships"]["oauth-tokens"]["data"][0]["id"]
        member = await make_user(admin, "member")
        plain = await team(admin, org, "plain", {"manage-workspaces": True})
        await add_member(admin, plain["id"], member.id)
        manager = await make_user(admin, "manager")
        managers = await team(admin, org, "vcs", {"manage-vcs-settings": True})
        await add_member(admin, managers["id"], manager.id)
        outsider = await make_user(admin, "outsider")
    one = f"/api/v2/oauth-clients/{conn['id']}"
    tok = f"/api/v2/oauth-tokens/{tok_id}"
    async with any_app.client(member.token) as client:
        # A member without manage-vcs-settings: 403 everywhere, reads included (HCP).
        for r in (
            await client.get(base),
            await client.get(one),
            await client.post(base, json=gitlab_pat(), headers=CT),
            await client.patch(one, json=_client_body({"name": "x"}), headers=CT),
            await client.delete(one),
            await client.get(f"{one}/oauth-tokens"),
            await client.get(f"/api/v2/organizations/{org}/oauth-tokens"),
            await client.get(tok),
            await client.delete(tok),
        ):
            assert r.status_code == 403, r.text
    async with any_app.client(outsider.token) as client:
        for r in (
            await client.get(base),
            await client.get(one),
            await client.post(base, json=gitlab_pat(), headers=CT),
            await client.delete(one),
            await client.get(tok),
        ):
            assert r.status_code == 404, r.text
    async with any_app.client(manager.token) as client:
        assert [c["id"] for c in document(await client.get(base), 200)["data"]] == [conn["id"]]
        made = document(await client.post(base, json=gitlab_pat(), headers=CT), 201)["data"]
        assert (await client.delete(f"/api/v2/oauth-clients/{made['id']}")).status_code == 204
    assert _count(any_app, OAuthClient) == 1


async def _vcs_workspace(
    admin: httpx.AsyncClient, org: str, vcs: Any, **attrs: Any
) -> httpx.Response:
    body = {
        "data": {
            "type": "workspaces",
            "attributes": {"name": f"ws-{len(str(vcs))}-{id(vcs)}", "vcs-repo": vcs, **attrs},
        }
    }
    return await admin.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)


async def test_workspace_vcs_repo_set_change_clear_and_validation(
    any_app: InProcessCairn,
) -> None:
    forge = forge_users(any_app)
    forge.known[PAT] = ("alice", None)
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        other = await create_organization(admin)
        base = f"/api/v2/organizations/{org}/oauth-clients"
        conn = document(await admin.post(base, json=gitlab_pat(), headers=CT), 201)["data"]
        tok_id = conn["relationships"]["oauth-tokens"]["data"][0]["id"]

        made = await _vcs_workspace(
            admin,
            org,
            {
                "identifier": "group/sub/infra",
                "branch": "main",
                "oauth-token-id": tok_id,
                "tags-regex": r"^v\d+",
                "ingress-submodules": False,
            },
            **{"working-directory": "envs/prod", "trigger-prefixes": ["modules/"]},
        )
        ws = document(made, 201)["data"]
        a = ws["attributes"]
        assert a["vcs-repo-identifier"] == "group/sub/infra"
        assert a["vcs-repo"] == {
            "identifier": "group/sub/infra",
            "display-identifier": "group/sub/infra",
            "branch": "main",
            "ingress-submodules": False,
            "oauth-token-id": tok_id,
            "github-app-installation-id": None,
            "tags-regex": r"^v\d+",
            "repository-http-url": "https://gitlab.example/group/sub/infra",
            "service-provider": "gitlab_hosted",
            "webhook-url": f"{any_app.url}/api/cairn/v1/vcs-hooks/{conn['id']}",
        }
        assert a["trigger-prefixes"] == ["modules/"]
        assert a["file-triggers-enabled"] is True
        one = f"/api/v2/workspaces/{ws['id']}"

        async def patch(attrs: dict[str, Any]) -> httpx.Response:
            body = {"data": {"type": "workspaces", "attributes": attrs}}
            return await admin.patch(one, json=body, headers=CT)

        # Submodules are not fetched: asking for them is refused, nothing changes.
        refused = await patch({"vcs-repo": {"ingress-submodules": True}})
        assert document(refused, 422)["errors"][0]["source"]["pointer"].endswith(
            "ingress-submodules"
        )
        # {} is "no change" (pytfe sends it); a partial object changes only what it names.
        assert (
            document(await patch({"vcs-repo": {}}), 200)["data"]["attributes"]["vcs-repo"]["branch"]
            == "main"
        )
        changed = document(await patch({"vcs-repo": {"branch": ""}}), 200)["data"]
        assert changed["attributes"]["vcs-repo"]["branch"] == ""
        assert changed["attributes"]["vcs-repo"]["identifier"] == "group/sub/infra"

        # Refused, nothing changed.
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"vcs-repo": {"tags-regex": "("}}, "vcs-repo/tags-regex"),
            ({"vcs-repo": {"tags-regex": "a" * 300}}, "vcs-repo/tags-regex"),
            ({"vcs-repo": {"identifier": "no-slash"}}, "vcs-repo/identifier"),
            ({"vcs-repo": {"oauth-token-id": "ot-nope"}}, "vcs-repo/oauth-token-id"),
            (
                {"vcs-repo": {"oauth-token-id": tok_id, "github-app-installation-id": "ghain-x"}},
                "vcs-repo/github-app-installation-id",
            ),
            ({"vcs-repo": {"surprise": 1}}, "vcs-repo/surprise"),
            ({"vcs-repo": "group/infra"}, "vcs-repo"),
            ({"trigger-prefixes": ["x"] * 101}, "trigger-prefixes"),
            ({"trigger-patterns": [""]}, "trigger-patterns/0"),
        ]
        for attrs, pointer in refusals:
            err = document(await patch(attrs), 422)["errors"][0]
            assert err["source"]["pointer"].endswith(pointer), (attrs, err)
        still = document(await admin.get(one), 200)["data"]["attributes"]
        assert still["vcs-repo"]["identifier"] == "group/sub/infra"

        # Another organization's token is not usable.
        r = await _vcs_workspace(admin, other, {"identifier": "g/p", "oauth-token-id": tok_id})
        assert document(r, 422)["errors"][0]["source"]["pointer"].endswith("oauth-token-id")
        r = await _vcs_workspace(admin, org, {"identifier": "g/p"})
        assert document(r, 422)["errors"][0]["source"]["pointer"].endswith("oauth-token-id")

        # null disconnects.
        cleared = document(await patch({"vcs-repo": None}), 200)["data"]["attributes"]
        assert cleared["vcs-repo"] is None and cleared["vcs-repo-identifier"] is None

        # Deleting the token disconnects the workspaces using it (HCP: they lose the repo).
        document(
            await patch({"vcs-repo": {"identifier": "group/infra", "oauth-token-id": tok_id}}),
            200,
        )
        assert (await admin.delete(f"/api/v2/oauth-tokens/{tok_id}")).status_code == 204
        gone = document(await admin.get(one), 200)["data"]["attributes"]
        assert gone["vcs-repo"] is None


async def test_project_scoped_connection(any_app: InProcessCairn) -> None:
    forge = forge_users(any_app)
    forge.known[PAT] = ("alice", None)
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        prj_body = {"data": {"type": "projects", "attributes": {"name": "infra"}}}
        prj = document(
            await admin.post(f"/api/v2/organizations/{org}/projects", json=prj_body, headers=CT),
            201,
        )["data"]["id"]
        conn = document(
            await admin.post(
                f"/api/v2/organizations/{org}/oauth-clients",
                json=_client_body(
                    gitlab_pat(**{"organization-scoped": False})["data"]["attributes"],
                    rels={"projects": {"data": [{"type": "projects", "id": prj}]}},
                ),
                headers=CT,
            ),
            201,
        )["data"]
        assert conn["attributes"]["organization-scoped"] is False
        assert conn["relationships"]["projects"]["data"] == [{"id": prj, "type": "projects"}]
        tok_id = conn["relationships"]["oauth-tokens"]["data"][0]["id"]
        ws = await create_workspace(admin, org)  # in the default project
        one = f"/api/v2/workspaces/{ws.id}"
        vcs = {"identifier": "group/infra", "oauth-token-id": tok_id}
        body = {"data": {"type": "workspaces", "attributes": {"vcs-repo": vcs}}}
        err = document(await admin.patch(one, json=body, headers=CT), 422)["errors"][0]
        assert "project" in err["detail"]

        # Add the default project to the connection: allowed.
        default = document(await admin.get(one), 200)["data"]["relationships"]["project"]["data"]
        rel = f"/api/v2/oauth-clients/{conn['id']}/relationships/projects"
        items = {"data": [{"type": "projects", "id": default["id"]}]}
        assert (await admin.post(rel, json=items, headers=CT)).status_code == 204
        assert document(await admin.patch(one, json=body, headers=CT), 200)
        shown = document(await admin.get(f"/api/v2/oauth-clients/{conn['id']}"), 200)["data"]
        assert {p["id"] for p in shown["relationships"]["projects"]["data"]} == {
            prj,
            default["id"],
        }
        # Removing it again; an unknown project is refused.
        assert (await admin.request("DELETE", rel, json=items, headers=CT)).status_code == 204
        bad = {"data": [{"type": "projects", "id": "prj-nope"}]}
        assert (await admin.post(rel, json=bad, headers=CT)).status_code == 422
