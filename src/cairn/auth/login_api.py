"""HTTP for ``terraform login``: ``/oauth/authorization``, ``/oauth/token`` and the IdP
callback ``/auth/oidc/callback``. Bodies are small forms, parsed without extra libraries."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cairn.audit.log import set_source
from cairn.auth.login import (
    LoginRejected,
    OAuthError,
    error_page,
    login_page,
    parse_authorization,
    upsert_idp_user,
)
from cairn.context import AppContext
from cairn.errors import ApiError, PayloadTooLarge, Unauthorized

_FORM_LIMIT = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _source(request: Request) -> str:
    address = request.client.host if request.client else ""
    set_source(address)  # for audit events written by the services this request calls
    return address


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_LIMIT:
            raise PayloadTooLarge("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def authorize(request: Request) -> Response:
    ctx = _ctx(request)
    try:
        if request.method == "GET":
            req = parse_authorization(dict(request.query_params))
            if ctx.idp is not None:
                url = await run_in_threadpool(ctx.idp.begin, req.query())
                return RedirectResponse(url, status_code=302, headers=_NO_STORE)
            return HTMLResponse(login_page(req), headers=_NO_STORE)
        form = await _form(request)
        req = parse_authorization(form)
        if ctx.idp is not None:
            raise LoginRejected("this cairn logs people in through its identity provider")
        try:
            url = await run_in_threadpool(
                ctx.login.login_with_token, form.get("token", ""), req, source=_source(request)
            )
        except Unauthorized as exc:
            return HTMLResponse(
                login_page(req, error=exc.detail), status_code=401, headers=_NO_STORE
            )
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)
    except ApiError as exc:
        return HTMLResponse(error_page(exc.detail), status_code=exc.status, headers=_NO_STORE)


async def token(request: Request) -> Response:
    ctx = _ctx(request)
    try:
        form = await _form(request)
        value = await run_in_threadpool(ctx.login.redeem, form, source=_source(request))
    except OAuthError as exc:
        return _json({"error": exc.error, "error_description": exc.detail}, exc.status_code)
    except ApiError as exc:
        return _json({"error": "invalid_request", "error_description": exc.detail}, exc.status)
    return _json({"access_token": value, "token_type": "bearer"}, 200)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=_NO_STORE
    )


async def idp_callback(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.idp is None:
        return HTMLResponse(error_page("no identity provider is configured"), status_code=404)
    try:
        login = await run_in_threadpool(
            ctx.idp.complete, dict(request.query_params), source_address=_source(request)
        )
        user_id = await run_in_threadpool(
            upsert_idp_user,
            ctx.db,
            ctx.clock,
            issuer=login.issuer,
            subject=login.subject,
            email=login.email or "",
            preferred=login.username or "",
            groups=list(login.groups),
            source=_source(request),
        )
        req = parse_authorization(dict(parse_qsl(login.resume)))
        url = await run_in_threadpool(
            ctx.login.issue_code, user_id, req, source=_source(request), via="identity provider"
        )
    except ApiError as exc:
        return HTMLResponse(error_page(exc.detail), status_code=exc.status, headers=_NO_STORE)
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


def routes() -> list[Route]:
    return [
        Route("/oauth/authorization", authorize, methods=["GET", "POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/auth/oidc/callback", idp_callback, methods=["GET"]),
    ]
