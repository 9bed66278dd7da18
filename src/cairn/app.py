"""The composition point: settings → database → stores → services → routes.

``build_context`` does everything that may refuse to start (migrations, secret-key check,
blob store check); ``create_app`` wires HTTP routes around a context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from cairn.audit import api as audit_api
from cairn.audit.lane import AuditedLane
from cairn.auth import api as auth_api
from cairn.auth import login_api, tokens_api
from cairn.auth.idp import IdpClient, IdpSettings, IdpUnreachable
from cairn.auth.login import LoginService
from cairn.auth.tokens import TokenService
from cairn.blobs.store import open_blob_store
from cairn.clock import Clock, SystemClock
from cairn.config import Settings
from cairn.context import AppContext
from cairn.crypto import Keyring, load_or_create_secret
from cairn.db import meta
from cairn.db.engine import Database, make_engine
from cairn.errors import ApiError, MethodNotAllowed, NotFound, SecretKeyMismatch
from cairn.identity import api as identity_api
from cairn.identity.discovery import check_issuer
from cairn.identity.errors import IdentityConfigError
from cairn.identity.issuer import Issuer
from cairn.identity.keys import as_alg
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.listener import RotationListener
from cairn.identity.store import SqlKeyStore
from cairn.migrations.migrate import is_current, upgrade
from cairn.observe import Metrics, ObserveMiddleware
from cairn.organizations import api as org_api
from cairn.organizations.service import OrganizationService
from cairn.state import api as state_api
from cairn.state.service import StateService
from cairn.teams import api as teams_api
from cairn.teams.service import RbacService
from cairn.tfeapi import service_discovery as discovery
from cairn.tfeapi.http import Pipeline
from cairn.tfeapi.jsonapi import error_response
from cairn.workspaces import api as ws_api
from cairn.workspaces.service import WorkspaceService

log = logging.getLogger("cairn")


@dataclass
class Startup:
    """What happened at start that the operator must be told once."""

    ctx: AppContext
    created_secret: bool
    bootstrap_token: str | None


def build_context(settings: Settings, *, clock: Clock | None = None) -> Startup:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret, created = load_or_create_secret(settings.data_dir, settings.secret_key)
    keyring = Keyring(secret)
    db = Database(make_engine(settings.database_url))
    upgrade(db.engine)
    with db.unit_of_work(write=True) as s:
        stored = meta.get_or_set(s, "secret-key-fingerprint", keyring.fingerprint)
        s.commit()
    if stored != keyring.fingerprint:
        db.dispose()
        raise SecretKeyMismatch(
            "CAIRN_SECRET_KEY is not the key this database was initialised with; nothing was "
            "changed. Start cairn with the original key (tokens and sealed secrets depend on it)."
        )
    blobs = open_blob_store(settings, db)
    tokens = TokenService(db, keyring, clock)
    issuer = build_issuer(settings, db, keyring, clock)
    ctx = AppContext(
        settings=settings,
        db=db,
        blobs=blobs,
        keyring=keyring,
        clock=clock,
        tokens=tokens,
        organizations=OrganizationService(db, clock),
        workspaces=WorkspaceService(db, clock),
        states=StateService(db, blobs, keyring, clock, settings),
        issuer=issuer,
        rbac=RbacService(db, clock),
        login=LoginService(db, keyring, clock, tokens),
        audited=AuditedLane(db),
    )
    tokens.ensure_admin()
    if settings.admin_token:
        tokens.set_admin_env_token(settings.admin_token)
    ctx.idp = build_idp(settings, db, keyring, clock)
    bootstrap = None if settings.admin_token else tokens.bootstrap_admin_token()
    return Startup(ctx=ctx, created_secret=created, bootstrap_token=bootstrap)


def build_issuer(settings: Settings, db: Database, keyring: Keyring, clock: Clock) -> Issuer:
    """The workload-identity issuer, with its first keys created and its cache loaded."""
    policy = RotationPolicy(
        period=settings.oidc_rotation_period,
        prepublish=settings.oidc_prepublish,
        max_token_ttl=settings.oidc_max_token_ttl,
        alg=as_alg(settings.oidc_alg),
    )
    try:
        check_issuer(settings.public_url, strict=True)
    except IdentityConfigError as exc:
        log.warning(
            "the public URL is fine for local use but clouds will not trust it as an OIDC "
            "issuer (they need https on port 443 with a public certificate)",
            extra={"issuer": settings.public_url, "why": str(exc)},
        )
    issuer = Issuer(
        db, SqlKeyStore(db, keyring), clock, policy, settings.public_url, settings.oidc_cache_ttl
    )
    issuer.ensure_keys()
    # A damaged or swapped active key is a startup error (SealError names its kid); later the
    # refresher keeps serving the public keys and minting answers 503 instead.
    issuer.open_active_key()
    issuer.refresh()
    return issuer


def build_idp(settings: Settings, db: Database, keyring: Keyring, clock: Clock) -> IdpClient | None:
    """The relying party for the team's IdP, checked at start (a misconfiguration refuses to
    start; an IdP that is only unreachable right now is retried at the first login)."""
    if not settings.idp_issuer:
        return None
    assert settings.idp_client_id and settings.idp_client_secret
    idp = IdpClient(
        IdpSettings(
            issuer=settings.idp_issuer,
            client_id=settings.idp_client_id,
            client_secret=settings.idp_client_secret,
            redirect_uri=f"{settings.public_url}/auth/oidc/callback",
            scopes=settings.idp_scopes,
            groups_claim=settings.idp_groups_claim,
            ca_file=settings.idp_ca_file,
        ),
        db,
        keyring,
        clock,
    )
    try:
        idp.check()
    except IdpUnreachable as exc:
        log.warning(
            "the identity provider is unreachable; logins will retry", extra={"why": str(exc)}
        )
    return idp


def _ready(ctx: AppContext) -> tuple[bool, str]:
    try:
        with ctx.db.unit_of_work() as s:
            s.execute(text("SELECT 1"))
        if not is_current(ctx.db.engine):
            return False, "database schema is not at the newest migration"
    except Exception as exc:
        return False, f"database unreachable: {type(exc).__name__}"
    return True, "ready"


def create_app(ctx: AppContext) -> Starlette:
    metrics = Metrics()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, why = await asyncio.to_thread(_ready, ctx)
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    api_routes = [
        Route("/ping", discovery.ping, methods=["GET"]),
        *auth_api.routes(),
        *tokens_api.routes(),
        *org_api.routes(),
        *ws_api.routes(),
        *state_api.routes(),
        *teams_api.tfe_routes(),
    ]
    routes = [
        Route(
            "/.well-known/terraform.json",
            discovery.StaticJson(discovery.discovery_document()),
            methods=["GET"],
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/api/terraform/motd", discovery.motd, methods=["GET"]),
        *login_api.routes(),
        *identity_api.public_routes(ctx.issuer),
        Mount("/api/v2", routes=api_routes),
        Mount(
            "/api/cairn/v1",
            routes=[
                *identity_api.cairn_routes(),
                *teams_api.cairn_routes(),
                *audit_api.routes(),
            ],
        ),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err: ApiError
        if exc.status_code == 405:
            err = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 404:
            err = NotFound(f"there is no API endpoint at {request.url.path}")
        else:
            err = ApiError(str(exc.detail))
            err.status = exc.status_code  # type: ignore[misc]
        return error_response(err)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception(
            "unhandled error", extra={"path": request.url.path.split("/hosted-upload/")[0]}
        )
        err = ApiError("cairn failed to handle this request; the error is in the server log")
        return error_response(err)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        listener = None
        if ctx.settings.is_postgres and ctx.settings.oidc_listen:
            listener = RotationListener(ctx.settings.database_url, ctx.issuer)
            listener.start()
        tasks = [
            asyncio.create_task(_housekeeping(ctx)),
            asyncio.create_task(_keep_keys_fresh(ctx)),
            asyncio.create_task(_rotation_scheduler(ctx)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            # After the last request (uvicorn drains them before the lifespan ends): finish
            # and commit whatever audited job is still queued.
            await asyncio.to_thread(ctx.audited.close)

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, ApiError: api_error, Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.pipeline = Pipeline(
        db=ctx.db,
        lane=ctx.audited,
        authenticators={"token": ctx.tokens.authenticator()},
        default_limit=ctx.settings.max_json_body_bytes,
    )
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


async def _housekeeping(ctx: AppContext) -> None:
    """Finish work a crash interrupted, then tidy up periodically."""
    while True:
        try:
            await asyncio.to_thread(ctx.states.process_pending)
            await asyncio.to_thread(
                ctx.states.discard_stale_pending, ctx.settings.upload_url_ttl_seconds + 3600
            )
        except Exception:
            log.exception("housekeeping failed; will retry")
        await asyncio.sleep(600)


async def _keep_keys_fresh(ctx: AppContext) -> None:
    """Rebuild the issuer's in-memory documents when they go stale (TTL, notification, a
    retired key leaving the JWKS). A failed refresh keeps serving the last good documents."""
    while True:
        await asyncio.sleep(0.2)
        if ctx.issuer.needs_refresh():
            try:
                await asyncio.to_thread(ctx.issuer.refresh)
            except Exception:
                log.exception("refreshing the signing keys failed; serving the last good ones")
                await asyncio.sleep(5)


async def _rotation_scheduler(ctx: AppContext) -> None:
    """Scheduled rotation; every replica runs it, the database lets one rotation win."""
    while True:
        try:
            plan = await asyncio.to_thread(ctx.issuer.tick)
            if plan is not None:
                log.info("scheduled key rotation", extra={"changes": plan.summary()})
        except Exception:
            log.exception("scheduled key rotation failed; will retry")
        await asyncio.sleep(60)
