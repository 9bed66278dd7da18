"""The GitLab token endpoint behaves like GitLab (runs-agents-vcs.md §3.2-3.3)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.concurrency import simultaneously
from tests.support.vcs.forge import Forge
from tests.support.vcs.gitlab_op import GitLabOp, OAuthApp

pytestmark = pytest.mark.e2e

INVALID_GRANT = "invalid_grant"


def _race(op: GitLabOp, app: OAuthApp, refresh_token: str, n: int = 10) -> list[httpx.Response]:
    return simultaneously([lambda: op.refresh(refresh_token, app) for _ in range(n)])


def test_authorization_code_flow_through_the_forge(forge: Forge, gitlab_op: GitLabOp) -> None:
    app = gitlab_op.add_client(redirect_uris=("http://127.0.0.1:9/cb",))
    query = urlencode(
        {
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uri,
            "response_type": "code",
            "scope": "api",
            "state": "xyz",
        }
    )
    callback = gitlab_op.authorize(f"{forge.gitlab_http_url}/oauth/authorize?{query}")
    assert callback["state"] == "xyz"
    form = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "redirect_uri": app.redirect_uri,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
    }
    resp = httpx.post(f"{forge.gitlab_http_url}/oauth/token", data=form, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in", "created_at"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 7200
    assert "id_token" not in body
    user = httpx.get(
        f"{forge.gitlab_api_url}/user",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert user.json()["username"] == "alice"
    # A code is good once.
    again = httpx.post(f"{forge.gitlab_http_url}/oauth/token", data=form, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == INVALID_GRANT
    assert gitlab_op.stats(app)["by_grant_type"] == {"authorization_code": 2}


def test_refresh_kills_the_old_pair_at_once(forge: Forge, gitlab_op: GitLabOp) -> None:
    app = gitlab_op.add_client()
    pair = gitlab_op.grant(app)
    resp = gitlab_op.refresh(pair["refresh_token"], app)
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["refresh_token"] != pair["refresh_token"]
    old_call = httpx.get(
        f"{forge.gitlab_api_url}/user",
        headers={"Authorization": f"Bearer {pair['access_token']}"},
        timeout=10,
    )
    assert old_call.status_code == 401
    assert old_call.json() == {
        "error": "invalid_token",
        "error_description": "Token was revoked. You have to re-authorize from the user.",
    }
    assert gitlab_op.check(new["access_token"])["active"] is True
    reuse = gitlab_op.refresh(pair["refresh_token"], app)
    assert reuse.status_code == 400 and reuse.json()["error"] == INVALID_GRANT
    assert gitlab_op.check(new["access_token"])["active"] is True  # GitLab-like: no revocation


def test_ten_concurrent_refreshes_one_winner(gitlab_op: GitLabOp) -> None:
    app = gitlab_op.add_client()
    pair = gitlab_op.grant(app)
    gitlab_op.set_delay(50)
    try:
        results = _race(gitlab_op, app, pair["refresh_token"])
    finally:
        gitlab_op.set_delay(0)
    winners = [r for r in results if r.status_code == 200]
    losers = [r for r in results if r.status_code != 200]
    assert len(winners) == 1 and len(losers) == 9
    assert all(r.status_code == 400 and r.json()["error"] == INVALID_GRANT for r in losers)
    won = winners[0].json()
    assert gitlab_op.check(won["access_token"])["active"] is True
    follow = gitlab_op.refresh(won["refresh_token"], app)
    assert follow.status_code == 200, follow.text
    stats = gitlab_op.stats(app)
    assert stats["by_grant_type"] == {"refresh_token": 11}
    assert stats["ok"] == 2 and stats["invalid_grant"] == 9


def test_strict_replay_revokes_the_grant(gitlab_op_strict: GitLabOp) -> None:
    op = gitlab_op_strict
    app = op.add_client()
    pair = op.grant(app)
    results = _race(op, app, pair["refresh_token"])
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1
    assert sum(r.json()["error"] == INVALID_GRANT for r in results if r.status_code == 400) == 9
    won = winners[0].json()
    assert op.check(won["access_token"]) == {"active": False, "reason": "revoked"}
    after = op.refresh(won["refresh_token"], app)
    assert after.status_code == 400 and after.json()["error"] == INVALID_GRANT


def test_strict_single_refresh_keeps_working(gitlab_op_strict: GitLabOp) -> None:
    app = gitlab_op_strict.add_client()
    pair = gitlab_op_strict.grant(app)
    first = gitlab_op_strict.refresh(pair["refresh_token"], app)
    assert first.status_code == 200
    second = gitlab_op_strict.refresh(first.json()["refresh_token"], app)
    assert second.status_code == 200
    assert gitlab_op_strict.check(second.json()["access_token"])["active"] is True


def test_client_authentication(gitlab_op: GitLabOp) -> None:
    app = gitlab_op.add_client()
    pair = gitlab_op.grant(app)
    basic = httpx.post(
        gitlab_op.token_url,
        data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        auth=(app.client_id, app.client_secret),
        timeout=10,
    )
    assert basic.status_code == 200, basic.text
    wrong = httpx.post(
        gitlab_op.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": basic.json()["refresh_token"],
            "client_id": app.client_id,
            "client_secret": "nope",
        },
        timeout=10,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_failure_switches(gitlab_op_factory: object, forge_factory: object) -> None:
    assert callable(gitlab_op_factory) and callable(forge_factory)
    op: GitLabOp = gitlab_op_factory(access_ttl=60)
    pair = op.grant()
    assert pair["expires_in"] == 60
    op.fail_next(1, "500")
    failed = op.refresh(pair["refresh_token"])
    assert failed.status_code == 500
    ok = op.refresh(pair["refresh_token"])  # not processed: the refresh token still works
    assert ok.status_code == 200, ok.text
    op.fail_next(1, "lost")
    lost = op.refresh(ok.json()["refresh_token"])
    assert lost.status_code == 500
    gone = op.refresh(ok.json()["refresh_token"])  # it was processed: rotated away
    assert gone.status_code == 400 and gone.json()["error"] == INVALID_GRANT
    op.fail_next(1, "hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(op.token_url, data={"grant_type": "refresh_token"}, timeout=0.5)
    op.set_access_ttl(1)
    fresh = op.grant()
    assert fresh["expires_in"] == 1
    own_forge: Forge = forge_factory(op)
    time.sleep(1.2)  # let the access token expire
    expired = httpx.get(
        f"{own_forge.gitlab_api_url}/user",
        headers={"Authorization": f"Bearer {fresh['access_token']}"},
        timeout=10,
    )
    assert expired.status_code == 401
    assert expired.json()["error_description"].startswith("Token is expired.")
    renewed = op.refresh(fresh["refresh_token"])  # GitLab refreshes after expiry
    assert renewed.status_code == 200, renewed.text
    op.revoke_all()
    assert op.check(renewed.json()["access_token"]) == {"active": False, "reason": "revoked"}
    assert op.stats()["token_posts"] == 6
