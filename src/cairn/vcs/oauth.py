"""The OAuth token endpoint client: the ONLY code in cairn that calls a forge's
``/oauth/token`` (VCS-01). ``vcs.tokens`` decides when; this module only speaks the protocol.

Exactly one POST per call, never retried (VCS-07): a refresh token is single-use at GitLab
(Doorkeeper revokes it when it issues the next pair) and at GitHub, so a second attempt after
an answer that got lost would be refused and could revoke the grant. httpx's transport does
not retry by default; nothing here loops. A timeout or a broken connection after the request
was sent means the outcome is unknown (``ForgeUnreachable``): the caller re-reads the row
rather than trying again.

Error classification (RFC 6749 §5.2): ``invalid_grant`` (400, or 401 as some servers answer)
→ ``GrantInvalid``: the refresh token is spent or revoked. ``invalid_client`` /
``unauthorized_client`` → ``ClientRejected``: the connection's client id/secret are wrong.
GitHub answers errors with 200 and an ``error`` field (``bad_refresh_token``,
``bad_verification_code``: the same as ``invalid_grant``). Messages never quote a token or
the client secret; the forge's ``error_description`` is cut short and included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

# GitLab issues access tokens for 2 h; some responses lacked expires_in (gitlab#360729).
GITLAB_DEFAULT_TTL: Final = timedelta(seconds=7200)
TIMEOUT: Final = httpx.Timeout(15.0, connect=5.0)
_MAX_RESPONSE = 64 * 1024
_GRANT_ERRORS: Final = frozenset({"invalid_grant", "bad_refresh_token", "bad_verification_code"})
_CLIENT_ERRORS: Final = frozenset(
    {"invalid_client", "unauthorized_client", "incorrect_client_credentials"}
)


@dataclass(frozen=True)
class OAuthClientSecrets:
    """What a token request needs of a connection: its kind (``gitlab_oauth`` |
    ``github_oauth``), the forge's web URL and the OAuth application's credentials."""

    kind: str
    http_url: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenPair:
    """A token response. ``expires_at`` is None when the forge gives no expiry (GitHub OAuth
    apps without expiring user tokens)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None


class TokenEndpointError(Exception):
    """The token endpoint answered with an error cairn cannot act on (the message says which)."""


class GrantInvalid(TokenEndpointError):
    """``invalid_grant``: the code or refresh token was spent, expired or revoked (VCS-06)."""


class ClientRejected(TokenEndpointError):
    """The forge refused the connection's OAuth client id or secret."""


class ForgeUnreachable(Exception):
    """No usable answer (network error, timeout, 5xx): whether the forge acted is unknown."""


def token_url(kind: str, http_url: str) -> str:
    base = http_url.rstrip("/")
    if kind.startswith("github"):
        return f"{base}/login/oauth/access_token"
    return f"{base}/oauth/token"


def authorize_url(kind: str, http_url: str) -> str:
    base = http_url.rstrip("/")
    if kind.startswith("github"):
        return f"{base}/login/oauth/authorize"
    return f"{base}/oauth/authorize"


def exchange_code(
    client: OAuthClientSecrets,
    code: str,
    redirect_uri: str,
    *,
    now: datetime,
    http: httpx.Client | None = None,
) -> TokenPair:
    """Exchange an authorization code (the browser flow's callback) for a token pair."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    return _post(client, form, now=now, http=http)


def refresh(
    client: OAuthClientSecrets,
    refresh_token: str,
    redirect_uri: str,
    *,
    now: datetime,
    http: httpx.Client | None = None,
) -> TokenPair:
    """Trade a refresh token for a new pair. The old pair is dead once the forge answers."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "redirect_uri": redirect_uri,
    }
    return _post(client, form, now=now, http=http)


def _post(
    client: OAuthClientSecrets, form: dict[str, str], *, now: datetime, http: httpx.Client | None
) -> TokenPair:
    url = token_url(client.kind, client.http_url)
    data = {**form, "client_id": client.client_id, "client_secret": client.client_secret}
    own = http is None
    session = http if http is not None else httpx.Client(timeout=TIMEOUT)
    try:
        response = session.post(url, data=data, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:  # timeouts, resets, DNS: sent or not, we cannot tell
        raise ForgeUnreachable(
            f"the token endpoint {url} did not answer ({type(exc).__name__}); "
            "whether it acted is unknown"
        ) from None
    finally:
        if own:
            session.close()
    if response.status_code >= 500:
        raise ForgeUnreachable(f"the token endpoint {url} answered {response.status_code}")
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code in (400, 401) or isinstance(error, str):
        _raise_for(url, response.status_code, body)
    if response.status_code != 200 or not isinstance(body, dict):
        raise TokenEndpointError(
            f"the token endpoint {url} answered {response.status_code} without a token"
        )
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError(f"the token endpoint {url} answered without an access_token")
    refresh_token = body.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = None
    return TokenPair(access, refresh_token, _expiry(client.kind, body.get("expires_in"), now))


def _expiry(kind: str, expires_in: Any, now: datetime) -> datetime | None:
    """``now`` (the moment the request was sent, on cairn's clock: never later than the
    forge's ``created_at``, and immune to clock skew) + ``expires_in`` (VCS-04)."""
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
        return now + timedelta(seconds=expires_in)
    if kind.startswith("gitlab"):
        return now + GITLAB_DEFAULT_TTL
    return None


def _json(response: httpx.Response) -> Any:
    if len(response.content) > _MAX_RESPONSE:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _raise_for(url: str, status: int, body: Any) -> None:
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    said = f" ({str(description)[:200]})" if isinstance(description, str) and description else ""
    if error in _GRANT_ERRORS:
        raise GrantInvalid(f"the forge refused the grant: {error}{said}")
    if error in _CLIENT_ERRORS:
        raise ClientRejected(
            f"the forge refused the connection's OAuth client id or secret: {error}{said}; "
            "update the connection's key and secret"
        )
    name = error if isinstance(error, str) else "no error code"
    raise TokenEndpointError(f"the token endpoint {url} answered {status}: {name[:64]}{said}")
