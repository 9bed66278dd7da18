"""cairn registers its webhook on the forge (the rig's fake GitLab) when a workspace gets a
repository, once per (connection, repository), with the connection's URL and secret — and a
delivery the forge then signs with that secret is accepted."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.vcs import webhook
from tests.support.vcs.forge import Forge

T = TypeVar("T")
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """``probe()`` once it is not None (the worker's rounds come every few seconds)."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.2)
    return found


def workspace_on(api: httpx.Client, org: str, repo: str, token_id: str) -> None:
    body = {
        "data": {
            "type": "workspaces",
            "attributes": {
                "name": tfe.unique_name("ws"),
                "vcs-repo": {"identifier": repo, "oauth-token-id": token_id},
            },
        }
    }
    response = api.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=JSONAPI)
    assert response.status_code == 201, response.text


def test_the_hook_is_registered_once_and_its_deliveries_verify(
    plain_server: CairnServer, admin_token: str, forge: Forge
) -> None:
    repo = forge.create_repo(f"team-{secrets.token_hex(3)}/infra", files={"main.tf": ""})
    chosen = secrets.token_urlsafe(24)
    with plain_server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("hooks"))
        created = api.post(
            f"/api/v2/organizations/{org}/oauth-clients",
            headers=JSONAPI,
            json={
                "data": {
                    "type": "oauth-clients",
                    "attributes": {
                        "service-provider": "gitlab_hosted",
                        "http-url": forge.gitlab_http_url,
                        "api-url": forge.gitlab_api_url,
                        "oauth-token-string": forge.add_pat("gitlab"),
                        "webhook-secret": chosen,
                    },
                }
            },
        )
        assert created.status_code == 201, created.text
        client_id = created.json()["data"]["id"]
        tokens = api.get(f"/api/v2/oauth-clients/{client_id}/oauth-tokens").json()["data"]
        workspace_on(api, org, repo.path, tokens[0]["id"])
        workspace_on(api, org, repo.path, tokens[0]["id"])

        [hook] = eventually("the hook on the forge", lambda: forge.hooks(repo.path) or None)
        url = f"{plain_server.url}/api/cairn/v1/vcs-hooks/{client_id}"
        assert (hook.flavor, hook.url, hook.secret) == ("gitlab", url, chosen)

        def registered() -> dict[str, Any] | None:
            doc = api.get(f"/api/cairn/v1/oauth-clients/{client_id}/webhook-status").json()
            rows = doc["data"]
            return doc if rows and rows[0]["attributes"]["state"] == "registered" else None

        status = eventually("the hook recorded as registered", registered)
        [row] = status["data"]
        assert row["attributes"]["identifier"] == repo.path
        assert row["attributes"]["forge-hook-id"] == str(hook.id)
        assert status["meta"] == {"webhook-url": url, "register-hooks": True}

        # A push the forge signs with the registered secret is accepted and handled; by then
        # the worker's round has also run its registration step again: still one hook.
        sent = webhook.send(url, webhook.gitlab_push(repo), hook.secret or "")
        assert sent.status_code == 202, sent.text
        forged = webhook.send(url, webhook.gitlab_push(repo), hook.secret or "", bad_secret=True)
        assert forged.status_code == 401, forged.text
        delivery = sent.json()["data"]["id"]
        eventually(
            "the delivery handled",
            lambda: (
                delivery
                if any(
                    e["id"] == delivery and e["attributes"]["state"] in ("done", "failed")
                    for e in api.get(f"/api/v2/organizations/{org}/vcs-events").json()["data"]
                )
                else None
            ),
        )
    assert len(forge.hooks(repo.path)) == 1
