"""The OAuth authorization-code flow that gives an OAuth-application connection
(``gitlab_oauth``, ``github_oauth``) its token, or gives a ``needs-reauth`` token a new grant.

1. ``POST /api/cairn/v1/oauth-clients/:id/connect`` (an API token that may manage VCS
   settings; a person, not a service account) answers a one-time browser URL, valid 10 min,
   signed (``tfeapi.signed``) for that connection and naming that person. ``cairn vcs connect``
   prints it.
2. Opening it (``GET …/connect/<signed>``) is allowed once (conditional UPDATE of the
   ``vcs_connect_states`` row): cairn makes a random ``state`` and a browser cookie, keeps only
   their hashes, and redirects (302) to the forge's authorize page.
3. The forge redirects back to ``GET …/callback?code&state``. The state must be the one made
   in step 2, unused, unexpired, and arrive with the same browser's cookie; it is used up by a
   conditional UPDATE (a replay changes nothing and is refused). The code is exchanged
   (``vcs.oauth.exchange_code``) outside any transaction, then the token stored: a new token
   row, or ``VcsTokens.store_new_grant`` for a re-authorisation.

Every refusal is a small HTML page with a 4xx saying what happened and what to do.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cairn import ids
from cairn.audit.log import Actor, record
from cairn.authz.subject import Subject, User
from cairn.clock import Clock, iso8601
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.errors import ApiError, BadRequest, Invalid, Unavailable
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.signed import Signer
from cairn.vcs import store
from cairn.vcs.model import (
    OAUTH_KINDS,
    ConnectState,
    OAuthClient,
    OAuthToken,
    access_aad,
    refresh_aad,
    secret_aad,
)
from cairn.vcs.oauth import (
    ClientRejected,
    ForgeUnreachable,
    GrantInvalid,
    OAuthClientSecrets,
    TokenEndpointError,
    TokenPair,
    authorize_url,
    exchange_code,
)
from cairn.vcs.service import TokenCheck, manage
from cairn.vcs.wire import callback_path

TTL: Final = timedelta(minutes=10)
PURPOSE: Final = "vcs-connect"
COOKIE: Final = "cairn_vcs_connect"
# What cairn asks the forge for: GitLab's full API (webhooks, statuses, archives); GitHub's
# repositories and their hooks.
SCOPES: Final = {"gitlab": "api", "github": "repo admin:repo_hook"}
_REFUSED = "this connect link is invalid or has expired; run `cairn vcs connect` again"
_NO_STORE = {"Cache-Control": "no-store"}

Exchange = Callable[[OAuthClientSecrets, str, str, datetime], TokenPair]
StoreGrant = Callable[[str, TokenPair], None]


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class PageError(ApiError):
    """A refusal shown as a page (its status is given per case)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.page_status = status
        self.page_title = title


def page(title: str, message: str, *, hint: str = "", status: int = 200) -> HTMLResponse:
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>cairn — {html.escape(title)}</title></head><body style="font-family:system-ui,sans-serif;
max-width:40rem;margin:4rem auto;padding:0 1rem"><h1>{html.escape(title)}</h1>
<p>{html.escape(message)}</p>{f"<p>{html.escape(hint)}</p>" if hint else ""}</body></html>"""
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)


def html_error(exc: ApiError) -> Response:
    if isinstance(exc, PageError):
        return page(exc.page_title, exc.detail, status=exc.page_status)
    return page("VCS connection refused", exc.detail, status=exc.status)


@dataclass(frozen=True)
class Started:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class _Claimed:
    state: ConnectState
    client_id: str
    kind: str
    http_url: str
    api_url: str
    service_provider: str
    organization_id: str
    key: str
    secret: str


class ConnectFlow:
    """The browser flow's three steps (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        signer: Signer,
        public_url: str,
        *,
        check_token: Callable[[], TokenCheck],
        store_new_grant: StoreGrant,
        exchange: Exchange | None = None,
    ) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock
        self._signer = signer
        self.public_url = public_url.rstrip("/")
        self._check_token = check_token
        self._store_new_grant = store_new_grant
        self.exchange: Exchange = exchange or (
            lambda client, code, redirect_uri, now: exchange_code(
                client, code, redirect_uri, now=now
            )
        )

    def redirect_uri(self, client_id: str) -> str:
        return f"{self.public_url}{callback_path(client_id)}"

    # ---- 1. the one-time URL ------------------------------------------------------------------

    def start(
        self, caller: Subject, client_id: str, token_id: str | None, *, source: str = ""
    ) -> Started:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, client = store.client(s, caller, client_id)
            manage(caller, org, "connect the VCS connections of")
            if client.kind not in OAUTH_KINDS:
                raise Invalid(
                    f"VCS connection {client.id} uses a {client.kind.replace('_', ' ')}: only "
                    "OAuth application connections are authorised in a browser"
                )
            if not isinstance(caller, User):
                raise Invalid(
                    "a person connects a VCS account: use a user's API token, not an "
                    "organization or team token"
                )
            if token_id is not None:
                tok = s.get(OAuthToken, token_id)
                if tok is None or tok.oauth_client_id != client.id:
                    raise Invalid(
                        f"OAuth token {token_id!r} does not belong to connection {client.id}",
                        pointer="/data/attributes/oauth-token-id",
                    )
            # Finished or abandoned authorisations are kept a day (for support), then dropped.
            s.execute(delete(ConnectState).where(ConnectState.expires_at < now - timedelta(days=1)))
            nonce = secrets.token_urlsafe(32)
            s.add(
                ConnectState(
                    id=_hash(nonce),
                    oauth_client_id=client.id,
                    user_id=caller.id,
                    oauth_token_id=token_id,
                    created_at=now,
                    expires_at=now + TTL,
                )
            )
            record(
                s,
                at=now,
                actor=Actor(caller.id, caller.name, source),
                action="vcs.connect.start",
                subject=client.id,
                organization=org.name,
                reauthorise=token_id or "",
            )
            s.commit()
        signed = self._signer.sign(PURPOSE, client_id, [nonce, caller.id], TTL)
        url = f"{self.public_url}/api/cairn/v1/oauth-clients/{client_id}/connect/{signed}"
        return Started(url=url, expires_at=now + TTL)

    # ---- 2. the browser opens it --------------------------------------------------------------

    def open(self, client_id: str, signed: str) -> tuple[str, str]:
        """The forge's authorize URL and the browser cookie binding the callback."""
        nonce, user_id = self._signer.verify(PURPOSE, client_id, signed, fields=2, refused=_REFUSED)
        now = self._clock.now()
        state = secrets.token_urlsafe(32)
        browser = secrets.token_urlsafe(32)
        with self._db.unit_of_work(write=True) as s:
            opened = affected(
                s.execute(
                    update(ConnectState)
                    .where(
                        ConnectState.id == _hash(nonce),
                        ConnectState.oauth_client_id == client_id,
                        ConnectState.user_id == user_id,
                        ConnectState.opened_at.is_(None),
                        ConnectState.expires_at > now,
                    )
                    .values(opened_at=now, state_hash=_hash(state), browser_hash=_hash(browser))
                )
            )
            if opened != 1:
                raise PageError(
                    400,
                    "Link already used",
                    "This connect link was already opened, or has expired. Run "
                    "`cairn vcs connect` again for a new one.",
                )
            client = s.get(OAuthClient, client_id)
            if client is None or client.key is None:
                raise PageError(404, "Connection gone", "The VCS connection no longer exists.")
            s.commit()
            forge = "gitlab" if client.kind.startswith("gitlab") else "github"
            query = urlencode(
                {
                    "client_id": client.key,
                    "redirect_uri": self.redirect_uri(client_id),
                    "response_type": "code",
                    "state": state,
                    "scope": SCOPES[forge],
                }
            )
            return f"{authorize_url(client.kind, client.http_url)}?{query}", browser

    # ---- 3. the forge's callback --------------------------------------------------------------

    def claim(self, client_id: str, state: str, browser: str | None) -> _Claimed:
        """Use up the state (once); the connection's secrets for the exchange."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            row = s.scalar(
                select(ConnectState).where(
                    ConnectState.state_hash == _hash(state),
                    ConnectState.oauth_client_id == client_id,
                )
            )
            if row is None or row.expires_at <= now:
                raise PageError(
                    400,
                    "Authorisation not recognised",
                    "This authorisation is unknown or has expired. Run `cairn vcs connect` "
                    "again and finish within 10 minutes.",
                )
            if row.used_at is not None:
                raise PageError(
                    400,
                    "Authorisation already used",
                    "This authorisation was already completed; a replayed callback changes "
                    "nothing. Check the connection with `cairn vcs list`.",
                )
            if (
                browser is None
                or row.browser_hash is None
                or not hmac.compare_digest(row.browser_hash, _hash(browser))
            ):
                raise PageError(
                    400,
                    "Different browser",
                    "This authorisation was started in another browser (or its cookie is "
                    "missing). Open the connect link and finish in the same browser.",
                )
            used = affected(
                s.execute(
                    update(ConnectState)
                    .where(ConnectState.id == row.id, ConnectState.used_at.is_(None))
                    .values(used_at=now)
                )
            )
            if used != 1:
                raise PageError(
                    400,
                    "Authorisation already used",
                    "This authorisation was already completed; a replayed callback changes "
                    "nothing. Check the connection with `cairn vcs list`.",
                )
            client = s.get(OAuthClient, client_id)
            if client is None or client.secret_sealed is None or client.key is None:
                raise PageError(404, "Connection gone", "The VCS connection no longer exists.")
            secret = self._keys.open(client.secret_sealed, aad=secret_aad(client.id)).decode()
            claimed = _Claimed(
                state=row,
                client_id=client.id,
                kind=client.kind,
                http_url=client.http_url,
                api_url=client.api_url,
                service_provider=client.service_provider,
                organization_id=client.organization_id,
                key=client.key,
                secret=secret,
            )
            s.commit()
            return claimed

    def finish(self, claimed: _Claimed, code: str) -> str:
        """Exchange the code (outside any transaction) and store the token; what happened."""
        secrets_ = OAuthClientSecrets(
            kind=claimed.kind,
            http_url=claimed.http_url,
            client_id=claimed.key,
            client_secret=claimed.secret,
        )
        try:
            pair = self.exchange(
                secrets_, code, self.redirect_uri(claimed.client_id), self._clock.now()
            )
        except GrantInvalid:
            raise PageError(
                400,
                "Code refused",
                "The forge refused the authorisation code (expired or already used). Run "
                "`cairn vcs connect` again.",
            ) from None
        except ClientRejected:
            raise PageError(
                502,
                "Connection misconfigured",
                "The forge refused this connection's application ID or secret. Fix them "
                "(PATCH /api/v2/oauth-clients/:id with key and secret), then connect again.",
            ) from None
        except TokenEndpointError as err:
            raise PageError(502, "Forge error", str(err)) from None
        except ForgeUnreachable:
            raise Unavailable(
                "The forge did not answer the code exchange. Run `cairn vcs connect` again "
                "in a moment."
            ) from None
        token_id = claimed.state.oauth_token_id
        if token_id is not None:
            self._store_new_grant(token_id, pair)
            self._audit(claimed, "vcs.connect.reauthorised", token_id)
            return f"Token {token_id} is authorised again; cairn uses it from now on."
        try:
            user, _ = self._check_token()(
                claimed.kind,
                claimed.service_provider,
                claimed.api_url,
                claimed.http_url,
                pair.access_token,
            )
        except (ApiError, TokenEndpointError, ForgeUnreachable):
            user = ""
        token_id = self._store_token(claimed, pair, user)
        return (
            f"Connected{f' as {user}' if user else ''}: token {token_id}. Use it as the "
            "oauth-token-id of a workspace's vcs-repo."
        )

    def _store_token(self, claimed: _Claimed, pair: TokenPair, user: str) -> str:
        now = self._clock.now()
        tid = ids.new_id("oauth_token")
        with self._db.unit_of_work(write=True) as s:
            s.add(
                OAuthToken(
                    id=tid,
                    oauth_client_id=claimed.client_id,
                    organization_id=claimed.organization_id,
                    service_provider_user=user[:255],
                    access_token_sealed=self._keys.seal(
                        pair.access_token.encode(), aad=access_aad(tid, 0)
                    ),
                    refresh_token_sealed=self._keys.seal(
                        pair.refresh_token.encode(), aad=refresh_aad(tid, 0)
                    )
                    if pair.refresh_token
                    else None,
                    expires_at=pair.expires_at,
                    generation=0,
                    status="ok",
                    refreshed_at=now,
                    created_at=now,
                )
            )
            record(
                s,
                at=now,
                actor=Actor(claimed.state.user_id, claimed.state.user_id, ""),
                action="vcs.connect.connected",
                subject=tid,
                oauth_client=claimed.client_id,
            )
            s.commit()
        return tid

    def _audit(self, claimed: _Claimed, action: str, subject: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            record(
                s,
                at=self._clock.now(),
                actor=Actor(claimed.state.user_id, claimed.state.user_id, ""),
                action=action,
                subject=subject,
                oauth_client=claimed.client_id,
            )
            s.commit()


def routes(flow: ConnectFlow) -> list[Route]:
    """The routes (mounted under ``/api/cairn/v1``)."""
    secure = flow.public_url.startswith("https://")

    def start(call: Call) -> Response:
        token_id = None
        if call.raw.strip():
            doc = call.document(None, allow_blank_type=True)
            token_id = doc.string("oauth-token-id", max_len=32)
        started = flow.start(call.caller, call.param("id"), token_id, source=call.source)
        return JSONResponse(
            {
                "data": {
                    "type": "vcs-connect-urls",
                    "attributes": {"url": started.url, "expires-at": iso8601(started.expires_at)},
                }
            },
            status_code=201,
            headers=_NO_STORE,
        )

    def open_link(call: Call) -> Response:
        client_id = call.param("id")
        target, browser = flow.open(client_id, call.param("signed"))
        response = RedirectResponse(target, status_code=302, headers=_NO_STORE)
        response.set_cookie(
            COOKIE,
            browser,
            max_age=int(TTL.total_seconds()),
            path=callback_path(client_id),
            secure=secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(call: Call) -> Response:
        q = call.request.query_params
        if q.get("error"):
            what = (q.get("error_description") or q["error"])[:300]
            raise PageError(
                400,
                "Authorisation denied",
                f"The forge did not authorise cairn ({what}). Run `cairn vcs connect` again "
                "and approve the request to connect.",
            )
        code, state = q.get("code"), q.get("state")
        if not code or not state or len(code) > 1000 or len(state) > 200:
            raise BadRequest("the forge's redirect has no code or state; start again")
        claimed = await call.run(
            flow.claim, call.param("id"), state, call.request.cookies.get(COOKIE)
        )
        message = await call.run(flow.finish, claimed, code)
        response = page("VCS connection ready", message, hint="You can close this window.")
        response.delete_cookie(COOKIE, path=callback_path(call.param("id")))
        return response

    base = "/oauth-clients/{id}"
    return [
        route(base + "/connect", start, ["POST"], limit=4096),
        route(
            base + "/connect/{signed}",
            open_link,
            ["GET"],
            auth=None,
            write=True,
            errors=html_error,
        ),
        route(
            base + "/callback",
            callback,
            ["GET"],
            auth=None,
            executor="stream",
            errors=html_error,
        ),
    ]
