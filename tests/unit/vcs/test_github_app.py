"""GitHub App installation tokens: the App JWT the rig's forge verifies (RS256 with the App's
key), one mint per window shared by every caller, re-minted when 5 minutes or less remain."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from cairn.vcs.github_app import GitHubApp, app_jwt, list_installations, mint_installation_token
from cairn.vcs.oauth import TokenEndpointError
from cairn.vcs.tokens import ForgeError
from tests.support.app import InProcessCairn
from tests.support.vcs.forge import Forge
from tests.unit.vcs import support
from tests.unit.vcs.support import row, vcs_tokens


def test_app_jwt_claims(forge: Forge) -> None:
    app = forge.add_github_app()
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    token = app_jwt(GitHubApp(app.app_id, forge.github_api_url, app.private_key_pem), now=now)
    claims = jwt.decode(
        token, app.public_key_pem, algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == app.app_id
    assert claims["iat"] == int(now.timestamp()) - 60
    assert claims["exp"] == int(now.timestamp()) + 9 * 60


def test_list_and_mint(forge: Forge) -> None:
    app = forge.add_github_app()
    first = forge.add_installation(app, account="acme", repos=("acme/x",))
    second = forge.add_installation(app, account="bob")
    gh = GitHubApp(app.app_id, forge.github_api_url, app.private_key_pem)
    found = {(i.id, i.account) for i in list_installations(gh)}
    assert found == {(first, "acme"), (second, "bob")}
    token, expires_at = mint_installation_token(gh, first)
    assert [t.token for t in forge.installation_tokens(first)] == [token]
    assert timedelta(minutes=55) < expires_at - datetime.now(UTC) <= timedelta(hours=1)
    assert token not in repr(gh)

    stranger = forge.add_github_app()  # another App's key: GitHub refuses the JWT
    forged = GitHubApp(app.app_id, forge.github_api_url, stranger.private_key_pem)
    with pytest.raises(TokenEndpointError):
        mint_installation_token(forged, first)
    with pytest.raises(TokenEndpointError, match="not an RSA key"):
        app_jwt(GitHubApp(app.app_id, forge.github_api_url, "not a key"))


def _installation_token(
    app: InProcessCairn, forge: Forge, *, key: str | None = None
) -> tuple[str, int]:
    gh = forge.add_github_app()
    inst = forge.add_installation(gh, account="acme")
    org = support.new_org(app)
    cid = support.connection(
        app,
        org,
        kind="github_app",
        http_url=forge.url,
        api_url=forge.github_api_url,
        app_id=gh.app_id,
        app_key=key or gh.private_key_pem,
    )
    tid = support.token(
        app, cid, org, access="", refresh=None, expires_at=None, installation_id=inst
    )
    return tid, inst


def test_one_mint_per_window_across_threads(app: InProcessCairn, forge: Forge) -> None:
    tid, inst = _installation_token(app, forge)
    tokens = vcs_tokens(app)
    got: list[str] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        got.append(tokens.credential(tid).token)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 20 and len(set(got)) == 1
    assert [t.token for t in forge.installation_tokens(inst)] == got[:1]

    # Within the window: the same token. Four minutes before its expiry: a new one.
    expires_at = row(app, tid).expires_at
    assert expires_at is not None
    app.advance(expires_at - app.clock.now() - timedelta(minutes=6))
    assert tokens.credential(tid).token == got[0]
    app.advance(timedelta(minutes=2))
    fresh = tokens.credential(tid).token
    assert fresh != got[0]
    assert len(forge.installation_tokens(inst)) == 2
    assert row(app, tid).generation == 2


def test_a_refused_app_key_is_an_error_not_a_loop(app: InProcessCairn, forge: Forge) -> None:
    stranger = forge.add_github_app()
    tid, inst = _installation_token(app, forge, key=stranger.private_key_pem)
    tokens = vcs_tokens(app)
    with pytest.raises(ForgeError, match="GitHub refused"):
        tokens.credential(tid)
    assert forge.installation_tokens(inst) == []
    assert row(app, tid).lease_holder is None and row(app, tid).status == "ok"
