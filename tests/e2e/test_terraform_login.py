"""`terraform login` against cairn: the real Terraform 1.0.3 CLI, and the OAuth rules around it.

With no identity provider configured, cairn's `/oauth/authorization` shows a form asking for an
existing API token; the tests play the browser (reference §2, non-interactive recipe): answer
`yes`, read the 4-space-indented URL, GET the form, POST it with the admin token, follow the 302
to Terraform's loopback listener. Terraform then redeems the code at `/oauth/token` and stores
the new token in `$HOME/.terraform.d/credentials.tfrc.json`.

The negative cases play Terraform's side too (same verifier format, same form body), so they can
keep a code instead of handing it to the listener: replay, wrong PKCE verifier (the code is
burnt), wrong redirect URI or client, refused authorization requests (never redirected), a wrong
token in the form. A code issued by one replica is redeemed at another on one PostgreSQL. The
audit log records the login, and neither a database dump nor the server log holds a token or a
code in clear. Code expiry needs a clock we can move: `tests/unit/auth/test_login.py`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import queue
import re
import secrets
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import psycopg
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.support import api as tfe
from tests.support.postgres import PostgresCluster, find_bindir
from tests.support.server import CairnServer
from tests.support.terraform import (
    NULL_PROVIDER_ADDRESS,
    TerraformCLI,
    TerraformResult,
    hcl_string,
    remote_backend,
    terraform_binary,
)

pytestmark = pytest.mark.e2e

CLIENT_ID = "terraform-cli"
TOKEN_RE = re.compile(r"^cairn_[A-Za-z0-9]{43}$")
LOGIN_TIMEOUT = 60.0


# -- Terraform's side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginCLI(TerraformCLI):
    """Terraform set up the way a user has it: the CLI config in `~/.terraformrc`, holding no
    credentials, and no TF_CLI_CONFIG_FILE. `terraform login` refuses to run when the host's
    credentials live in a CLI config file other than credentials.tfrc.json, and Terraform
    1.0.3 reads `~/.terraform.d/credentials.tfrc.json` (the file login writes) only when
    TF_CLI_CONFIG_FILE is unset."""

    @property
    def cli_config(self) -> Path:
        return self.home / ".terraformrc"

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = super().environment(extra)
        env.pop("TF_CLI_CONFIG_FILE", None)
        return env

    def render_cli_config(self) -> str:
        include = f"[{hcl_string(NULL_PROVIDER_ADDRESS)}]"
        return (
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {hcl_string(str(self.mirror))}\n"
            f"    include = {include}\n"
            "  }\n"
            "  direct {\n"
            f"    exclude = {include}\n"
            "  }\n"
            "}\n"
        )

    @property
    def credentials_file(self) -> Path:
        return self.home / ".terraform.d" / "credentials.tfrc.json"

    def stored_token(self, hostname: str) -> str:
        doc = json.loads(self.credentials_file.read_text(encoding="utf-8"))
        token: str = doc["credentials"][hostname]["token"]
        return token


def login_cli(root: Path, server: CairnServer, mirror: Path) -> LoginCLI:
    assert server.ca_bundle is not None
    cli = LoginCLI.for_https(
        root, hostname=server.hostname, token="", mirror=mirror, ca_bundle=server.ca_bundle
    )
    assert isinstance(cli, LoginCLI)
    # Browser launchers that do nothing: Terraform then just prints the URL (and never blocks
    # on a real browser, whatever this machine has installed).
    fake_bin = root / "no-browser"
    fake_bin.mkdir()
    for name in ("xdg-open", "x-www-browser", "www-browser"):
        launcher = fake_bin / name
        launcher.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        launcher.chmod(0o755)
    return cli


def terraform_login(
    cli: LoginCLI, hostname: str, browser: Callable[[str], None]
) -> TerraformResult:
    """Run `terraform login <hostname>`, answer `yes`, hand the printed URL to `browser`."""
    env = cli.environment(
        {"PATH": f"{cli.root / 'no-browser'}{os.pathsep}{os.environ.get('PATH', '')}"}
    )
    proc = subprocess.Popen(
        [str(terraform_binary()), "login", "-no-color", hostname],
        cwd=cli.root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stdout: list[str] = []
    stderr: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout.append(line)
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        stderr.extend(proc.stderr)

    readers = [threading.Thread(target=pump_stdout), threading.Thread(target=pump_stderr)]
    for reader in readers:
        reader.daemon = True
        reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write("yes\n")
        proc.stdin.close()
        authz = f"    https://{hostname}/oauth/authorization?"
        deadline = time.monotonic() + LOGIN_TIMEOUT
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(
                    "terraform login printed no authorization URL; stdout:\n"
                    f"{''.join(stdout)}\nstderr:\n{''.join(stderr)}"
                )
            if line.startswith(authz):
                url = line.strip()
        browser(url)
        rc = proc.wait(timeout=LOGIN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
        for reader in readers:
            reader.join(timeout=15)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return TerraformResult(rc, "".join(stdout), "".join(stderr))


def follow_to_loopback(location: str) -> None:
    """The browser follows cairn's 302 to Terraform's listener. Terraform 1.0.3 may close the
    listener as soon as it has the code, before its "success" page is written (seen here about
    one run in two): a dropped connection is fine, an answer other than 200 is not."""
    with httpx.Client(trust_env=False, timeout=30.0) as loopback:
        try:
            response = loopback.get(location)
        except httpx.RemoteProtocolError:
            return
    tfe.expect(response, 200)


def pkce_pair() -> tuple[str, str]:
    """A verifier the way Terraform makes it (`<uuid>.<9 digits>`) and its S256 challenge."""
    verifier = f"{uuid.uuid4()}.{secrets.randbelow(10**9):09d}"
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class FakeTerraform:
    """Terraform's OAuth client, played by the test so it can keep the code for itself."""

    port: int = 10005
    verifier: str = ""
    challenge: str = ""
    state: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self.verifier, self.challenge = pkce_pair()

    @property
    def redirect_uri(self) -> str:
        return f"http://localhost:{self.port}/login"

    def params(self, **overrides: str | None) -> dict[str, str]:
        """The authorization query Terraform builds (reference §2.6), with overrides; None
        drops a parameter."""
        params: dict[str, str | None] = {
            "client_id": CLIENT_ID,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "state": self.state,
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def token_form(self, code: str, /, **overrides: str | None) -> dict[str, str]:
        form: dict[str, str | None] = {
            "client_id": CLIENT_ID,
            "code": code,
            "code_verifier": self.verifier,
            "grant_type": "authorization_code",
            "redirect_uri": self.redirect_uri,
        }
        form.update(overrides)
        return {k: v for k, v in form.items() if v is not None}


def browser_client(server: CairnServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        verify=server.ssl_context(),
        trust_env=False,
        follow_redirects=False,
        timeout=30.0,
    )


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The form's action and hidden fields, as a browser would submit them."""
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    assert action is not None, f"no POST form in the login page:\n{page}"
    hidden = {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    }
    return html.unescape(action.group(1)), hidden


def authorize(http: httpx.Client, params: dict[str, str], token: str) -> httpx.Response:
    """Submit the token form for an authorization request."""
    return http.post("/oauth/authorization", data={**params, "token": token})


def issue_code(http: httpx.Client, fake: FakeTerraform, token: str) -> str:
    """GET the form, POST it with `token`, and keep the code from the 302 (never following it
    to the loopback listener)."""
    page = http.get("/oauth/authorization", params=fake.params())
    tfe.expect(page, 200)
    answer = authorize(http, fake.params(), token)
    tfe.expect(answer, 302)
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == fake.redirect_uri
    query = dict(parse_qsl(location.query))
    assert query["state"] == fake.state
    assert query["code"]
    return query["code"]


def redeem(http: httpx.Client, form: dict[str, str]) -> httpx.Response:
    """POST /oauth/token exactly as Terraform's oauth2 client does (reference §2.8)."""
    return http.post(
        "/oauth/token",
        content=urlencode(sorted(form.items())),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Terraform/1.0.3",
        },
    )


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_grant", body
    assert "access_token" not in body
    assert response.headers.get("cache-control") == "no-store"


# -- the server's side: database, secrets seen ---------------------------------------------------


def sql(server: CairnServer, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the server's own database (SQLite file or PostgreSQL), `?` placeholders."""
    if server.database_url:
        with psycopg.connect(server.database_url) as pg:
            return list(pg.execute(statement.replace("?", "%s"), params).fetchall())
    lite = sqlite3.connect(server.data_dir / "cairn.db", timeout=30)
    try:
        return list(lite.execute(statement, params).fetchall())
    finally:
        lite.close()


def database_dump(server: CairnServer) -> bytes:
    """Everything the database holds: pg_dump, or the SQLite files (with WAL) plus `.dump`."""
    if server.database_url:
        pg_dump = find_bindir() / "pg_dump"
        return subprocess.run(
            [str(pg_dump), "--no-owner", "--dbname", server.database_url],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    path = server.data_dir / "cairn.db"
    raw = b"".join(
        p.read_bytes()
        for p in (path, path.with_name("cairn.db-wal"), path.with_name("cairn.db-shm"))
        if p.exists()
    )
    conn = sqlite3.connect(path, timeout=30)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    return raw + text.encode()


# Every token value and code the tests in this module saw, per server URL: the dump test at the
# end of the module looks for each of them.
SEEN: dict[str, set[str]] = {}


def seen(server: CairnServer, *values: str) -> None:
    SEEN.setdefault(server.url, set()).update(v for v in values if v)


def audit_events(server: CairnServer, action: str, since: frozenset[str]) -> list[dict[str, Any]]:
    rows = sql(
        server,
        "SELECT actor_name, action, subject, source_address, outcome, details, id "
        "FROM audit_events WHERE action = ? ORDER BY at, id",
        action,
    )
    events = [
        {
            "actor": r[0],
            "action": r[1],
            "subject": r[2],
            "source": r[3],
            "outcome": r[4],
            "details": json.loads(r[5] or "{}"),
            "id": r[6],
        }
        for r in rows
    ]
    return [e for e in events if e["id"] not in since]


def audit_ids(server: CairnServer) -> frozenset[str]:
    """The IDs of the events so far, to look only at newer ones."""
    return frozenset(r[0] for r in sql(server, "SELECT id FROM audit_events"))


def account(server: CairnServer, token: str) -> httpx.Response:
    with server.client(token) as api:
        return api.get("/api/v2/account/details")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def http(server: CairnServer) -> Iterator[httpx.Client]:
    with browser_client(server) as client:
        yield client


# -- the real terraform login --------------------------------------------------------------------


def test_terraform_login_then_init_and_apply(
    server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    """Real `terraform login` → exit 0, a cairn_ token stored 0600 that the API and the remote
    backend accept; the login is in the audit log; Terraform's code cannot be redeemed again."""
    discovery = httpx.get(
        f"{server.url}/.well-known/terraform.json", verify=server.ssl_context(), trust_env=False
    ).json()
    assert discovery["login.v1"] == {
        "client": CLIENT_ID,
        "grant_types": ["authz_code"],
        "authz": "/oauth/authorization",
        "token": "/oauth/token",
        "ports": [10000, 10010],
    }

    before = audit_ids(server)
    cli = login_cli(tmp_path, server, provider_mirror)
    captured: dict[str, str] = {}

    def browser(url: str) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        assert query["client_id"] == CLIENT_ID
        assert query["code_challenge_method"] == "S256"
        assert query["response_type"] == "code"
        port = urlsplit(query["redirect_uri"]).port
        assert port is not None and 10000 <= port < 10010
        with browser_client(server) as http:
            page = http.get(url)
            tfe.expect(page, 200)
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers.get("cache-control") == "no-store"
            action, hidden = form_fields(page.text)
            assert action == "/oauth/authorization"
            assert hidden == query  # the form carries the request on, unchanged
            answer = http.post(action, data={**hidden, "token": admin_token})
            tfe.expect(answer, 302)
        location = answer.headers["location"]
        assert location.startswith(query["redirect_uri"] + "?")
        back = dict(parse_qsl(urlsplit(location).query))
        assert back["state"] == query["state"]
        captured.update(code=back["code"], redirect_uri=query["redirect_uri"])
        follow_to_loopback(location)

    result = terraform_login(cli, server.hostname, browser)
    assert result.rc == 0, f"terraform login failed:\n{result.stdout}\n{result.stderr}"
    assert "Success! Terraform has obtained and saved an API token." in result.stdout

    assert stat.S_IMODE(cli.credentials_file.stat().st_mode) == 0o600
    token = cli.stored_token(server.hostname)
    seen(server, token, captured["code"])
    assert TOKEN_RE.match(token), token
    assert token != admin_token
    details = tfe.document(account(server, token), 200)
    assert details["data"]["type"] == "users"
    assert details["data"]["attributes"]["username"] == "admin"

    # The remote backend takes the stored credentials (the CLI config holds none).
    with server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("login"))
    main_tf = (
        "terraform {\n"
        '  required_providers {\n    null = {\n      source  = "hashicorp/null"\n'
        '      version = "2.1.2"\n    }\n  }\n\n'
        + remote_backend(server.hostname, org, name="after-login")
        + "}\n\n"
        'resource "null_resource" "one" {}\n'
    )
    project = cli.project("after-login", main_tf)
    project.init()
    applied = project.apply()
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in applied.stdout
    with server.client(token) as api:
        ws = tfe.read_workspace(api, org, "after-login")
        version = tfe.current_state_version(api, ws["id"])
        state = json.loads(tfe.download_state(api, version))
    assert [r["type"] for r in state["resources"]] == ["null_resource"]

    # The code Terraform redeemed is spent, even with the right redirect URI.
    with browser_client(server) as http:
        replay = redeem(
            http,
            {
                "client_id": CLIENT_ID,
                "code": captured["code"],
                "code_verifier": pkce_pair()[0],
                "grant_type": "authorization_code",
                "redirect_uri": captured["redirect_uri"],
            },
        )
    assert_invalid_grant(replay)

    # Audit: the authorization (token form), the token created by the login, and the refused
    # replay — each with actor, source address and outcome, none with a secret.
    authorized = audit_events(server, "auth.login.authorize", before)
    assert [(e["actor"], e["outcome"], e["subject"]) for e in authorized] == [
        ("admin", "success", "terraform login (token form)")
    ]
    assert authorized[0]["source"] == "127.0.0.1"
    created = [
        e
        for e in audit_events(server, "token.create", before)
        if e["details"].get("via") == "terraform login"
    ]
    assert len(created) == 1 and created[0]["actor"] == "admin"
    assert created[0]["outcome"] == "success"
    token_rows = sql(
        server, "SELECT kind, description FROM api_tokens WHERE id = ?", created[0]["subject"]
    )
    assert token_rows and token_rows[0][0] == "login"
    refused = audit_events(server, "auth.login.token", before)
    assert [(e["actor"], e["outcome"]) for e in refused] == [("admin", "failure")]
    assert "already used" in refused[0]["details"]["reason"]


def test_login_token_belongs_to_whoever_authorized(
    server: CairnServer, http: httpx.Client, admin_token: str
) -> None:
    """A user who is not the admin logs in with their own token: the new token is theirs."""
    username = tfe.unique_name("login-user")
    with server.client(admin_token) as api:
        user = tfe.document(
            api.post("/api/cairn/v1/admin/users", json={"username": username}), 201
        )["data"]
        created = tfe.document(
            api.post(
                f"/api/v2/users/{user['id']}/authentication-tokens",
                json={"data": {"type": "authentication-tokens", "attributes": {}}},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )
    own_token = created["data"]["attributes"]["token"]
    fake = FakeTerraform()
    code = issue_code(http, fake, own_token)
    token = tfe.expect(redeem(http, fake.token_form(code)), 200).json()["access_token"]
    seen(server, code, token, own_token)
    me = tfe.document(account(server, token), 200)["data"]
    assert (me["id"], me["attributes"]["username"]) == (user["id"], username)
    # Their rights, not the admin's: an organization they are not in stays invisible.
    with server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("not-theirs"))
    with server.client(token) as api:
        assert api.get(f"/api/v2/organizations/{org}").status_code == 404
        assert tfe.document(api.get("/api/v2/organizations"), 200)["data"] == []


def test_state_round_trips_through_the_form_unharmed(
    server: CairnServer, http: httpx.Client, admin_token: str
) -> None:
    """`state` is the client's: markup in it is escaped in the page and returned unchanged."""
    fake = FakeTerraform()
    fake.state = '"><script>alert(1)</script>&redirect_uri=http://evil.example/'
    page = http.get("/oauth/authorization", params=fake.params())
    tfe.expect(page, 200)
    assert "<script>alert(1)" not in page.text
    _, hidden = form_fields(page.text)
    assert hidden == fake.params()
    answer = authorize(http, hidden, admin_token)
    tfe.expect(answer, 302)
    location = urlsplit(answer.headers["location"])
    assert (location.hostname, location.port, location.path) == ("localhost", 10005, "/login")
    back = dict(parse_qsl(location.query))
    assert back["state"] == fake.state
    assert set(back) == {"code", "state"}
    seen(server, back["code"])


# -- the token endpoint's rules -----------------------------------------------------------------


def test_code_replay_is_refused(server: CairnServer, http: httpx.Client, admin_token: str) -> None:
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    first = redeem(http, fake.token_form(code))
    tfe.expect(first, 200)
    body = first.json()
    assert body["token_type"] == "bearer"
    assert TOKEN_RE.match(body["access_token"])
    assert first.headers.get("cache-control") == "no-store"
    seen(server, code, body["access_token"])
    tfe.expect(account(server, body["access_token"]), 200)

    assert_invalid_grant(redeem(http, fake.token_form(code)))
    # Still refused a third time; the first token keeps working (a replay revokes nothing).
    assert_invalid_grant(redeem(http, fake.token_form(code)))
    tfe.expect(account(server, body["access_token"]), 200)


def test_wrong_pkce_verifier_burns_the_code(
    server: CairnServer, http: httpx.Client, admin_token: str
) -> None:
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    seen(server, code)
    before = audit_ids(server)
    other_verifier, _ = pkce_pair()
    assert_invalid_grant(redeem(http, fake.token_form(code, code_verifier=other_verifier)))
    # The right verifier comes too late: the failed attempt consumed the code.
    assert_invalid_grant(redeem(http, fake.token_form(code)))
    reasons = [e["details"]["reason"] for e in audit_events(server, "auth.login.token", before)]
    assert len(reasons) == 2
    assert "code_verifier" in reasons[0]
    assert "already used" in reasons[1]

    # The challenge itself is not a valid verifier either (a "plain" downgrade).
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    seen(server, code)
    assert_invalid_grant(redeem(http, fake.token_form(code, code_verifier=fake.challenge)))
    assert_invalid_grant(redeem(http, fake.token_form(code)))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"redirect_uri": "http://localhost:10006/login"}, id="other-port"),
        pytest.param({"redirect_uri": "http://127.0.0.1:10005/login"}, id="other-host"),
        pytest.param({"redirect_uri": "http://localhost:10005/callback"}, id="other-path"),
        pytest.param({"redirect_uri": None}, id="no-redirect-uri"),
        pytest.param({"client_id": "someone-else"}, id="other-client"),
        pytest.param({"client_id": None}, id="no-client"),
    ],
)
def test_code_bound_to_redirect_uri_and_client(
    server: CairnServer, http: httpx.Client, admin_token: str, overrides: dict[str, str | None]
) -> None:
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    seen(server, code)
    assert_invalid_grant(redeem(http, fake.token_form(code, **overrides)))
    assert_invalid_grant(redeem(http, fake.token_form(code)))  # and it is burnt


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        pytest.param({"grant_type": "password"}, 400, "unsupported_grant_type", id="password"),
        pytest.param({"grant_type": None}, 400, "unsupported_grant_type", id="no-grant-type"),
        pytest.param({"code_verifier": None}, 400, "invalid_request", id="no-verifier"),
        pytest.param({"code_verifier": "short"}, 400, "invalid_request", id="short-verifier"),
        pytest.param({"code": None}, 400, "invalid_request", id="no-code"),
        pytest.param({"code": "made-up-code"}, 400, "invalid_grant", id="unknown-code"),
    ],
)
def test_malformed_token_requests(
    http: httpx.Client, overrides: dict[str, str | None], status: int, error: str
) -> None:
    fake = FakeTerraform()
    response = redeem(http, fake.token_form("not-issued-" + secrets.token_urlsafe(8), **overrides))
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


# -- the authorization endpoint's rules ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"code_challenge_method": "plain"}, id="plain-pkce"),
        pytest.param({"code_challenge_method": None}, id="no-challenge-method"),
        pytest.param({"code_challenge": None}, id="no-challenge"),
        pytest.param({"code_challenge": "too-short"}, id="short-challenge"),
        pytest.param({"redirect_uri": "http://example.com:10005/login"}, id="non-loopback"),
        pytest.param({"redirect_uri": "http://10.0.0.1:10005/login"}, id="private-address"),
        pytest.param(
            {"redirect_uri": "http://localhost.example.com:10005/login"}, id="localhost-suffix"
        ),
        pytest.param({"redirect_uri": "https://localhost:10005/login"}, id="https-scheme"),
        pytest.param({"redirect_uri": "http://localhost:9999/login"}, id="port-9999"),
        pytest.param({"redirect_uri": "http://localhost:10011/login"}, id="port-10011"),
        pytest.param({"redirect_uri": "http://localhost/login"}, id="no-port"),
        pytest.param({"redirect_uri": "http://user:pw@localhost:10005/login"}, id="userinfo"),
        pytest.param({"redirect_uri": None}, id="no-redirect-uri"),
        pytest.param({"client_id": "evil"}, id="other-client"),
        pytest.param({"response_type": "token"}, id="implicit-grant"),
        pytest.param({"state": None}, id="no-state"),
    ],
)
def test_refused_authorization_requests_never_redirect(
    server: CairnServer, http: httpx.Client, admin_token: str, overrides: dict[str, str | None]
) -> None:
    """A bad request is a 400 page, for the GET and for the form POST with a valid token: no
    redirect (the redirect URI may be the problem) and no code issued."""
    params = FakeTerraform().params(**overrides)
    codes_before = sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0]
    for response in (
        http.get("/oauth/authorization", params=params),
        authorize(http, params, admin_token),
    ):
        assert response.status_code == 400, response.text
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert "Login refused" in response.text
        assert "<form" not in response.text
    assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes_before


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("cairn_" + "A" * 43, id="unknown-token"),
        pytest.param("", id="empty"),
        pytest.param("x" * 600, id="oversized"),
    ],
)
def test_wrong_token_in_the_form_is_a_401_page(
    server: CairnServer, http: httpx.Client, token: str
) -> None:
    fake = FakeTerraform()
    before = audit_ids(server)
    codes_before = sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0]
    response = authorize(http, fake.params(), token)
    assert response.status_code == 401, response.text
    assert "location" not in response.headers
    assert 'class="error"' in response.text
    _, hidden = form_fields(response.text)  # the form again, to try once more
    assert hidden == fake.params()
    assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes_before
    failures = audit_events(server, "auth.login.authorize", before)
    assert [(e["actor"], e["outcome"]) for e in failures] == [("unknown", "failure")]
    assert failures[0]["details"]["reason"] == "invalid token"
    assert failures[0]["source"] == "127.0.0.1"


def test_revoked_user_token_cannot_authorize(
    server: CairnServer, http: httpx.Client, admin_token: str
) -> None:
    """A token obtained through login, once revoked, cannot be used to log in again."""
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    ids_before = {r[0] for r in sql(server, "SELECT id FROM api_tokens")}
    token = redeem(http, fake.token_form(code)).json()["access_token"]
    seen(server, code, token)
    (token_id,) = {r[0] for r in sql(server, "SELECT id FROM api_tokens")} - ids_before
    with server.client(admin_token) as api:
        me = tfe.document(api.get("/api/v2/account/details"), 200)["data"]["id"]
        listed = tfe.document(api.get(f"/api/v2/users/{me}/authentication-tokens"), 200)
        assert token_id in {t["id"] for t in listed["data"]}
        tfe.expect(api.delete(f"/api/v2/authentication-tokens/{token_id}"), 204)
    assert account(server, token).status_code == 401
    assert authorize(http, FakeTerraform().params(), token).status_code == 401


# -- several replicas, no sticky sessions -------------------------------------------------------


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, admin_token: str, tmp_path: Path
) -> Iterator[list[CairnServer]]:
    """Two HTTPS servers (each with its own dev CA) on one PostgreSQL database."""
    cluster: PostgresCluster = request.getfixturevalue("pg")
    url = cluster.create_database("login")
    servers = [
        CairnServer(
            data_dir=tmp_path / f"replica-{i}",
            database_url=url,
            admin_token=admin_token,
            env={"CAIRN_SECRET_KEY": TEST_SECRET_KEY, "CAIRN_BLOB_STORE": "database"},
        )
        for i in range(2)
    ]
    try:
        for srv in servers:
            srv.start()
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.mark.postgres
def test_code_from_one_replica_redeemed_at_another(
    replicas: list[CairnServer], admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    a, b = replicas
    # Real Terraform logs in at A, but the "browser" is sent to B by the load balancer: B shows
    # the form and issues the code, A redeems it.
    cli = login_cli(tmp_path / "tf", a, provider_mirror)

    def browser(url: str) -> None:
        parts = urlsplit(url)
        with browser_client(b) as http:
            page = http.get(f"{parts.path}?{parts.query}")
            tfe.expect(page, 200)
            action, hidden = form_fields(page.text)
            answer = http.post(action, data={**hidden, "token": admin_token})
            tfe.expect(answer, 302)
        follow_to_loopback(answer.headers["location"])

    result = terraform_login(cli, a.hostname, browser)
    assert result.rc == 0, f"terraform login failed:\n{result.stdout}\n{result.stderr}"
    token = cli.stored_token(a.hostname)
    assert TOKEN_RE.match(token)
    for srv in (a, b):
        assert tfe.document(account(srv, token), 200)["data"]["attributes"]["username"] == "admin"

    # The other way round, and the code is single-use across replicas.
    fake = FakeTerraform(port=10003)
    with browser_client(a) as at_a, browser_client(b) as at_b:
        code = issue_code(at_a, fake, admin_token)
        first = redeem(at_b, fake.token_form(code))
        tfe.expect(first, 200)
        assert_invalid_grant(redeem(at_a, fake.token_form(code)))
        assert_invalid_grant(redeem(at_b, fake.token_form(code)))
    assert tfe.document(account(a, first.json()["access_token"]), 200)

    dump = database_dump(a)
    for secret in (token, first.json()["access_token"], code, admin_token):
        assert secret.encode() not in dump


# -- nothing in clear -----------------------------------------------------------------------------


def test_database_dump_and_log_hold_no_token_or_code(
    server: CairnServer, http: httpx.Client, admin_token: str
) -> None:
    """Runs last in the module: a fresh login plus every token and code the module saw."""
    fake = FakeTerraform()
    code = issue_code(http, fake, admin_token)
    token = redeem(http, fake.token_form(code)).json()["access_token"]
    unused_code = issue_code(http, FakeTerraform(), admin_token)  # issued, never redeemed
    seen(server, code, token, unused_code)
    secrets_seen = SEEN[server.url] | {admin_token}
    assert len(secrets_seen) >= 4

    # Stored as keyed hashes: the rows exist, their values are not the secrets.
    stored_codes = {r[0] for r in sql(server, "SELECT code_hash FROM oauth_codes")}
    stored_tokens = {r[0] for r in sql(server, "SELECT token_hash FROM api_tokens")}
    assert len(stored_codes) >= 2 and len(stored_tokens) >= 2
    assert not (stored_codes | stored_tokens) & secrets_seen

    dump = database_dump(server)
    assert b"oauth_codes" in dump and b"api_tokens" in dump  # the dump is a real one
    leaked = [s[:12] + "…" for s in secrets_seen if s.encode() in dump]
    assert not leaked, f"secrets in clear in the database: {leaked}"
    # Not even the random part of a token (a prefix-stripped copy would still be a secret).
    assert not [s for s in secrets_seen if s.startswith("cairn_") and s[6:].encode() in dump]

    log = server.log_path.read_bytes()
    leaked = [s[:12] + "…" for s in secrets_seen if s.encode() in log]
    assert not leaked, f"secrets in clear in the server log: {leaked}"
