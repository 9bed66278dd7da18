"""`cairn audit` as users run it: the installed console script in a subprocess, against a real
server on SQLite over HTTPS with the development CA."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.api import unique_name
from tests.support.cli import CliRunner, Result, failed, ok
from tests.tokens.support import create_user_token, make_user, me

pytestmark = pytest.mark.e2e


def _make_events(admin: httpx.Client, marker: str, n: int) -> list[str]:
    user_id = me(admin)["id"]
    return [create_user_token(admin, user_id, f"{marker} {i}")[0] for i in range(n)]


def _json(result: Result) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(result).stdout)
    return rows


def test_the_table_shows_the_newest_events(cairn: CliRunner, admin: httpx.Client) -> None:
    marker = unique_name("table")
    made = _make_events(admin, marker, 2)
    table = ok(cairn("audit", "--subject", marker)).stdout
    assert "token.create" in table and "admin" in table and "success" in table
    assert table.index(made[1]) < table.index(made[0])  # newest first
    assert "newest first" in table


def test_filters_limit_and_json(cairn: CliRunner, admin: httpx.Client) -> None:
    marker = unique_name("json")
    made = _make_events(admin, marker, 3)
    rows = _json(cairn("audit", "--action", "token.", "--subject", marker, "--json"))
    assert [r["attributes"]["details"]["token_id"] for r in rows] == made[::-1]
    rows = _json(cairn("audit", "--subject", marker, "--limit", "2", "--json"))
    assert len(rows) == 2
    assert _json(cairn("audit", "--action", "token.revoke", "--subject", marker, "--json")) == []
    assert len(_json(cairn("audit", "--actor", "admin", "--subject", marker, "--json"))) == 3
    assert len(_json(cairn("audit", "--since", "1h", "--subject", marker, "--json"))) == 3
    assert _json(cairn("audit", "--until", "1h", "--subject", marker, "--json")) == []
    assert _json(cairn("audit", "--since", "2099-01-01", "--subject", marker, "--json")) == []
    assert "no audit events match" in ok(cairn("audit", "--since", "2099-01-01")).stdout
    issuer = _json(cairn("audit", "--action", "oidc.", "--json"))
    assert issuer and all(r["attributes"]["action"].startswith("oidc.") for r in issuer)


def test_limit_beyond_one_page(cairn: CliRunner, admin: httpx.Client) -> None:
    marker = unique_name("many")
    _make_events(admin, marker, 103)
    assert len(_json(cairn("audit", "--subject", marker, "--limit", "102", "--json"))) == 102
    rows = _json(cairn("audit", "--subject", marker, "--limit", "1000", "--json"))
    assert len(rows) == 103
    assert len({r["id"] for r in rows}) == 103


def test_only_site_admins_read_the_log(cairn: CliRunner, admin: httpx.Client) -> None:
    _, value = make_user(admin, "notadmin")
    failed(cairn("audit", token=value), "404", "site admin")


@pytest.mark.parametrize("since", ["last week", "1y"])
def test_bad_times_are_usage_errors(cairn: CliRunner, since: str) -> None:
    result = cairn("audit", "--since", since)
    assert result.returncode == 2, str(result)
    assert "--since" in result.stderr
