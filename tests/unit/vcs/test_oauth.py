"""The token endpoint client: one POST per call, errors classified, expiry computed, nothing
secret in messages. Against the rig's GitLab token endpoint, and ``httpx.MockTransport`` for
answers the rig does not give (no ``expires_in``, GitHub's 200-with-error)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cairn.vcs import oauth
from cairn.vcs.oauth import (
    ClientRejected,
    ForgeUnreachable,
    GrantInvalid,
    OAuthClientSecrets,
    TokenEndpointError,
)
from tests.support.vcs.gitlab_op import GitLabOp

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _secrets(op: GitLabOp) -> tuple[OAuthClientSecrets, object]:
    client = op.add_client()
    return (
        OAuthClientSecrets("gitlab_oauth", op.url, client.client_id, client.client_secret),
        client,
    )


def test_exchange_then_refresh(gitlab_op: GitLabOp) -> None:
    creds, client = _secrets(gitlab_op)
    redirect = gitlab_op.client.redirect_uri
    url = (
        f"{oauth.authorize_url('gitlab_oauth', gitlab_op.url)}?response_type=code"
        f"&client_id={creds.client_id}&redirect_uri={redirect}&scope=api&state=s1"
    )
    code = gitlab_op.authorize(url)["code"]
    pair = oauth.exchange_code(creds, code, redirect, now=NOW)
    assert pair.refresh_token and pair.expires_at == NOW + timedelta(seconds=7200)
    assert gitlab_op.check(pair.access_token)["active"] is True
    again = oauth.refresh(creds, pair.refresh_token, redirect, now=NOW)
    assert gitlab_op.check(again.access_token)["active"] is True
    assert pair.access_token not in repr(pair) and pair.refresh_token not in repr(pair)
    assert creds.client_secret not in repr(creds)
    with pytest.raises(GrantInvalid) as spent:
        oauth.refresh(creds, pair.refresh_token, redirect, now=NOW)
    assert pair.refresh_token not in str(spent.value)
    assert gitlab_op.stats(client)["token_posts"] == 3  # type: ignore[arg-type]


def test_wrong_client_secret(gitlab_op: GitLabOp) -> None:
    creds, _ = _secrets(gitlab_op)
    grant = gitlab_op.grant()
    wrong = OAuthClientSecrets("gitlab_oauth", gitlab_op.url, creds.client_id, "nope-secret")
    with pytest.raises(ClientRejected) as err:
        oauth.refresh(wrong, grant["refresh_token"], "http://x/cb", now=NOW)
    assert "nope-secret" not in str(err.value)


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_no_answer_is_unreachable_after_exactly_one_post(gitlab_op: GitLabOp, mode: str) -> None:
    creds, client = _secrets(gitlab_op)
    grant = gitlab_op.grant(client)  # type: ignore[arg-type]
    gitlab_op.reset_stats()
    gitlab_op.fail_next(1, mode)
    with httpx.Client(timeout=httpx.Timeout(1.0)) as http, pytest.raises(ForgeUnreachable):
        oauth.refresh(creds, grant["refresh_token"], "http://x/cb", now=NOW, http=http)
    assert gitlab_op.stats(client)["token_posts"] == 1  # type: ignore[arg-type]


def _mock(status: int, body: object) -> httpx.Client:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


def test_gitlab_without_expires_in_is_two_hours() -> None:
    http = _mock(200, {"access_token": "a1", "refresh_token": "r1", "created_at": 1})
    creds = OAuthClientSecrets("gitlab_oauth", "https://gitlab.example", "id", "sec")
    pair = oauth.refresh(creds, "r0", "https://cairn/cb", now=NOW, http=http)
    assert pair.expires_at == NOW + timedelta(hours=2)
    (request,) = http.seen  # type: ignore[attr-defined]
    assert str(request.url) == "https://gitlab.example/oauth/token"
    assert b"grant_type=refresh_token" in request.content


def test_github_answers_errors_with_200() -> None:
    creds = OAuthClientSecrets("github_oauth", "https://github.example", "id", "sec")
    http = _mock(
        200,
        {
            "error": "bad_refresh_token",
            "error_description": "The refresh token passed is incorrect or expired.",
        },
    )
    with pytest.raises(GrantInvalid):
        oauth.refresh(creds, "r0", "https://cairn/cb", now=NOW, http=http)
    (request,) = http.seen  # type: ignore[attr-defined]
    assert str(request.url) == "https://github.example/login/oauth/access_token"
    assert request.headers["accept"] == "application/json"
    never = _mock(200, {"access_token": "gho_x", "token_type": "bearer", "scope": "repo"})
    assert (
        oauth.exchange_code(creds, "c", "https://cairn/cb", now=NOW, http=never).expires_at is None
    )


def test_other_errors_are_clear() -> None:
    creds = OAuthClientSecrets("gitlab_oauth", "https://gitlab.example", "id", "sec")
    with pytest.raises(TokenEndpointError, match="unsupported_grant_type"):
        oauth.refresh(
            creds, "r0", "x", now=NOW, http=_mock(400, {"error": "unsupported_grant_type"})
        )
    with pytest.raises(TokenEndpointError, match="without an access_token"):
        oauth.refresh(creds, "r0", "x", now=NOW, http=_mock(200, {"token_type": "bearer"}))
    with pytest.raises(ForgeUnreachable):
        oauth.refresh(creds, "r0", "x", now=NOW, http=_mock(503, {}))
