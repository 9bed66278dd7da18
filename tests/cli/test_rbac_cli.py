"""`cairn rbac …` as an operator runs it, against a real server: users, teams, members, grants
and roles, and that a grant made with the CLI gives the access it says."""

from __future__ import annotations

import json

import pytest

from tests.support import api as tfe
from tests.support.cli import CliRunner, ok
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e


def test_rbac_commands_manage_access_end_to_end(
    cairn: CliRunner,
    cli_server: CairnServer,
    admin_token: str,
) -> None:
    with cli_server.client(admin_token) as client:
        org = tfe.create_organization(client, tfe.unique_name("rbac-cli"))
        prod = tfe.create_workspace(client, org, "prod-app")
        dev = tfe.create_workspace(client, org, "dev-app")

    assert "created user carol" in ok(cairn("rbac", "users", "create", "carol")).stdout
    users = json.loads(ok(cairn("rbac", "users", "list", "--json")).stdout)
    carol_id = next(u["id"] for u in users if u["username"] == "carol")
    ok(cairn("rbac", "teams", "create", org, "deployers", "--idp-group", "deploy"))
    ok(cairn("rbac", "members", "add", org, "deployers", "carol"))
    teams = ok(cairn("rbac", "teams", "list", org)).stdout
    assert "deployers" in teams and "deploy" in teams and "owners" in teams
    granted = ok(
        cairn(
            "rbac", "grant", org, "--team", "deployers", "--role", "write", "--workspaces", "prod-*"
        )
    ).stdout
    grant_id = granted.strip().rsplit("(", 1)[1].rstrip(")")
    listed = json.loads(ok(cairn("rbac", "grants", org, "--json")).stdout)
    assert [(g["role"], g["team"], g["workspaces"]) for g in listed] == [
        ("write", "deployers", "prod-*")
    ]

    # A token for carol, made by the admin through the TFE API.
    with cli_server.client(admin_token) as client:
        created = client.post(
            f"/api/v2/users/{carol_id}/authentication-tokens",
            json={"data": {"type": "authentication-tokens", "attributes": {"description": "t"}}},
            headers={"Content-Type": "application/vnd.api+json"},
        )
        assert created.status_code == 201, created.text
        carol = created.json()["data"]["attributes"]["token"]
    with cli_server.client(carol) as client:
        assert client.post(f"/api/v2/workspaces/{prod}/actions/lock").status_code == 200
        assert client.get(f"/api/v2/workspaces/{dev}").status_code == 404

    ok(cairn("rbac", "roles", "create", org, "viewer", "--permission", "workspace:read"))
    assert "viewer" in ok(cairn("rbac", "roles", "list", org)).stdout
    ok(cairn("rbac", "grant", org, "--user", "carol", "--role", "viewer", "--workspaces", "dev-*"))
    with cli_server.client(carol) as client:
        assert client.get(f"/api/v2/workspaces/{dev}").status_code == 200
        assert client.post(f"/api/v2/workspaces/{dev}/actions/lock").status_code == 403

    ok(cairn("rbac", "revoke", grant_id))
    ok(cairn("rbac", "members", "remove", org, "deployers", "carol"))
    ok(cairn("rbac", "roles", "delete", org, "viewer"))
    with cli_server.client(carol) as client:
        assert client.get(f"/api/v2/workspaces/{prod}").status_code == 404
        assert client.get(f"/api/v2/workspaces/{dev}").status_code == 404

    bad = cairn("rbac", "grant", org, "--team", "nobody", "--role", "write", "--workspaces", "x")
    assert bad.returncode == 1 and "nobody" in bad.stderr
    assert admin_token not in bad.stderr
