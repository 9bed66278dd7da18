"""The composition point: settings → database → stores → services → routes.

``build_context`` does everything that may refuse to start (migrations, secret-key check,
blob store check); ``create_app`` wires HTTP routes around a context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from cairn.admin import audit_api
from cairn.audit.lane import AuditedLane
from cairn.audit.service import AuditLog
from cairn.auth import api as auth_api
from cairn.auth import login_api, tokens_api
from cairn.auth.hooks import rename_org_service_account
from cairn.auth.idp import IdpClient, IdpSettings, IdpUnreachable
from cairn.auth.login import LoginService, login_service
from cairn.auth.token_store import TokenLedger
from cairn.auth.tokens import TokenService
from cairn.auth.users import SqlUsers
from cairn.auth.usertokens import UserTokens
from cairn.blobs.store import open_blob_store
from cairn.clock import Clock, SystemClock
from cairn.config import Settings
from cairn.context import AppContext
from cairn.crypto import Keyring, load_or_create_secret
from cairn.db import meta
from cairn.db.engine import Database, make_engine
from cairn.db.notify import Listener
from cairn.errors import ApiError, MethodNotAllowed, NotFound, SecretKeyMismatch
from cairn.identity import api as identity_api
from cairn.identity.discovery import check_issuer
from cairn.identity.errors import IdentityConfigError
from cairn.identity.issuer import Issuer
from cairn.identity.keys import as_alg
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.store import SqlKeyStore
from cairn.migrations.migrate import is_current, upgrade
from cairn.observe import Metrics, ObserveMiddleware
from cairn.organizations import api as org_api
from cairn.organizations.hooks import OrganizationHooks
from cairn.organizations.service import OrganizationService
from cairn.organizations.tokens import OrganizationTokens
from cairn.state import api as state_api
from cairn.state.processing import ResourceCounter
from cairn.state.service import StateService
from cairn.state.uploads import HostedUploads
from cairn.teams import api as teams_api
from cairn.teams.grants import GrantService
from cairn.teams.hooks import create_owners_team
from cairn.teams.service import RbacService, TeamService
from cairn.teams.tokens import TeamTokens
from cairn.teams.users import UserAdmin
from cairn.tfeapi import service_discovery as discovery
from cairn.tfeapi.http import Pipeline
from cairn.tfeapi.jsonapi import error_response
from cairn.tfeapi.signed import Signer
from cairn.workspaces import api as ws_api
from cairn.workspaces import hooks as ws_hooks
from cairn.workspaces.locks import LockService
from cairn.workspaces.service import WorkspaceService
from cairn.workspaces.tags import TagService

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
        organizations=OrganizationService(db, clock, organization_hooks()),
        workspaces=WorkspaceService(db, clock),
        states=StateService(
            db, blobs, clock, ResourceCounter(db, blobs), max_state_bytes=settings.max_state_bytes
        ),
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


def organization_hooks() -> OrganizationHooks:
    """What higher domains do when an organization changes (run in its transaction)."""
    return OrganizationHooks(
        after_create=[create_owners_team],
        after_rename=[rename_org_service_account],
        before_delete=[ws_hooks.refuse_locked_workspaces],
        before_delete_project=[ws_hooks.refuse_used_project],
    )


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

    ledger = TokenLedger(ctx.db, ctx.clock, ctx.tokens)
    teams, grants = TeamService(ctx.db, ctx.clock), GrantService(ctx.db, ctx.clock)
    # One signer for every signed URL (state uploads; later configuration versions, logs).
    signer = Signer(ctx.keyring, ctx.clock)
    api_routes = [
        Route("/ping", discovery.ping, methods=["GET"]),
        *auth_api.routes(SqlUsers(ctx.db)),
        *tokens_api.routes(UserTokens(ledger), OrganizationTokens(ledger), TeamTokens(ledger)),
        *org_api.routes(ctx.organizations),
        *ws_api.routes(
            ctx.workspaces,
            LockService(ctx.db, ctx.clock),
            TagService(ctx.db),
            count_resources=ctx.states.process_current,
        ),
        *state_api.routes(
            ctx.states,
            HostedUploads(
                ctx.db,
                ctx.blobs,
                signer,
                ctx.clock,
                ResourceCounter(ctx.db, ctx.blobs),
                ttl=timedelta(seconds=ctx.settings.upload_url_ttl_seconds),
                max_state_bytes=ctx.settings.max_state_bytes,
            ),
            ctx.workspaces.resolve,
            state_api.Limits(
                ctx.settings.public_url,
                ctx.settings.max_state_bytes,
                ctx.settings.max_json_body_bytes,
            ),
        ),
        *teams_api.tfe_routes(teams, grants),
    ]
    routes = [
        Route(
            "/.well-known/terraform.json",
            discovery.StaticJson(discovery.discovery_document({"login.v1": login_service()})),
            methods=["GET"],
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/api/terraform/motd", discovery.motd, methods=["GET"]),
        *login_api.routes(ctx.login, ctx.idp),
        *identity_api.public_routes(ctx.issuer),
        Mount("/api/v2", routes=api_routes),
        Mount(
            "/api/cairn/v1",
            routes=[
                *identity_api.routes(ctx.issuer),
                *teams_api.cairn_routes(grants, UserAdmin(ctx.db, ctx.clock)),
                *audit_api.routes(AuditLog(ctx.db)),
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

    # One LISTEN connection for every channel (PostgreSQL; SQLite has no other writer).
    listener = Listener(ctx.settings.database_url) if ctx.settings.is_postgres else None
    if listener is not None and ctx.settings.oidc_listen:
        ctx.issuer.follow(listener)
    jobs = background_jobs(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if listener is not None:
            listener.start()
        jobs.start()
        try:
            yield
        finally:
            await jobs.stop()
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


@dataclass(frozen=True)
class BackgroundJob:
    """Work no request asks for: ``run`` (blocking: it runs in a worker thread) every
    ``interval`` seconds, the first time at start. ``due`` (cheap, on the event loop) may skip
    a turn without a thread hop; after a failure (logged) the next turn comes after
    ``retry_after`` seconds instead. Every replica runs every job: a job that must happen once
    relies on the database to let one replica win."""

    name: str
    interval: float
    run: Callable[[], object]
    due: Callable[[], bool] | None = None
    retry_after: float | None = None


class BackgroundJobs:
    """The registry of background jobs: one asyncio task per job, started by the lifespan
    and cancelled at shutdown."""

    def __init__(self) -> None:
        self.jobs: list[BackgroundJob] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, job: BackgroundJob) -> None:
        self.jobs.append(job)

    def start(self) -> None:
        """Start every job (on the running event loop)."""
        self._tasks = [asyncio.create_task(_loop(job), name=job.name) for job in self.jobs]

    async def stop(self) -> None:
        """Cancel every job and wait until each has stopped."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _loop(job: BackgroundJob) -> None:
    while True:
        wait = job.interval
        if job.due is None or job.due():
            try:
                await asyncio.to_thread(job.run)
            except Exception:
                wait = job.interval if job.retry_after is None else job.retry_after
                log.exception(
                    f"{job.name} failed; will retry", extra={"job": job.name, "retry_in_s": wait}
                )
        await asyncio.sleep(wait)


def background_jobs(ctx: AppContext) -> BackgroundJobs:
    """Every background job of this process."""
    jobs = BackgroundJobs()
    # Finish work a crash interrupted (state uploads), then tidy up periodically.
    jobs.add(BackgroundJob("housekeeping", 600.0, lambda: _housekeeping(ctx)))
    # Rebuild the issuer's in-memory documents when they go stale (TTL, notification, a retired
    # key leaving the JWKS). A failed refresh keeps serving the last good documents.
    jobs.add(
        BackgroundJob(
            "refreshing the signing keys",
            0.2,
            ctx.issuer.refresh,
            due=ctx.issuer.needs_refresh,
            retry_after=5.0,
        )
    )
    # Scheduled rotation; every replica runs it, the database lets one rotation win.
    jobs.add(BackgroundJob("scheduled key rotation", 60.0, lambda: _rotate_when_due(ctx.issuer)))
    return jobs


def _housekeeping(ctx: AppContext) -> None:
    ctx.states.process_pending()
    ctx.states.discard_stale_pending(ctx.settings.upload_url_ttl_seconds + 3600)


def _rotate_when_due(issuer: Issuer) -> None:
    plan = issuer.tick()
    if plan is not None:
        log.info("scheduled key rotation", extra={"changes": plan.summary()})
