"""`terraform login` through the team's IdP: the real Terraform 1.0.3 CLI, cairn federated to a
real OpenID Provider (panva's oidc-provider on node, `tests/support/oidc_op.py`).

With CAIRN_OIDC_ISSUER / _CLIENT_ID / _CLIENT_SECRET set, cairn's `/oauth/authorization` sends
the browser to the IdP (302) and `/auth/oidc/callback` finishes the login there: the user is
found or created by (issuer, sub), their team memberships follow the IdP's `groups` claim, and
the browser goes on to Terraform's loopback listener with a code. The tests play the browser:
GET the URL Terraform prints at cairn, let the OP log the user in (`op.authorize`), GET cairn's
callback with the OP's answer, follow the 302 to the loopback listener.

Every cairn server here has its own OP: the OP's redirect URI is cairn's callback, so cairn's
port is chosen first. Servers are not shared between scenarios that force a JWKS refresh,
because a refresh forced by an unknown `kid` starts a 60 s cooldown (RP-05) in that process.

Covered: the login itself (token works, user row, audit), an IdP key rotation between the
login click and the callback (`kid_refresh: recovered`), IdP groups mapped to teams and synced
at every login (a token is not a frozen copy of the groups), a replayed or forged callback, 200
made-up callbacks at once (no JWKS fetch), the IdP's JWKS endpoint failing (known key: fine;
new key: 503, `fetch-failed`), replicas on PostgreSQL (login started at one, callback at the
other), and neither the database nor the log holding a token, code, secret, state or nonce.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.e2e.test_terraform_login import (
    TOKEN_RE,
    FakeTerraform,
    account,
    audit_events,
    audit_ids,
    browser_client,
    database_dump,
    follow_to_loopback,
    login_cli,
    redeem,
    sql,
    terraform_login,
)
from tests.support import api as tfe
from tests.support import processes
from tests.support.oidc_op import OidcOp, OidcOpUnavailable, check_installed, start_oidc_op
from tests.support.postgres import PostgresCluster
from tests.support.processes import free_port
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

IDP_ACTION = "auth.login.idp"


# -- cairn + its IdP --------------------------------------------------------------------------


@dataclass
class Federation:
    """A cairn server (or replicas) logging people in at one running OP."""

    server: CairnServer
    op: OidcOp
    log_dir: Path
    replicas: list[CairnServer] = field(default_factory=list)
    # Every secret the tests saw go through this federation: the dump/log checks look for them.
    seen: set[str] = field(default_factory=set)

    def keep(self, *values: str | None) -> None:
        self.seen.update(v for v in values if v)

    def restart_op(self, **changes: Any) -> None:
        """Stop the OP and start it again on the same issuer URL with the same client and
        secret (cairn keeps running), e.g. with other `user_groups`. The new process signs
        with a new key."""
        old = self.op
        port = urlsplit(old.issuer).port
        assert port is not None
        old.stop()
        kwargs: dict[str, Any] = {
            "redirect_uris": old.redirect_uris,
            "client_id": old.client_id,
            "user_sub": old.user_sub,
            "user_email": old.user_email,
            "user_groups": old.user_groups,
            **changes,
        }
        # start_oidc_op picks a free port and a fresh secret itself: hand it the old ones.
        secret_tail = old.client_secret.removeprefix("op-secret-")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(processes, "free_port", lambda host="127.0.0.1": port)
            mp.setattr(secrets, "token_urlsafe", lambda nbytes=None: secret_tail)
            self.op = start_oidc_op(self.log_dir, **kwargs)
        assert (self.op.issuer, self.op.client_secret) == (old.issuer, old.client_secret)


def require_op() -> None:
    """Skip without node or the npm package, except in CI (`make test` installs them)."""
    try:
        check_installed()
    except OidcOpUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {exc}", pytrace=False)
        pytest.skip(str(exc))


def idp_env(op: OidcOp) -> dict[str, str]:
    return {
        "CAIRN_OIDC_ISSUER": op.issuer,
        "CAIRN_OIDC_CLIENT_ID": op.client_id,
        "CAIRN_OIDC_CLIENT_SECRET": op.client_secret,
    }


@pytest.fixture(scope="module")
def federate(
    admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Federation]]:
    """Start a SQLite cairn server federated to its own OP; everything stops at teardown."""
    require_op()
    started: list[Federation] = []

    def make(name: str, **op_kwargs: Any) -> Federation:
        root = tmp_path_factory.mktemp(f"idp-{name}")
        port = free_port()
        op = start_oidc_op(
            root / "op", redirect_uris=[f"https://localhost:{port}/auth/oidc/callback"], **op_kwargs
        )
        fed = Federation(
            CairnServer(
                data_dir=root / "cairn",
                admin_token=admin_token,
                port=port,
                env=idp_env(op),
            ),
            op,
            root / "op",
        )
        started.append(fed)
        fed.server.start()
        fed.keep(op.client_secret, admin_token)
        return fed

    try:
        yield make
    finally:
        for fed in started:
            for srv in [fed.server, *fed.replicas]:
                srv.stop()
            fed.op.stop()


@pytest.fixture(scope="module")
def main(federate: Callable[..., Federation]) -> Federation:
    """The module's main server: the terraform logins, replays and the storm; its database
    is dumped by the last test."""
    return federate("main")


# -- the browser ------------------------------------------------------------------------------


@dataclass
class LoginTrace:
    """What the browser saw during one login."""

    idp_url: str = ""  # where cairn sent the browser (the OP's authorization endpoint)
    idp_params: dict[str, str] = field(default_factory=dict)
    callback: dict[str, str] = field(default_factory=dict)  # the OP's answer (code, state, iss)
    callback_response: httpx.Response | None = None
    loopback: str = ""  # cairn's 302 to Terraform's listener
    code: str = ""  # cairn's code for Terraform

    def secrets(self) -> list[str]:
        return [
            self.idp_params.get("state", ""),
            self.idp_params.get("nonce", ""),
            self.callback.get("code", ""),
            self.callback.get("state", ""),
            self.code,
        ]


def start_at_cairn(server: CairnServer, url: str, op: OidcOp, trace: LoginTrace) -> None:
    """GET cairn's authorization URL: a 302 to the OP, carrying a fresh state and nonce."""
    with browser_client(server) as http:
        answer = http.get(url)
    tfe.expect(answer, 302)
    assert answer.headers.get("cache-control") == "no-store"
    trace.idp_url = answer.headers["location"]
    assert trace.idp_url.startswith(op.issuer + "/auth?"), trace.idp_url
    trace.idp_params = dict(parse_qsl(urlsplit(trace.idp_url).query))
    params = trace.idp_params
    assert params["client_id"] == op.client_id
    assert params["redirect_uri"] in op.redirect_uris
    assert params["code_challenge_method"] == "S256"
    assert "openid" in params["scope"].split()
    assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
    # cairn's own parameters for Terraform never reach the IdP.
    assert "code_challenge" in params and params["code_challenge"] not in url


def callback(server: CairnServer, query: dict[str, str]) -> httpx.Response:
    with browser_client(server) as http:
        return http.get("/auth/oidc/callback", params=query)


def finish_at_cairn(server: CairnServer, trace: LoginTrace, redirect_uri: str) -> None:
    """GET cairn's callback with the OP's answer: a 302 to Terraform's loopback listener."""
    response = callback(server, trace.callback)
    trace.callback_response = response
    tfe.expect(response, 302)
    trace.loopback = response.headers["location"]
    assert trace.loopback.startswith(redirect_uri + "?"), trace.loopback
    back = dict(parse_qsl(urlsplit(trace.loopback).query))
    trace.code = back["code"]


def idp_browser(
    fed: Federation,
    trace: LoginTrace,
    *,
    callback_at: CairnServer | None = None,
    before_idp: Callable[[], None] | None = None,
) -> Callable[[str], None]:
    """The browser for `terraform_login`: cairn → OP → cairn's callback → loopback."""

    def browse(url: str) -> None:
        query = dict(parse_qsl(urlsplit(url).query))
        start_at_cairn(fed.server, url, fed.op, trace)
        if before_idp is not None:
            before_idp()
        trace.callback = fed.op.authorize(trace.idp_url)
        finish_at_cairn(callback_at or fed.server, trace, query["redirect_uri"])
        assert dict(parse_qsl(urlsplit(trace.loopback).query))["state"] == query["state"]
        fed.keep(*trace.secrets())
        follow_to_loopback(trace.loopback)

    return browse


def real_login(
    fed: Federation,
    root: Path,
    mirror: Path,
    *,
    callback_at: CairnServer | None = None,
    before_idp: Callable[[], None] | None = None,
) -> tuple[str, LoginTrace]:
    """The real `terraform login` through the IdP; returns the token Terraform stored."""
    trace = LoginTrace()
    cli = login_cli(root, fed.server, mirror)
    browse = idp_browser(fed, trace, callback_at=callback_at, before_idp=before_idp)
    result = terraform_login(cli, fed.server.hostname, browse)
    assert result.rc == 0, f"terraform login failed:\n{result.stdout}\n{result.stderr}"
    assert "Success! Terraform has obtained and saved an API token." in result.stdout
    token = cli.stored_token(fed.server.hostname)
    assert TOKEN_RE.match(token), token
    fed.keep(token)
    return token, trace


def begin(fed: Federation, fake: FakeTerraform) -> LoginTrace:
    """Terraform's side played by the test: start a login at cairn, log in at the OP, and keep
    the OP's answer without delivering it."""
    trace = LoginTrace()
    with browser_client(fed.server) as http:
        url = str(http.build_request("GET", "/oauth/authorization", params=fake.params()).url)
    start_at_cairn(fed.server, url, fed.op, trace)
    trace.callback = fed.op.authorize(trace.idp_url)
    fed.keep(*trace.secrets())
    return trace


def fake_login(fed: Federation) -> str:
    """A whole login without the Terraform binary; returns the new API token."""
    fake = FakeTerraform()
    trace = begin(fed, fake)
    finish_at_cairn(fed.server, trace, fake.redirect_uri)
    fed.keep(trace.code)
    with browser_client(fed.server) as http:
        answer = tfe.expect(redeem(http, fake.token_form(trace.code)), 200)
    token: str = answer.json()["access_token"]
    fed.keep(token)
    return token


def assert_refused_page(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers.get("cache-control") == "no-store"
    assert "Login refused" in response.text
    for phrase in phrases:
        assert phrase in response.text, response.text


def idp_events(server: CairnServer, since: frozenset[str]) -> list[dict[str, Any]]:
    return audit_events(server, IDP_ACTION, since)


# -- 1. the real terraform login ---------------------------------------------------------------


def test_terraform_login_through_the_idp(
    main: Federation, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    """Real `terraform login` → cairn → the OP → cairn's callback → Terraform's listener: exit
    0, a token for the IdP's user (found by issuer + sub), the login in the audit log; an
    invitation of the IdP user's email, sent before their first login, is taken up by it."""
    server, op = main.server, main.op
    before = audit_ids(server)
    with server.client(admin_token) as api:
        invited_org = tfe.create_organization(api, tfe.unique_name("invited"))
        team = tfe.document(
            api.post(
                f"/api/v2/organizations/{invited_org}/teams",
                json={"data": {"type": "teams", "attributes": {"name": "devs"}}},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )["data"]["id"]
        invitation = {
            "type": "organization-memberships",
            "attributes": {"email": op.user_email},
            "relationships": {"teams": {"data": [{"type": "teams", "id": team}]}},
        }
        tfe.document(
            api.post(
                f"/api/v2/organizations/{invited_org}/organization-memberships",
                json={"data": invitation},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )

    token, trace = real_login(main, tmp_path, provider_mirror)

    assert trace.callback["iss"] == op.issuer  # RFC 9207 parameter, checked by cairn
    me = tfe.document(account(server, token), 200)["data"]
    # oidc-provider sends no preferred_username: the name is the email's local part.
    assert me["attributes"]["username"] == "alice"
    rows = sql(
        server,
        "SELECT id, username, email, idp_issuer, idp_subject, last_login_at, is_site_admin "
        "FROM users WHERE idp_subject IS NOT NULL",
    )
    assert [r[:5] for r in rows] == [(me["id"], "alice", op.user_email, op.issuer, op.user_sub)]
    assert rows[0][5] is not None and not rows[0][6]
    # The IdP's user is not the admin: the admin's organizations stay invisible.
    with server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("admins-only"))
    with server.client(token) as api:
        assert api.get(f"/api/v2/organizations/{org}").status_code == 404
        # The invitation was taken up at the first login: alice is in its team.
        [mine] = tfe.document(api.get("/api/v2/organization-memberships"), 200)["data"]
        assert mine["attributes"]["status"] == "active"
        assert mine["relationships"]["organization"]["data"]["id"] == invited_org
        assert mine["relationships"]["teams"]["data"] == [{"type": "teams", "id": team}]
    accepted = audit_events(server, "org.member.accept", before)
    assert [(e["actor"], e["subject"]) for e in accepted] == [("alice", f"{invited_org}/alice")]

    [event] = idp_events(server, before)
    assert (event["outcome"], event["subject"], event["actor"]) == (
        "success",
        op.user_sub,
        op.user_email,
    )
    assert event["details"]["issuer"] == op.issuer
    assert event["details"]["groups"] == list(op.user_groups)
    assert "kid_refresh" not in event["details"]  # a cold cache is not a rotation
    authorized = audit_events(server, "auth.login.authorize", before)
    assert [(e["actor"], e["subject"]) for e in authorized] == [
        ("alice", "terraform login (identity provider)")
    ]
    created = [
        e
        for e in audit_events(server, "token.create", before)
        if e["details"].get("via") == "terraform login"
    ]
    assert [e["actor"] for e in created] == ["alice"]

    # The same person logging in again is the same user, not "alice-1a2b".
    again = fake_login(main)
    assert tfe.document(account(server, again), 200)["data"]["id"] == me["id"]
    assert len(sql(server, "SELECT id FROM users WHERE idp_subject IS NOT NULL")) == 1


# -- 2. the IdP rotates its key mid-login ----------------------------------------------------------


def test_idp_key_rotation_between_login_start_and_callback(
    main: Federation, tmp_path: Path, provider_mirror: Path
) -> None:
    server, op = main.server, main.op
    fake_login(main)  # the JWKS cache holds the OP's current key
    old_kid = op.signing_kid()
    fetches = op.jwks_requests()
    before = audit_ids(server)
    rotated: list[str] = []

    token, _ = real_login(
        main, tmp_path, provider_mirror, before_idp=lambda: rotated.append(op.rotate())
    )

    assert rotated and rotated[0] != old_kid
    assert tfe.document(account(server, token), 200)["data"]["attributes"]["username"] == "alice"
    [event] = idp_events(server, before)
    assert event["outcome"] == "success"
    assert event["details"]["kid"] == rotated[0]
    assert event["details"]["kid_refresh"] == "recovered"
    assert op.jwks_requests() == fetches + 1  # exactly the one forced refresh

    # The next login uses the refreshed set: no fetch, no "recovered".
    before = audit_ids(server)
    fake_login(main)
    assert op.jwks_requests() == fetches + 1
    [event] = idp_events(server, before)
    assert event["outcome"] == "success" and "kid_refresh" not in event["details"]


# -- 3. IdP groups → teams, synced at every login -------------------------------------------


def test_idp_groups_map_to_teams_and_leaving_a_group_revokes_access(
    federate: Callable[..., Federation], admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    fed = federate("groups", user_groups=("platform", "readers"))
    server = fed.server
    with server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("idp-groups"))
        team = tfe.document(
            api.post(
                f"/api/v2/organizations/{org}/teams",
                json={
                    "data": {
                        "type": "teams",
                        "attributes": {"name": "platform-team", "sso-team-id": "platform"},
                    }
                },
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )["data"]
        assert team["attributes"]["sso-team-id"] == "platform"
        tfe.document(
            api.post(
                f"/api/cairn/v1/organizations/{org}/grants",
                json={"team": "platform-team", "role": "write", "workspaces": "app-*"},
            ),
            201,
        )
        app = tfe.create_workspace(api, org, "app-1")
        other = tfe.create_workspace(api, org, "other")

    def members() -> list[str]:
        with server.client(admin_token) as api:
            doc = tfe.document(api.get(f"/api/v2/teams/{team['id']}"), 200)["data"]
        return [u["id"] for u in doc["relationships"]["users"]["data"]]

    assert members() == []
    token, _ = real_login(fed, tmp_path / "first", provider_mirror)
    me = tfe.document(account(server, token), 200)["data"]["id"]
    assert members() == [me]
    with server.client(token) as api:
        assert api.get(f"/api/v2/workspaces/{app}").status_code == 200
        assert api.get(f"/api/v2/workspaces/{other}").status_code == 404
        assert api.get(f"/api/v2/organizations/{org}/workspaces/other").status_code == 404
        assert tfe.workspace_action(api, app, "lock").status_code == 200
        assert tfe.workspace_action(api, app, "unlock").status_code == 200
        assert tfe.workspace_action(api, other, "lock", 404).status_code == 404

    # The IdP drops alice from "platform" (a restarted OP: same issuer, new signing key).
    fed.restart_op(user_groups=("readers",))
    before = audit_ids(server)
    second = fake_login(fed)

    assert tfe.document(account(server, second), 200)["data"]["id"] == me
    assert members() == []
    [event] = idp_events(server, before)
    assert event["details"]["groups"] == ["readers"]
    assert event["details"]["kid_refresh"] == "recovered"  # the restarted OP's new key
    # No group is frozen into a token: the FIRST token loses the access at once, as does the new.
    for tok in (token, second):
        with server.client(tok) as api:
            assert api.get(f"/api/v2/workspaces/{app}").status_code == 404
            assert tfe.workspace_action(api, app, "lock", 404).status_code == 404
        tfe.expect(account(server, tok), 200)  # the tokens themselves still authenticate
    with server.client(admin_token) as api:
        assert tfe.read_workspace(api, org, "app-1")["attributes"]["locked"] is False


# -- 4. replay, forgery, a storm, a JWKS outage ---------------------------------------------------


def test_replayed_callback_is_a_400_page(main: Federation) -> None:
    server = main.server
    fake = FakeTerraform()
    trace = begin(main, fake)
    finish_at_cairn(server, trace, fake.redirect_uri)
    main.keep(trace.code)
    before = audit_ids(server)

    replay = callback(server, trace.callback)

    assert_refused_page(replay, 400, "already completed")
    [event] = idp_events(server, before)
    assert (event["outcome"], event["details"]["reason"]) == ("failure", "replayed")
    # The first delivery's code still works, once.
    with browser_client(server) as http:
        token = tfe.expect(redeem(http, fake.token_form(trace.code)), 200).json()["access_token"]
        assert redeem(http, fake.token_form(trace.code)).status_code == 400
    main.keep(token)
    tfe.expect(account(server, token), 200)


def test_forged_state_is_a_400_page_and_burns_nothing(main: Federation) -> None:
    server = main.server
    fake = FakeTerraform()
    trace = begin(main, fake)
    codes = sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0]

    forged = callback(server, {**trace.callback, "state": secrets.token_urlsafe(32)})
    assert_refused_page(forged, 400, "unknown or too old")
    missing = callback(server, {k: v for k, v in trace.callback.items() if k != "state"})
    assert_refused_page(missing, 400, "no &#x27;state&#x27;")
    assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes

    # Another login's state with this login's code: the OP refuses the code (PKCE and the
    # code's binding), and that other login is spent.
    other = begin(main, FakeTerraform())
    mixed = callback(server, {**trace.callback, "state": other.callback["state"]})
    assert_refused_page(mixed, 400)
    assert_refused_page(callback(server, other.callback), 400, "already completed")
    assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes

    # The genuine callback was never consumed by the forgeries.
    finish_at_cairn(server, trace, fake.redirect_uri)
    main.keep(trace.code)


def test_callback_storm_with_made_up_states_fetches_no_keys(main: Federation) -> None:
    server, op = main.server, main.op
    fake_login(main)  # warm
    fetches = op.jwks_requests()
    codes = sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0]

    async def storm() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=server.url,
            verify=server.ssl_context(),
            trust_env=False,
            timeout=60.0,
            limits=limits,
        ) as http:
            return await asyncio.gather(
                *(
                    http.get(
                        "/auth/oidc/callback",
                        params={
                            "code": secrets.token_urlsafe(32),
                            "state": secrets.token_urlsafe(32),
                            "iss": op.issuer,
                        },
                    )
                    for _ in range(200)
                )
            )

    responses = asyncio.run(storm())

    assert sorted({r.status_code for r in responses}) == [400]
    assert all("Login refused" in r.text and "location" not in r.headers for r in responses)
    assert op.jwks_requests() == fetches
    assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes
    fake_login(main)  # and real people still log in
    assert op.jwks_requests() == fetches


def test_idp_jwks_outage(federate: Callable[..., Federation]) -> None:
    """The IdP's JWKS endpoint fails: a token signed with a key cairn already has still logs
    in; one signed with a new key (the IdP rotated during the outage) is a clear 503 page, and
    the audit log says the refresh failed (not "forged")."""
    fed = federate("jwks-outage")
    server, op = fed.server, fed.op
    fake_login(fed)  # warm-up: the one JWKS fetch
    fetches = op.jwks_requests()
    op.fail_jwks(True)
    try:
        token = fake_login(fed)
        tfe.expect(account(server, token), 200)
        assert op.jwks_requests() == fetches  # the cached set was enough

        fake = FakeTerraform()
        before = audit_ids(server)
        trace = LoginTrace()
        with browser_client(server) as http:
            url = str(http.build_request("GET", "/oauth/authorization", params=fake.params()).url)
        start_at_cairn(server, url, op, trace)
        new_kid = op.rotate()
        trace.callback = op.authorize(trace.idp_url)
        fed.keep(*trace.secrets())
        codes = sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0]

        answer = callback(server, trace.callback)

        assert_refused_page(answer, 503, "JWKS")
        assert op.jwks_requests() == fetches + 1  # one refresh was tried, not a retry loop
        assert sql(server, "SELECT COUNT(*) FROM oauth_codes")[0][0] == codes
    finally:
        op.fail_jwks(False)
    [event] = idp_events(server, before)
    assert event["outcome"] == "failure"
    assert event["details"]["kid"] == new_kid
    assert event["details"]["kid_refresh"] == "fetch-failed"
    assert event["details"]["reason"] == "jwks-unavailable"


# -- replicas on PostgreSQL -----------------------------------------------------------------------


@pytest.mark.postgres
def test_login_started_at_one_replica_finished_at_another(
    request: pytest.FixtureRequest,
    admin_token: str,
    tmp_path: Path,
    provider_mirror: Path,
) -> None:
    """No sticky sessions: Terraform and the browser start at replica A, the load balancer
    delivers the IdP's callback to replica B, Terraform redeems the code at A."""
    require_op()
    cluster: PostgresCluster = request.getfixturevalue("pg")
    url = cluster.create_database("idp_login")
    port_a, port_b = free_port(), free_port()
    public = f"https://localhost:{port_a}"  # the balancer's address: A's, as it happens
    op = start_oidc_op(tmp_path / "op", redirect_uris=[f"{public}/auth/oidc/callback"])
    replicas = [
        CairnServer(
            data_dir=tmp_path / f"replica-{i}",
            database_url=url,
            admin_token=admin_token,
            port=port,
            env={
                **idp_env(op),
                "CAIRN_SECRET_KEY": TEST_SECRET_KEY,
                "CAIRN_BLOB_STORE": "database",
            },
            extra_args=("--public-url", public),
        )
        for i, port in enumerate((port_a, port_b))
    ]
    fed = Federation(replicas[0], op, tmp_path / "op", replicas=replicas)
    fed.keep(op.client_secret, admin_token)
    try:
        for srv in replicas:
            srv.start()
        a, b = replicas
        before = audit_ids(a)

        token, trace = real_login(fed, tmp_path / "tf", provider_mirror, callback_at=b)

        for srv in (a, b):
            me = tfe.document(account(srv, token), 200)["data"]
            assert me["attributes"]["username"] == "alice"
        rows = sql(
            a,
            "SELECT username, idp_issuer, idp_subject FROM users WHERE idp_subject = ?",
            op.user_sub,
        )
        assert rows == [("alice", op.issuer, op.user_sub)]
        [event] = idp_events(a, before)
        assert event["outcome"] == "success"
        # The state is single-use across replicas: the same callback at A is a replay.
        assert_refused_page(callback(a, trace.callback), 400, "already completed")

        dump = database_dump(a)
        leaked = [s[:10] + "…" for s in fed.seen if s.encode() in dump]
        assert not leaked, f"secrets in clear in the database: {leaked}"
    finally:
        for srv in replicas:
            srv.stop()
        op.stop()


def test_idp_login_events_carry_the_source_address(main: Federation) -> None:
    """Issue 4 item 5: every audit event has a source address (the other login events do)."""
    server = main.server
    before = audit_ids(server)
    fake = FakeTerraform()
    trace = begin(main, fake)
    finish_at_cairn(server, trace, fake.redirect_uri)
    main.keep(trace.code)
    callback(server, trace.callback)  # a replay: a failure event
    authorized = audit_events(server, "auth.login.authorize", before)
    assert [e["source"] for e in authorized] == ["127.0.0.1"]
    events = idp_events(server, before)
    assert [e["outcome"] for e in events] == ["success", "failure"]
    assert [e["source"] for e in events] == ["127.0.0.1", "127.0.0.1"]


# -- 5. nothing in clear (runs last for `main`) ----------------------------------------------------


def test_database_dump_and_log_hold_no_login_secret(main: Federation) -> None:
    server = main.server
    seen = main.seen
    # Tokens, cairn's codes, the OP's codes, states and nonces, the client secret, the admin's.
    assert len(seen) >= 20
    assert main.op.client_secret in seen
    stored = {
        r[0]
        for r in sql(server, "SELECT state_hash FROM login_states")
        + sql(server, "SELECT nonce_hash FROM login_states")
        + sql(server, "SELECT token_hash FROM api_tokens")
        + sql(server, "SELECT code_hash FROM oauth_codes")
    }
    assert len(stored) >= 20 and not stored & seen

    dump = database_dump(server)
    assert b"login_states" in dump and b"oauth_codes" in dump and b"api_tokens" in dump
    leaked = [s[:10] + "…" for s in seen if s.encode() in dump]
    assert not leaked, f"secrets in clear in the database: {leaked}"
    leaked = [s[:10] + "…" for s in seen if s.startswith("cairn_") and s[6:].encode() in dump]
    assert not leaked, f"token bodies in clear in the database: {leaked}"

    log = server.log_path.read_bytes()
    leaked = [s[:10] + "…" for s in seen if s.encode() in log]
    assert not leaked, f"secrets in clear in the server log: {leaked}"
