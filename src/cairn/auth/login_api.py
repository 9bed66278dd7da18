"""HTTP for ``terraform login``: ``/oauth/authorization``, ``/oauth/token`` and the IdP
callback ``/auth/oidc/callback``.

The routes go through the request pipeline like every other (``cairn.tfeapi.http``): public
(``auth=None``: the person proves who they are inside the flow), form bodies refused over
``FORM_LIMIT``. Errors are pages for a browser (``html_error``), except on the token endpoint,
which Terraform calls: RFC 6749 §5.2 JSON there (``oauth_error``). Bodies are small forms,
parsed without extra libraries; a field no database can store (NUL, bytes that are not UTF-8)
is a 400. Anonymous clients are bounded per address (``cairn.auth.throttle``): failed logins
and token requests and redirects to the IdP spend a budget, then 429 with ``Retry-After``.

The two POSTs are ordinary jobs (one thread hop, one write transaction). The two GETs that
may talk to the IdP (the redirect to it, and its callback) run as one thread hop *outside* a
job's transaction (``_own_transactions``), their services committing their own writes as
they go, because those writes surround HTTP calls to the IdP (up to 10 s each): inside a
write job they would hold SQLite's writer lock across those calls, and inside a read job
each write needs a second pooled connection (a storm of 200 callbacks exhausted the pool).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cairn.auth.login import (
    AuthorizationRequest,
    IdentityProvider,
    LoginRejected,
    OAuthError,
    error_page,
    login_page,
    parse_authorization,
)
from cairn.errors import ApiError, BadRequest, TooManyRequests, Unauthorized
from cairn.names import unstorable
from cairn.tfeapi.http import Call, route

FORM_LIMIT = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class LoginFlow(Protocol):
    """The authorization server's service (``cairn.auth.login.LoginService``)."""

    def login_with_token(self, token: str, req: AuthorizationRequest, *, source: str) -> str: ...
    def redeem(self, form: dict[str, str], *, source: str) -> str: ...
    def throttle_idp_redirect(self, source: str) -> None: ...
    def issue_code(
        self, user_id: str, req: AuthorizationRequest, *, source: str, via: str
    ) -> str: ...
    def upsert_idp_user(
        self,
        *,
        issuer: str,
        subject: str,
        email: str,
        preferred: str,
        groups: list[str],
        source: str,
        email_verified: bool | None = None,
    ) -> str: ...


def html_error(exc: ApiError) -> Response:
    """The pipeline's error renderer for the browser-facing login routes."""
    return HTMLResponse(
        error_page(exc.detail), status_code=exc.status, headers={**_NO_STORE, **exc.headers}
    )


def oauth_error(exc: ApiError) -> Response:
    """The token endpoint's error renderer (RFC 6749 §5.2; a client over its budget gets a 429
    with ``Retry-After`` and ``temporarily_unavailable``, RFC 6749 §4.1.2.1's word for it)."""
    if isinstance(exc, OAuthError):
        return _json({"error": exc.error, "error_description": exc.detail}, exc.status_code)
    error = "temporarily_unavailable" if isinstance(exc, TooManyRequests) else "invalid_request"
    return _json({"error": error, "error_description": exc.detail}, exc.status, exc.headers)


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**_NO_STORE, **(headers or {})},
    )


def _form(call: Call) -> dict[str, str]:
    """The ``application/x-www-form-urlencoded`` body. A field that no database column can hold
    (a NUL byte, or bytes that are not UTF-8 — kept as lone surrogates by ``surrogateescape``
    so they are found here) is a 400 naming the field, never its value (it may be a token):
    PostgreSQL refused such values with a 500, SQLite stored them."""
    text = call.raw.decode("utf-8", "surrogateescape")
    form = dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))
    for name, value in form.items():
        why = unstorable(name) or unstorable(value)
        if why is not None:
            shown = name if unstorable(name) is None else name.encode("unicode_escape").decode()
            if "surrogate" in why:
                why = "bytes that are not UTF-8"
            raise BadRequest(
                f"the form field '{shown}' contains {why}; send the form as UTF-8 text without "
                "NUL bytes (start again with terraform login)",
                parameter=shown,
            )
    return form


def _own_transactions(handler: Callable[[Call], Response]) -> Callable[[Call], Awaitable[Response]]:
    """A sync handler for the ``stream`` executor: one thread hop, no job transaction (the
    services it calls open and commit their own)."""

    async def run(call: Call) -> Response:
        return await call.run(handler, call)

    run.__name__ = handler.__name__
    return run


def routes(login: LoginFlow, idp: IdentityProvider | None) -> list[Route]:
    """The login routes, at the site root; ``idp`` None: the token form is the way in."""

    def authorization_page(call: Call) -> Response:
        req = parse_authorization(dict(call.request.query_params))
        if idp is not None:  # each redirect stores a pending login: bounded per address
            login.throttle_idp_redirect(call.source)
            url = idp.begin(req.query(), source_address=call.source)
            return RedirectResponse(url, status_code=302, headers=_NO_STORE)
        return HTMLResponse(login_page(req), headers=_NO_STORE)

    def authorize(call: Call) -> Response:
        form = _form(call)
        req = parse_authorization(form)
        if idp is not None:
            raise LoginRejected("this cairn logs people in through its identity provider")
        try:
            url = login.login_with_token(form.get("token", ""), req, source=call.source)
        except Unauthorized as exc:
            return HTMLResponse(
                login_page(req, error=exc.detail), status_code=401, headers=_NO_STORE
            )
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)

    def token(call: Call) -> Response:
        value = login.redeem(_form(call), source=call.source)
        return _json({"access_token": value, "token_type": "bearer"}, 200)

    def idp_callback(call: Call) -> Response:
        if idp is None:
            return HTMLResponse(error_page("no identity provider is configured"), status_code=404)
        done = idp.complete(dict(call.request.query_params), source_address=call.source)
        user_id = login.upsert_idp_user(
            issuer=done.issuer,
            subject=done.subject,
            email=done.email or "",
            preferred=done.username or "",
            groups=list(done.groups),
            source=call.source,
            email_verified=done.email_verified,
        )
        req = parse_authorization(dict(parse_qsl(done.resume)))
        url = login.issue_code(user_id, req, source=call.source, via="identity provider")
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)

    return [
        route(
            "/oauth/authorization",
            _own_transactions(authorization_page),
            ["GET"],
            auth=None,
            executor="stream",
            errors=html_error,
        ),
        route(
            "/oauth/authorization",
            authorize,
            ["POST"],
            auth=None,
            limit=FORM_LIMIT,
            errors=html_error,
        ),
        route("/oauth/token", token, ["POST"], auth=None, limit=FORM_LIMIT, errors=oauth_error),
        route(
            "/auth/oidc/callback",
            _own_transactions(idp_callback),
            ["GET"],
            auth=None,
            executor="stream",
            errors=html_error,
        ),
    ]
