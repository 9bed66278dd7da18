"""The client commands (`cairn keys …`, `cairn id-token`) as users run them: the installed
`cairn` console script in a subprocess, against a real server on SQLite, over HTTPS with the
development CA.

The key lifecycle is one test because each step depends on the one before (a fresh server's
next key was just published, so a graceful rotation is refused until forced). The other tests
never rotate, and read the active key from the server when they need it.
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cairn.cli.client import ApiFailure, CairnClient, CliError, Connection, Trust
from tests.support import api as tfe
from tests.support.cli import CliRunner, failed, ok
from tests.support.server import CairnServer

PROJECT = "Default Project"


def keys_json(cairn: CliRunner) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(cairn("keys", "list", "--json")).stdout)
    return rows


def states(cairn: CliRunner) -> dict[int, str]:
    return {row["version"]: row["state"] for row in keys_json(cairn)}


def table_rows(table: str) -> dict[int, tuple[str, str]]:
    """version → (kid, state) from the rich table of `cairn keys list`."""
    rows: dict[int, tuple[str, str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 4 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], cells[3])
    return rows


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_key_lifecycle(cairn: CliRunner) -> None:
    listed = ok(cairn("keys", "list")).stdout
    rows = table_rows(listed)
    assert sorted(state for _, state in rows.values()) == ["active", "next"], listed
    for header in ("version", "kid", "alg", "state", "published", "activated", "retire until"):
        assert header in listed
    assert "RS256" in listed
    fresh = {row["version"]: row for row in keys_json(cairn)}
    assert {v: (r["kid"], r["state"]) for v, r in fresh.items()} == rows
    for row in fresh.values():
        assert set(row) >= {"kid", "version", "alg", "state", "published-at", "activated-at"}
        assert not {"d", "p", "q", "private", "n", "e"} & set(row), "no key material in a list"
    active = next(v for v, r in fresh.items() if r["state"] == "active")
    nxt = next(v for v, r in fresh.items() if r["state"] == "next")

    # The next key was published a moment ago: promoting it now could break verifiers.
    refused = failed(
        cairn("keys", "rotate"), "Conflict (409)", f"version {nxt}", "force", "emergency"
    )
    assert "published for" in refused
    assert states(cairn) == {active: "active", nxt: "next"}, "a refused rotation changes nothing"

    forced = ok(cairn("keys", "rotate", "--force"))
    assert "Graceful rotation (forced):" in forced.stdout
    assert f"version {active} ({fresh[active]['kid']}): active → retired" in forced.stdout
    assert f"version {nxt} ({fresh[nxt]['kid']}): next → active" in forced.stdout
    newest = nxt + 1
    assert f"version {newest}: new RS256 key, next" in forced.stdout
    assert states(cairn) == {active: "retired", nxt: "active", newest: "next"}
    assert table_rows(forced.stdout) == table_rows(ok(cairn("keys", "list")).stdout)

    # Emergency: asks first; "no" (or no terminal answer) changes nothing.
    declined = cairn("keys", "rotate", "--emergency", stdin="n\n")
    assert declined.returncode == 1, str(declined)
    assert "revokes the active and next signing keys" in declined.stderr
    assert states(cairn) == {active: "retired", nxt: "active", newest: "next"}

    emergency = ok(cairn("keys", "rotate", "--emergency", "--yes"))
    assert "Emergency rotation:" in emergency.stdout
    assert f"version {nxt} ({fresh[nxt]['kid']}): active → revoked" in emergency.stdout
    assert f"version {newest}" in emergency.stdout and "next → revoked" in emergency.stdout
    after = states(cairn)
    assert after == {
        active: "retired",
        nxt: "revoked",
        newest: "revoked",
        newest + 1: "active",
        newest + 2: "next",
    }
    revoked_row = next(r for r in keys_json(cairn) if r["version"] == nxt)
    assert revoked_row["revoked-at"] is not None

    # Trim: the retired key is still needed (its tokens have not expired): nothing to delete,
    # and trimming again is the same.
    for _ in range(2):
        trimmed = ok(cairn("keys", "trim"))
        assert "Trim: nothing to change." in trimmed.stdout
        assert states(cairn) == after


@pytest.mark.e2e
def test_keys_with_a_bad_token_fail_readably(cairn: CliRunner) -> None:
    secret = "cairn-not-a-real-token-5f1d2c"
    for args in (("keys", "list"), ("keys", "rotate", "--force"), ("keys", "trim")):
        result = cairn(*args, env={"CAIRN_TOKEN": secret})
        failed(result, "Unauthorized (401)", "CAIRN_TOKEN")
        assert secret not in result.stdout + result.stderr


# -- id-token ------------------------------------------------------------------------------------


@pytest.fixture
def workspace(cli_server: CairnServer, admin_token: str) -> tuple[str, str]:
    with cli_server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("cli"))
        ws = tfe.unique_name("ws")
        tfe.create_workspace(api, org, ws)
    return org, ws


def verify(server: CairnServer, token: str, audience: str) -> dict[str, Any]:
    """Verify `token` the way a cloud does: discovery → jwks_uri → signature and claims."""
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context) as http:
        discovery = tfe.expect(http.get(f"{server.url}/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == server.url
    assert discovery["jwks_uri"] == f"{server.url}/.well-known/jwks"
    jwks = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=context, cache_jwk_set=False)
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=server.url,
        options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "jti"]},
    )
    return claims


@pytest.mark.e2e
def test_id_token_prints_only_a_verifiable_jwt(
    cairn: CliRunner, cli_server: CairnServer, workspace: tuple[str, str]
) -> None:
    org, ws = workspace
    result = ok(
        cairn(
            "id-token",
            *("--workspace", f"{org}/{ws}", "--audience", "sts.amazonaws.com", "--phase", "plan"),
        )
    )
    token = result.stdout.strip()
    assert result.stdout == token + "\n", "stdout holds the JWT and nothing else"
    assert result.stderr == ""
    active = next(r["kid"] for r in keys_json(cairn) if r["state"] == "active")
    header = jwt.get_unverified_header(token)
    assert header["kid"] == active
    assert header["alg"] == "RS256"
    claims = verify(cli_server, token, "sts.amazonaws.com")
    assert claims["sub"] == f"organization:{org}:project:{PROJECT}:workspace:{ws}:run_phase:plan"
    assert claims["aud"] == "sts.amazonaws.com"
    assert claims["terraform_run_phase"] == "plan"
    assert claims["terraform_workspace_name"] == ws
    assert claims["terraform_organization_name"] == org
    assert 900 - 5 <= claims["exp"] - claims["iat"] <= 900, "default --ttl is 15m"


@pytest.mark.e2e
def test_id_token_json_with_audiences_ttl_and_run_id(
    cairn: CliRunner, cli_server: CairnServer, workspace: tuple[str, str]
) -> None:
    org, ws = workspace
    result = ok(
        cairn(
            "id-token",
            *("-w", f"{org}/{ws}", "-a", "vault", "-a", "api://AzureADTokenExchange"),
            *("--phase", "apply", "--ttl", "1h", "--run-id", "run-cli123", "--json"),
        )
    )
    doc = json.loads(result.stdout)
    assert set(doc) >= {"token", "expires_at", "run_id", "jti", "kid"}
    assert doc["run_id"] == "run-cli123"
    claims = verify(cli_server, doc["token"], "vault")
    assert claims["aud"] == ["vault", "api://AzureADTokenExchange"]
    assert claims["sub"] == f"organization:{org}:project:{PROJECT}:workspace:{ws}:run_phase:apply"
    assert claims["terraform_run_id"] == "run-cli123"
    assert claims["jti"] == doc["jti"]
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.e2e
def test_id_token_errors_are_one_readable_line(
    cairn: CliRunner, workspace: tuple[str, str]
) -> None:
    org, ws = workspace
    base = ("id-token", "-a", "aud", "--phase", "plan")

    failed(cairn(*base, "-w", f"{org}/no-such-ws"), f"workspace {org}/no-such-ws does not exist")
    failed(cairn(*base, "-w", f"no-such-org-{ws}/{ws}"), "does not exist")

    secret = "cairn-wrong-token-9b8a7c"
    bad = cairn(*base, "-w", f"{org}/{ws}", env={"CAIRN_TOKEN": secret})
    failed(bad, "Unauthorized (401)", "token")
    assert secret not in bad.stdout + bad.stderr

    # A server-side validation error comes back as its JSON:API detail.
    failed(cairn(*base, "-w", f"{org}/{ws}", "--run-id", "nope"), "(422)", "run_id must look")

    # Usage errors are click's (exit 2) and name the option.
    usage = cairn(*base, "-w", "just-a-name")
    assert usage.returncode == 2 and "ORGANIZATION/WORKSPACE" in usage.stderr, str(usage)
    usage = cairn(*base, "-w", f"{org}/{ws}", "--ttl", "soon")
    assert usage.returncode == 2 and "15m" in usage.stderr, str(usage)


# -- connection and trust ------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_missing_token_says_how_to_get_one(cairn: CliRunner) -> None:
    failed(cairn("keys", "list", env={"CAIRN_TOKEN": None}), "CAIRN_TOKEN", "cairn serve")


@pytest.mark.e2e
def test_trust_comes_from_ssl_cert_file_or_a_data_dir(
    cairn: CliRunner, cli_server: CairnServer, admin_token: str, tmp_path: Path
) -> None:
    assert cli_server.ca_bundle is not None
    # SSL_CERT_FILE, no data dir.
    ok(
        cairn(
            "keys", "list", env={"CAIRN_DATA_DIR": None, "SSL_CERT_FILE": str(cli_server.ca_bundle)}
        )
    )
    # ./.cairn-data, what `make serve` uses.
    project = tmp_path / "project"
    (project / ".cairn-data" / "tls").mkdir(parents=True)
    shutil.copy(cli_server.ca_bundle, project / ".cairn-data" / "tls" / "ca-bundle.pem")
    ok(cairn("keys", "list", env={"CAIRN_DATA_DIR": None}, cwd=project))
    # --data-dir on the command line.
    ok(cairn("keys", "list", "--data-dir", str(cli_server.data_dir), env={"CAIRN_DATA_DIR": None}))

    # Nothing trusts the dev CA: the error says so and how to fix it, never with the token.
    untrusted = cairn("keys", "list", env={"CAIRN_DATA_DIR": None})
    line = failed(untrusted, "not trusted", cli_server.url, "SSL_CERT_FILE")
    assert admin_token not in untrusted.stdout + untrusted.stderr, line


@pytest.mark.e2e
def test_connection_errors_name_the_url(cairn: CliRunner, admin_token: str) -> None:
    from tests.support.processes import free_port

    url = f"https://localhost:{free_port()}"
    result = cairn("keys", "list", "--url", url)
    failed(result, url, "Is cairn running")
    assert admin_token not in result.stdout + result.stderr

    failed(cairn("keys", "list", "--url", "ftp://localhost"), "http(s) URL")


# -- the client without a server -----------------------------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> CairnClient:
    conn = Connection("https://cairn.test", "tok-secret", Trust(True, "test"))
    return CairnClient(conn, transport=httpx.MockTransport(handler))


def test_jsonapi_errors_become_one_line() -> None:
    body = {
        "errors": [
            {"status": "422", "title": "Unprocessable Entity", "detail": "bad\nthing"},
            {"status": "422", "title": "Unprocessable Entity", "detail": "tok-secret too"},
        ]
    }
    client = _client(lambda r: httpx.Response(422, json=body))
    with client, pytest.raises(ApiFailure) as caught:
        client.get("/x", doing="read x")
    message = caught.value.format_message()
    assert message == (
        "cannot read x: Unprocessable Entity (422): bad thing; Unprocessable Entity (422): *** too"
    )
    assert caught.value.status == 422
    assert caught.value.exit_code == 1


def test_non_json_errors_and_answers_are_explained() -> None:
    client = _client(lambda r: httpx.Response(502, text="<html>\n bad gateway </html>"))
    with client, pytest.raises(CliError, match=r"GET /x answered 502 Bad Gateway: <html> bad"):
        client.get("/x", doing="read x")
    client = _client(lambda r: httpx.Response(200, text="[]"))
    with client, pytest.raises(CliError, match="not a JSON object"):
        client.get("/x", doing="read x")


def test_the_token_is_sent_but_never_shown() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"data": []})

    with _client(handler) as client:
        assert client.get("/x", doing="read x") == {"data": []}
    assert seen == ["Bearer tok-secret"]
    assert "tok-secret" not in repr(Connection("https://c.test", "tok-secret", Trust(True, "t")))
