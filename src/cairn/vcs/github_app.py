"""GitHub App credentials: the app's own JWT and the installation tokens minted with it.

An App authenticates as itself with a short JWT signed RS256 by its private key (``iss`` the
App ID, ``iat`` 60 s in the past against clock drift, ``exp`` at most 10 min ahead: 9 min
here), and acts in an installation with an installation access token (1 h, no refresh token)
minted by ``POST /app/installations/{id}/access_tokens``. ``vcs.tokens`` calls ``mint`` under
the token row's lease so every replica shares one token per window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import jwt

from cairn.vcs.oauth import ForgeUnreachable, TokenEndpointError

TIMEOUT: Final = httpx.Timeout(15.0, connect=5.0)
MAX_INSTALLATIONS: Final = 1000
_PER_PAGE = 100


@dataclass(frozen=True)
class GitHubApp:
    """A GitHub App connection: its ID, the REST API base URL and the private key (PEM)."""

    app_id: str
    api_url: str
    private_key: str = field(repr=False)


@dataclass(frozen=True)
class Installation:
    id: int
    account: str
    account_type: str


def app_jwt(app: GitHubApp, *, now: datetime | None = None) -> str:
    """The App's JWT (RS256), valid from 60 s ago for 9 minutes. GitHub checks it against its
    own clock, so ``now`` defaults to the wall clock (not an injected test clock)."""
    now = now or datetime.now(UTC)
    claims = {
        "iat": int((now - timedelta(seconds=60)).timestamp()),
        "exp": int((now + timedelta(minutes=9)).timestamp()),
        "iss": app.app_id,
    }
    try:
        return jwt.encode(claims, app.private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        raise TokenEndpointError(
            f"the private key of GitHub App {app.app_id} cannot sign (not an RSA key in PEM); "
            "update the connection's private-key"
        ) from None


def _headers(app: GitHubApp, now: datetime | None) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {app_jwt(app, now=now)}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def _call(
    http: httpx.Client | None, method: str, url: str, headers: dict[str, str], what: str
) -> httpx.Response:
    own = http is None
    session = http if http is not None else httpx.Client(timeout=TIMEOUT)
    try:
        response = session.request(method, url, headers=headers)
    except httpx.HTTPError as exc:
        raise ForgeUnreachable(f"GitHub did not answer {what} ({type(exc).__name__})") from None
    finally:
        if own:
            session.close()
    if response.status_code >= 500:
        raise ForgeUnreachable(f"GitHub answered {response.status_code} to {what}")
    if response.status_code in (401, 403, 404):
        raise TokenEndpointError(
            f"GitHub refused {what} ({response.status_code}): check the App ID, the private "
            "key, and that the App is still installed"
        )
    if response.status_code >= 400:
        raise TokenEndpointError(f"GitHub answered {response.status_code} to {what}")
    return response


def mint_installation_token(
    app: GitHubApp,
    installation_id: int,
    *,
    now: datetime | None = None,
    http: httpx.Client | None = None,
) -> tuple[str, datetime]:
    """A new installation access token and its expiry. One POST, never retried."""
    url = f"{app.api_url.rstrip('/')}/app/installations/{int(installation_id)}/access_tokens"
    what = f"a token for installation {installation_id}"
    response = _call(http, "POST", url, _headers(app, now), what)
    body: Any = _safe_json(response)
    token = body.get("token") if isinstance(body, dict) else None
    expires = body.get("expires_at") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token or not isinstance(expires, str):
        raise TokenEndpointError(f"GitHub answered {what} without a token and its expiry")
    try:
        expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        raise TokenEndpointError(f"GitHub answered {what} with a malformed expires_at") from None
    return token, expires_at


def list_installations(
    app: GitHubApp, *, now: datetime | None = None, http: httpx.Client | None = None
) -> list[Installation]:
    """The App's installations (at most ``MAX_INSTALLATIONS``)."""
    found: list[Installation] = []
    page = 1
    while len(found) < MAX_INSTALLATIONS:
        url = f"{app.api_url.rstrip('/')}/app/installations?per_page={_PER_PAGE}&page={page}"
        response = _call(http, "GET", url, _headers(app, now), "the list of installations")
        body = _safe_json(response)
        if not isinstance(body, list):
            raise TokenEndpointError("GitHub answered the list of installations with no list")
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                continue
            acct = item.get("account")
            account: dict[str, Any] = acct if isinstance(acct, dict) else {}
            found.append(
                Installation(
                    id=item["id"],
                    account=str(account.get("login", ""))[:255],
                    account_type=str(account.get("type", ""))[:32],
                )
            )
        if len(body) < _PER_PAGE:
            break
        page += 1
    return found[:MAX_INSTALLATIONS]


def _safe_json(response: httpx.Response) -> Any:
    if len(response.content) > 4 * 1024 * 1024:
        raise TokenEndpointError("GitHub's answer is too large")
    try:
        return response.json()
    except ValueError:
        return None
