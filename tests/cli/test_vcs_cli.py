"""`cairn vcs list|connect` as an operator runs them, against a real server and the test rig's
fake forge: a token connection and an OAuth-application connection listed with their status,
a one-time browser link printed for the OAuth one, and a token connection refused with the
server's reason."""

from __future__ import annotations

import json

import pytest

from tests.support import api as tfe
from tests.support.cli import CliRunner, failed, ok
from tests.support.server import CairnServer
from tests.support.vcs.forge import Forge

pytestmark = pytest.mark.e2e

CT = {"Content-Type": "application/vnd.api+json"}


def test_vcs_list_and_connect(
    cairn: CliRunner, cli_server: CairnServer, admin_token: str, forge: Forge
) -> None:
    with cli_server.client(admin_token) as client:
        org = tfe.create_organization(client, tfe.unique_name("vcs-cli"))
        base = f"/api/v2/organizations/{org}/oauth-clients"
        common = {"http-url": forge.gitlab_http_url, "api-url": forge.gitlab_api_url}
        pat = {
            "service-provider": "gitlab_hosted",
            "oauth-token-string": forge.add_pat("gitlab", user="alice"),
            **common,
        }
        made = client.post(base, json={"data": {"attributes": pat}}, headers=CT)
        assert made.status_code == 201, made.text
        pat_id = made.json()["data"]["id"]
        app = {"service-provider": "gitlab_hosted", "key": "k", "secret": "s", **common}
        made = client.post(base, json={"data": {"attributes": app}}, headers=CT)
        assert made.status_code == 201, made.text
        oauth_id = made.json()["data"]["id"]

    listed = ok(cairn("vcs", "list", org)).stdout
    assert pat_id in listed and oauth_id in listed and "alice" in listed
    assert "cairn vcs connect" in listed  # the OAuth connection has no token yet
    as_json = json.loads(ok(cairn("vcs", "list", org, "--json")).stdout)
    assert {c["id"] for c in as_json["oauth-clients"]} == {pat_id, oauth_id}

    link = ok(cairn("vcs", "connect", oauth_id)).stdout.strip()
    assert link.startswith(f"{cli_server.url}/api/cairn/v1/oauth-clients/{oauth_id}/connect/")
    failed(cairn("vcs", "connect", pat_id), "only OAuth application connections")
