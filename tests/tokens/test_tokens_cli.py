"""`cairn tokens list | create | revoke` as users run it: the installed console script in a
subprocess, against a real server on SQLite over HTTPS with the development CA."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.cli import CliRunner, failed, ok
from tests.support.server import CairnServer
from tests.tokens.support import authenticates, make_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def person(cli_server: CairnServer, admin: httpx.Client) -> str:
    """A token of a person of their own (not the site admin)."""
    _, value = make_user(admin, "cli")
    return value


@pytest.fixture
def cairn(cli_server: CairnServer, person: str, tmp_path: Path) -> CliRunner:
    """Run `cairn ARGS…` as `person` (token=… to run as someone else)."""
    return CliRunner.in_dir(cli_server, person, tmp_path)


def _listed(cairn: CliRunner, token: str | None = None) -> dict[str, dict[str, object]]:
    rows = json.loads(ok(cairn("tokens", "list", "--json", token=token)).stdout)
    return {row["id"]: row["attributes"] for row in rows}


def test_create_prints_the_token_once_and_list_never_shows_it(
    cairn: CliRunner, cli_server: CairnServer
) -> None:
    created = ok(cairn("tokens", "create", "--description", "build box"))
    value = created.stdout.strip()
    assert created.stdout == value + "\n"  # only the token on stdout
    assert value.startswith("cairn_")
    assert "shown only this once" in created.stderr
    assert value not in created.stderr

    table = ok(cairn("tokens", "list")).stdout
    assert "build box" in table
    assert value not in table
    listed = _listed(cairn)
    (token_id,) = [i for i, a in listed.items() if a["description"] == "build box"]
    assert token_id in table
    assert "token" not in listed[token_id]
    assert listed[token_id]["last-used-at"] is None

    # the new token works on its own; its use shows in the list
    assert _listed(cairn, token=value)[token_id]["last-used-at"] is not None
    assert authenticates(cli_server, value) == 200


def test_create_with_an_expiry(cairn: CliRunner) -> None:
    before = datetime.now(UTC)
    ok(cairn("tokens", "create", "-d", "month", "--expires", "30d"))
    ok(cairn("tokens", "create", "-d", "fixed", "--expires", "2099-01-02T03:04:05Z"))
    listed = {a["description"]: a for a in _listed(cairn).values()}
    month = datetime.fromisoformat(str(listed["month"]["expired-at"]))
    assert before + timedelta(days=30) - timedelta(seconds=5) <= month
    assert month <= datetime.now(UTC) + timedelta(days=30)
    assert listed["fixed"]["expired-at"] == "2099-01-02T03:04:05.000Z"
    table = ok(cairn("tokens", "list")).stdout
    assert "2099-01-02 03:04:05" in table


@pytest.mark.parametrize("expires", ["soon", "-1d", "2001-01-01"])
def test_bad_expiries_are_usage_errors(cairn: CliRunner, expires: str) -> None:
    result = cairn("tokens", "create", "--expires", expires)
    assert result.returncode == 2, str(result)
    assert "--expires" in result.stderr
    assert result.stdout == ""


def test_revoke_stops_the_token_at_once(cairn: CliRunner, cli_server: CairnServer) -> None:
    value = ok(cairn("tokens", "create", "-d", "doomed")).stdout.strip()
    (token_id,) = [i for i, a in _listed(cairn).items() if a["description"] == "doomed"]

    assert ok(cairn("tokens", "revoke", token_id)).stdout == f"revoked {token_id}\n"

    assert authenticates(cli_server, value) == 401
    assert token_id not in _listed(cairn)
    failed(cairn("tokens", "list", token=value), "401", "revoked")
    failed(cairn("tokens", "revoke", token_id), token_id, "cairn tokens list")


def test_nobody_revokes_someone_elses_token(cairn: CliRunner, admin_token: str) -> None:
    admin_rows = json.loads(ok(cairn("tokens", "list", "--json", token=admin_token)).stdout)
    assert admin_rows
    failed(cairn("tokens", "revoke", admin_rows[0]["id"]), "no token")
    assert admin_rows[0]["id"] in _listed(cairn, token=admin_token)
