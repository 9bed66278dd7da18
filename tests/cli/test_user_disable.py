"""`cairn user disable NAME` / `cairn user enable NAME` (finding I5) as an operator runs them,
against a real server: disabling revokes the person's tokens and refuses them, enabling lets
them in again with a new token (the old one stays revoked); errors are one clear line."""

from __future__ import annotations

import json

import pytest

from tests.support import api as tfe
from tests.support.cli import CliRunner, failed, ok
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _token(cli_server: CairnServer, admin_token: str, user_id: str) -> str:
    with cli_server.client(admin_token) as client:
        created = client.post(
            f"/api/v2/users/{user_id}/authentication-tokens",
            json={"data": {"type": "authentication-tokens", "attributes": {"description": "t"}}},
            headers=JSONAPI,
        )
        assert created.status_code == 201, created.text
        value: str = created.json()["data"]["attributes"]["token"]
        return value


def _whoami(cli_server: CairnServer, token: str) -> int:
    with cli_server.client(token) as client:
        return client.get("/api/v2/account/details").status_code


def test_disable_and_enable_a_user_with_the_cli(
    cairn: CliRunner, cli_server: CairnServer, admin_token: str
) -> None:
    name = tfe.unique_name("dora")
    ok(cairn("rbac", "users", "create", name))
    users = json.loads(ok(cairn("rbac", "users", "list", "--json")).stdout)
    user_id = next(u["id"] for u in users if u["username"] == name)
    token = _token(cli_server, admin_token, user_id)
    assert _whoami(cli_server, token) == 200

    out = ok(cairn("user", "disable", name)).stdout
    assert f"{name} ({user_id}) disabled" in out and "1 token(s) revoked" in out
    assert _whoami(cli_server, token) == 401
    users = json.loads(ok(cairn("rbac", "users", "list", "--json")).stdout)
    assert next(u for u in users if u["id"] == user_id)["disabled-at"]
    assert "was already disabled" in ok(cairn("user", "disable", user_id)).stdout
    failed(cairn("user", "disable", name, token=token), "disabled")

    assert f"{name} ({user_id}) enabled" in ok(cairn("user", "enable", name)).stdout
    assert _whoami(cli_server, token) == 401  # revoked for good
    assert _whoami(cli_server, _token(cli_server, admin_token, user_id)) == 200
    assert "was not disabled" in ok(cairn("user", "enable", name)).stdout

    failed(cairn("user", "disable", "no-such-person"), "no user 'no-such-person'")
    failed(cairn("user", "disable", "admin"), "your own account")
