"""The composition point: settings → database → stores → services → routes.

The only module that knows every service. ``build_services`` does everything that may refuse
to start (migrations, secret-key check, blob store check) and builds each service once;
``create_app`` wires the routes, the request pipeline (with its authenticators), the
organization hooks and the background jobs around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from cairn.admin import audit_api, audit_trail, tfe_admin
from cairn.admin.audit_trail import AuditTrail
from cairn.admin.tfe_admin import SiteAdmin
from cairn.agents import api as agents_api
from cairn.agents import protocol as agent_protocol
from cairn.agents.service import AgentPoolService
from cairn.agents.sessions import Agents
from cairn.agents.workspace_settings import check_agent_pool
from cairn.audit.lane import AuditedLane
from cairn.audit.service import AuditLog
from cairn.auth import account_update, accounts_api, login_api, tokens_api
from cairn.auth import api as auth_api
from cairn.auth.account_update import AccountUpdates
from cairn.auth.accounts import UserAccounts
from cairn.auth.hooks import rename_org_service_account
from cairn.auth.login import LoginService, login_service
from cairn.auth.throttle import LoginLimits
from cairn.auth.token_store import TokenLedger
from cairn.auth.tokens import TokenService
from cairn.auth.users import SqlUsers
from cairn.auth.usertokens import UserTokens
from cairn.blobs import open_blob_store
from cairn.blobs.collector import BlobCollector
from cairn.blobs.store import BlobStore, disk_full_error, is_disk_full
from cairn.clock import Clock, SystemClock
from cairn.config import Settings
from cairn.configversions import api as cv_api
from cairn.configversions.references import config_blob_references
from cairn.configversions.service import ConfigVersions
from cairn.crypto import Keyring, load_or_create_secret
from cairn.db import meta
from cairn.db.engine import Database, make_engine, no_statement_timeout
from cairn.db.notify import Listener
from cairn.errors import ApiError, Invalid, MethodNotAllowed, NotFound, SecretKeyMismatch
from cairn.httpstate import api as httpstate_api
from cairn.httpstate.auth import BasicTokenAuthenticator
from cairn.httpstate.service import HttpStates
from cairn.identity import api as identity_api
from cairn.identity.discovery import check_issuer
from cairn.identity.errors import IdentityConfigError
from cairn.identity.issuer import Issuer
from cairn.identity.keys import as_alg
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.store import SqlKeyStore
from cairn.migrations.migrate import is_current, upgrade
from cairn.organizations import api as org_api
from cairn.organizations.hooks import OrganizationHooks
from cairn.organizations.service import OrganizationService
from cairn.organizations.tokens import OrganizationTokens
from cairn.registry import api as registry_api
from cairn.runs import agent_api as job_api
from cairn.runs import api as runs_api
from cairn.runs.agent_api import AgentJobs
from cairn.runs.agent_api import Limits as AgentJobLimits
from cairn.runs.events import RunHooks
from cairn.runs.job_tokens import JOB_TOKEN_PREFIX, JobTokens
from cairn.runs.jobs import JobQueue
from cairn.runs.lifecycle import RunLifecycle
from cairn.runs.logs import LogStore, plan_blob_references
from cairn.runs.scheduler import Scheduler
from cairn.runs.service import RunService
from cairn.runs.store import ConfigurationVersionRows
from cairn.runs.sweep import INTERVAL as JOB_SWEEP_INTERVAL
from cairn.runs.sweep import JobSweep
from cairn.s3api import api as s3_api
from cairn.s3api import sts as s3_sts
from cairn.s3api.credentials import Credentials as S3Credentials
from cairn.s3api.service import S3Objects
from cairn.s3api.vhost import VirtualHostBuckets
from cairn.state import api as state_api
from cairn.state import resources as state_resources
from cairn.state.processing import ResourceCounter
from cairn.state.references import state_blob_references
from cairn.state.resources import WorkspaceResources
from cairn.state.service import StateService
from cairn.state.uploads import HostedUploads
from cairn.teams import api as teams_api
from cairn.teams import memberships_api
from cairn.teams.grants import GrantService
from cairn.teams.hooks import create_owners_team
from cairn.teams.memberships import Memberships, accept_invitations
from cairn.teams.projects import TeamProjectService
from cairn.teams.service import TeamService
from cairn.teams.tokens import TeamTokens
from cairn.teams.users import UserAdmin
from cairn.tfeapi import service_discovery as discovery
from cairn.tfeapi.http import Pipeline
from cairn.tfeapi.jsonapi import Includes, error_response
from cairn.tfeapi.observe import Metrics, ObserveMiddleware, public_doors
from cairn.tfeapi.signed import Signer
from cairn.variables import api as variables_api
from cairn.variables import sets_api as variable_sets_api
from cairn.variables.service import Variables
from cairn.variables.sets_service import VariableSets
from cairn.vcs import api as vcs_api
from cairn.vcs import connect as vcs_connect
from cairn.vcs.forges import forge_for
from cairn.vcs.service import VcsConnections
from cairn.vcs.tokens import VcsTokens
from cairn.vcs.wire import callback_path
from cairn.vcs.workspace_settings import check_vcs_repo
from cairn.webhooks import api as webhooks_api
from cairn.webhooks import ingest, statuses
from cairn.webhooks import vcs_events as vcs_events_api
from cairn.webhooks.archives import archive_blob_references
from cairn.webhooks.ingest import IngestServices
from cairn.webhooks.receiver import Receiver, SecretCache
from cairn.webhooks.registration import HookRegistrar, record_repo_hook
from cairn.webhooks.statuses import StatusHook
from cairn.webhooks.worker import DeliverySignal, DeliveryWorker, prune_deliveries
from cairn.workspaces import api as ws_api
from cairn.workspaces import hooks as ws_hooks
from cairn.workspaces import relationships_api as ws_relationships_api
from cairn.workspaces.consumers import RemoteStateConsumers
from cairn.workspaces.events import WorkspaceHooks
from cairn.workspaces.locks import LockService
from cairn.workspaces.relationships import WorkspaceRelationships
from cairn.workspaces.service import WorkspaceService
from cairn.workspaces.tags import TagService

if TYPE_CHECKING:
    from cairn.auth.idp import IdpClient

log = logging.getLogger("cairn")


@dataclass
class Services:
    """Every service of one cairn process, built once by ``build_services``."""

    settings: Settings
    db: Database
    blobs: BlobStore
    collector: BlobCollector  # reclaims blobs no row references (housekeeping)
    keyring: Keyring
    clock: Clock
    tokens: TokenService
    organizations: OrganizationService
    workspaces: WorkspaceService
    locks: LockService
    tags: TagService
    states: StateService
    uploads: HostedUploads
    configversions: ConfigVersions  # uploaded configurations (.tar.gz) that runs use
    issuer: Issuer
    teams: TeamService
    grants: GrantService
    team_projects: TeamProjectService
    users: UserAdmin
    accounts: UserAccounts  # disabling and enabling people
    user_tokens: UserTokens
    organization_tokens: OrganizationTokens
    team_tokens: TeamTokens
    login: LoginService
    audit_log: AuditLog
    audited: AuditedLane  # the audited executor: jobs whose audit events commit together
    agent_pools: AgentPoolService  # agent pools, their tokens and agents (TFE API)
    agents: Agents  # agent registration and sessions; holds the built-in workers' secret
    variables: Variables  # workspace variables, sealed; runs read them with for_job
    variable_sets: VariableSets  # organizations' variable sets; for_job merges them in
    job_tokens: JobTokens  # per-phase job tokens (cairn_job_…), hashed at rest
    jobs: JobQueue  # the run queue: enqueue, claim (one transaction), cancel signals
    logs: LogStore  # plan and apply logs: chunks in, the CLI's log-read URL out
    runs: RunService  # runs, plans, applies: the TFE API and the run state machine
    scheduler: Scheduler  # admits runs (lock, queue), confirms, finishes, starts the next
    lifecycle: RunLifecycle  # what a job's start and finish do to its run
    agent_jobs: AgentJobs  # the agent protocol's job side (claim … finish)
    job_sweep: JobSweep  # expired leases, lost agents, phase timeouts
    vcs: VcsConnections  # VCS connections (oauth-clients) and their tokens (TFE API)
    vcs_tokens: VcsTokens  # fresh forge credentials, refreshed once across replicas
    vcs_connect: vcs_connect.ConnectFlow  # the OAuth browser flow of OAuth-app connections
    webhooks: Receiver  # VCS webhooks: verified, recorded, acknowledged (no forge call)
    deliveries: DeliverySignal  # wakes the webhook worker of this process
    # What the webhook worker's ingest and commit-status posting use (set after the rest).
    ingest: IngestServices | None = None
    idp: IdpClient | None = None


@dataclass
class Startup:
    """What happened at start that the operator must be told once."""

    services: Services
    created_secret: bool
    bootstrap_token: str | None


def build_services(settings: Settings, *, clock: Clock | None = None) -> Startup:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret, created = load_or_create_secret(settings.data_dir, settings.secret_key)
    keyring = Keyring(secret)
    db = Database(
        make_engine(settings.database_url, statement_timeout=settings.db_statement_timeout)
    )
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
    blobs = open_blob_store(settings, db, clock)
    collector = BlobCollector(blobs, clock, grace=settings.blob_grace)
    # What rows reference blobs (configuration versions and logs will register theirs).
    collector.add_references("state versions", state_blob_references(db))
    collector.add_references("configuration versions", config_blob_references(db))
    tokens = TokenService(db, keyring, clock)
    ledger = TokenLedger(db, clock, tokens)
    counter = ResourceCounter(db, blobs)
    # One signer for every signed URL (state and configuration uploads, log reads).
    signer = Signer(keyring, clock)
    # What agents and runs do when a workspace changes (registered as their services are built).
    workspace_hooks = WorkspaceHooks()
    # execution-mode agent needs an agent pool that allows the workspace.
    workspace_hooks.check_settings.append(check_agent_pool)
    # vcs-repo: a token of a connection of the organization, allowed in the workspace's
    # project; fills the connection's columns (before the repo-hook recorder reads them).
    workspace_hooks.check_settings.append(check_vcs_repo)
    # A workspace given a repository on a (non-App) connection: cairn's webhook is created on
    # the forge once per (connection, repository) by the webhook worker's round.
    workspace_hooks.check_settings.append(record_repo_hook(clock))
    collector.add_references("plans", plan_blob_references(db))
    # Commit archives fetched from forges once per (connection, repository, commit).
    collector.add_references("VCS commit archives", archive_blob_references(db))
    job_tokens = JobTokens(db, keyring, clock)
    tokens.add_prefix(JOB_TOKEN_PREFIX, job_tokens.authenticator())
    jobs = JobQueue(
        db,
        clock,
        job_tokens,
        plan_timeout=settings.plan_timeout,
        apply_timeout=settings.apply_timeout,
    )
    logs = LogStore(
        db,
        signer,
        settings.public_url,
        url_ttl=2 * max(settings.plan_timeout, settings.apply_timeout),
    )
    # What higher floors do when a run changes: a run a VCS event started updates its
    # commit's status (an outbox row in the run's transaction; posted by the webhook worker).
    run_hooks = RunHooks()
    scheduler = Scheduler(jobs, run_hooks)
    lifecycle = RunLifecycle(scheduler)
    agents = Agents(keyring, clock)
    variables = Variables(db, keyring, clock)
    runs = RunService(db, clock, scheduler, ConfigurationVersionRows(), blobs)
    workspace_hooks.after_unlock.append(runs.after_unlock)
    issuer = build_issuer(settings, db, keyring, clock)
    deliveries = DeliverySignal()
    run_hooks.after_change.append(StatusHook(settings.public_url, clock, deliveries.wake))
    vcs = VcsConnections(db, keyring, clock, settings.public_url)
    vcs_tokens = VcsTokens(
        db, keyring, clock, lambda client_id: f"{settings.public_url}{callback_path(client_id)}"
    )
    services = Services(
        settings=settings,
        db=db,
        blobs=blobs,
        collector=collector,
        keyring=keyring,
        clock=clock,
        tokens=tokens,
        organizations=OrganizationService(db, clock, organization_hooks()),
        workspaces=WorkspaceService(db, clock, workspace_hooks),
        locks=LockService(db, clock, workspace_hooks),
        tags=TagService(db),
        states=StateService(db, blobs, clock, counter, max_state_bytes=settings.max_state_bytes),
        uploads=HostedUploads(
            db,
            blobs,
            signer,
            clock,
            ttl=timedelta(seconds=settings.upload_url_ttl_seconds),
            max_state_bytes=settings.max_state_bytes,
        ),
        configversions=ConfigVersions(
            db,
            blobs,
            signer,
            clock,
            ttl=timedelta(seconds=settings.upload_url_ttl_seconds),
            max_bytes=settings.max_config_bytes,
        ),
        issuer=issuer,
        teams=TeamService(db, clock),
        grants=GrantService(db, clock),
        team_projects=TeamProjectService(db, clock),
        users=UserAdmin(db, clock),
        accounts=UserAccounts(db, clock),
        user_tokens=UserTokens(ledger),
        organization_tokens=OrganizationTokens(ledger),
        team_tokens=TeamTokens(ledger),
        login=LoginService(
            db,
            keyring,
            clock,
            tokens,
            LoginLimits(
                burst=settings.login_rate_burst,
                per_minute=settings.login_rate_per_minute,
                pending_per_address=settings.login_pending_per_address,
                audit_window=settings.login_audit_window,
            ),
        ),
        audit_log=AuditLog(db),
        audited=AuditedLane(db),
        agent_pools=AgentPoolService(db, keyring, clock),
        agents=agents,
        variables=variables,
        variable_sets=VariableSets(db, keyring, clock, variables),
        job_tokens=job_tokens,
        jobs=jobs,
        logs=logs,
        runs=runs,
        scheduler=scheduler,
        lifecycle=lifecycle,
        agent_jobs=AgentJobs(
            db,
            clock,
            jobs,
            job_tokens,
            logs,
            lifecycle,
            agents,
            variables,
            blobs,
            AgentJobLimits(settings.public_url, settings.max_state_bytes),
            issuer=issuer,
        ),
        job_sweep=JobSweep(db, clock, jobs, job_tokens, logs, lifecycle, agents),
        vcs=vcs,
        vcs_tokens=vcs_tokens,
        vcs_connect=vcs_connect.ConnectFlow(
            db,
            keyring,
            clock,
            signer,
            settings.public_url,
            check_token=lambda: vcs.check_token,
            store_new_grant=vcs_tokens.store_new_grant,
        ),
        webhooks=Receiver(db, clock, SecretCache(keyring), deliveries.wake),
        deliveries=deliveries,
    )
    # A configuration version uploaded with auto-queue-runs queues a run.
    services.configversions.after_upload.append(runs.after_upload)
    # An IdP login with a vouched-for email takes up the invitations sent to it.
    services.login.after_idp_login.append(accept_invitations)
    tokens.ensure_admin()
    if settings.admin_token:
        tokens.set_admin_env_token(settings.admin_token)
    # Webhook deliveries → versions from commits, runs, commit statuses (webhooks.ingest):
    # the worker binds ``ingest.handle(services.ingest, delivery)`` and
    # ``statuses.post_pending(db, clock, services.ingest.forge_for)``.
    services.ingest = IngestServices(
        db=db,
        clock=clock,
        blobs=blobs,
        configs=services.configversions,
        runs=runs,
        forge_for=lambda token_id: forge_for(
            vcs_tokens.credential(token_id), max_archive_bytes=settings.max_config_bytes
        ),
        public_url=settings.public_url,
    )
    services.idp = build_idp(settings, db, keyring, clock)
    bootstrap = None if settings.admin_token else tokens.bootstrap_admin_token()
    return Startup(services=services, created_secret=created, bootstrap_token=bootstrap)


def organization_hooks() -> OrganizationHooks:
    """What higher domains do when an organization changes (run in its transaction)."""
    return OrganizationHooks(
        after_create=[create_owners_team],
        after_rename=[rename_org_service_account],
        before_delete=[ws_hooks.refuse_locked_workspaces],
        before_delete_project=[ws_hooks.refuse_used_project],
        workspace_counts=ws_hooks.readable_counts,
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
    # Imported only when an IdP is configured: its HTTP client (httpx) is a tenth of the
    # start-up time of a cairn that does not use it (bench/startup.py).
    from cairn.auth.idp import IdpClient, IdpSettings, IdpUnreachable

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
        max_pending_per_address=settings.login_pending_per_address,
    )
    try:
        idp.check()
    except IdpUnreachable as exc:
        log.warning(
            "the identity provider is unreachable; logins will retry", extra={"why": str(exc)}
        )
    return idp


def _ready(services: Services) -> tuple[bool, str]:
    try:
        with services.db.unit_of_work() as s:
            s.execute(text("SELECT 1"))
        if not is_current(services.db.engine):
            return False, "database schema is not at the newest migration"
    except Exception as exc:
        return False, f"database unreachable: {type(exc).__name__}"
    return True, "ready"


def create_app(services: Services) -> Starlette:
    metrics = Metrics()
    # VCS token refreshes, races recovered, needs_reauth (VCS-11).
    for collector in services.vcs_tokens.metrics.collectors:
        metrics.registry.register(collector)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, why = await asyncio.to_thread(_ready, services)
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    api_routes = [
        Route("/ping", discovery.ping, methods=["GET"]),
        *auth_api.routes(SqlUsers(services.db)),
        *tokens_api.routes(
            services.user_tokens,
            services.organization_tokens,
            services.team_tokens,
            others=[agents_api.PoolTokensById(services.agent_pools)],
        ),
        *agents_api.routes(services.agent_pools),
        *org_api.routes(services.organizations),
        *ws_api.routes(
            services.workspaces,
            services.locks,
            services.tags,
            count_resources=services.states.process_current,
            public_url=services.settings.public_url,
        ),
        *vcs_api.routes(services.vcs, services.clock),
        *state_api.routes(
            services.states,
            services.uploads,
            services.workspaces.resolve,
            state_api.Limits(
                services.settings.public_url,
                services.settings.max_state_bytes,
                services.settings.max_json_body_bytes,
            ),
        ),
        *variables_api.routes(services.variables),
        *variable_sets_api.routes(services.variable_sets),
        *cv_api.routes(services.configversions, cv_api.Limits(services.settings.public_url)),
        *vcs_events_api.routes(services.db),
        *runs_api.routes(services.runs, services.logs, services.clock),
        *teams_api.tfe_routes(
            services.teams,
            services.grants,
            services.team_projects,
            Memberships(services.db, services.clock),
        ),
        *registry_api.tfe_routes(services.organizations),
        *ws_relationships_api.routes(
            RemoteStateConsumers(services.db), WorkspaceRelationships(services.db, services.clock)
        ),
        *state_resources.routes(WorkspaceResources(services.db, services.blobs)),
        *account_update.routes(AccountUpdates(services.db, services.clock)),
        *memberships_api.routes(Memberships(services.db, services.clock)),
        *audit_trail.routes(AuditTrail(services.db)),
        *tfe_admin.routes(
            SiteAdmin(services.db, services.clock),
            services.accounts,
            services.organizations,
            services.workspaces,
        ),
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
        *login_api.routes(services.login, services.idp),
        *identity_api.public_routes(services.issuer),
        Mount("/api/v2", routes=api_routes),
        # The agent protocol: one Mount for every route under the prefix (Starlette does not
        # fall through to a second Mount of the same prefix).
        Mount(
            agent_protocol.PREFIX,
            routes=[
                *agent_protocol.routes(services.agents, services.db),
                *job_api.routes(services.agent_jobs),
            ],
        ),
        Mount(
            registry_api.PROTOCOL_PATH, routes=registry_api.protocol_routes(services.organizations)
        ),
        # The S3-compatible endpoint (path style): a bucket per organization; its STS first.
        *s3_sts.routes(
            s3_sts.Sts(services.issuer, S3Credentials(services.keyring), services.clock)
        ),
        *s3_api.s3_routes(
            S3Objects(
                services.db, services.clock, services.states, services.workspaces, services.locks
            ),
            services.settings.max_state_bytes,
        ),
        Mount(
            "/api/cairn/v1",
            routes=[
                *identity_api.routes(services.issuer),
                *teams_api.cairn_routes(services.grants, services.users),
                *accounts_api.routes(services.accounts),
                *audit_api.routes(services.audit_log),
                *services.logs.routes(),
                *httpstate_api.routes(
                    HttpStates(services.db, services.clock, services.states, services.locks.hooks),
                    httpstate_api.Limits(
                        services.settings.max_state_bytes, services.settings.max_json_body_bytes
                    ),
                ),
                *s3_api.credential_routes(
                    s3_api.Exchange(services.db, services.clock, S3Credentials(services.keyring))
                ),
                *vcs_connect.routes(services.vcs_connect),
                *webhooks_api.routes(
                    services.webhooks,
                    public_url=services.settings.public_url,
                    register_hooks=services.settings.vcs_register_hooks,
                ),
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

    async def refused_value(request: Request, exc: Exception) -> Response:
        # A value the database refused (PostgreSQL: a NUL byte inside a state file, a number
        # out of range); the edge refuses such input in documents and parameters first. The
        # transaction is already rolled back. Only the driver's error class is logged: its
        # message may quote the value, and the engine hides statement parameters.
        assert isinstance(exc, DataError)
        log.warning(
            "the database refused a value",
            extra={
                "path": request.url.path.split("/hosted-upload/")[0],
                "error": type(exc.orig).__name__,
            },
        )
        return error_response(
            Invalid("the request holds a value the database cannot store (such as a NUL byte)")
        )

    async def operational(request: Request, exc: Exception) -> Response:
        # SQLite "database or disk is full" / PostgreSQL disk_full (53100), e.g. while a row
        # commits: nothing was stored (the transaction rolled back), say why. Anything else is
        # unexpected.
        if is_disk_full(exc):
            log.error(
                "the disk is full; a write was refused",
                extra={"path": request.url.path.split("/hosted-upload/")[0]},
            )
            return error_response(disk_full_error())
        return await unexpected(request, exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception(
            "unhandled error", extra={"path": request.url.path.split("/hosted-upload/")[0]}
        )
        err = ApiError("cairn failed to handle this request; the error is in the server log")
        return error_response(err)

    # One LISTEN connection for every channel (PostgreSQL; SQLite has no other writer).
    listener = Listener(services.settings.database_url) if services.settings.is_postgres else None
    if listener is not None and services.settings.oidc_listen:
        services.issuer.follow(listener)
    if listener is not None:
        services.jobs.signal.follow(listener)  # a claim waiting here wakes on another's enqueue
        services.deliveries.follow(listener)  # a webhook another replica received
        services.vcs_tokens.follow(listener)  # a token another replica refreshed
    jobs = background_jobs(services)

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
            await asyncio.to_thread(services.audited.close)

    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            ApiError: api_error,
            DataError: refused_value,
            OperationalError: operational,
            Exception: unexpected,
        },
        lifespan=lifespan,
    )
    app.state.pipeline = Pipeline(
        db=services.db,
        lane=services.audited,
        authenticators={
            "token": services.tokens.authenticator(),
            "job": services.job_tokens.authenticator(agent_protocol=True),
            # Terraform's http backend: the token as the Basic password (or a Bearer token).
            "http-basic": BasicTokenAuthenticator(services.tokens.authenticator()),
            # The S3 endpoint: AWS Signature Version 4 with cairn's S3 credentials.
            "sigv4": s3_api.SigV4Authenticator(
                S3Credentials(services.keyring),
                services.tokens,
                services.clock,
                db=services.db,
                issuer=services.issuer,
            ),
        },
        default_limit=services.settings.max_json_body_bytes,
        includes=includes(services),
        body_timeout=services.settings.body_timeout.total_seconds(),
    )
    app.add_middleware(
        ObserveMiddleware,
        metrics=metrics,
        access_log=services.settings.access_log,
        doors=public_doors(routes),  # discovery, JWKS: answered before the router
    )
    if services.settings.s3_domain:  # <organization>.<domain>/<key> → /s3/<organization>/<key>
        app.add_middleware(VirtualHostBuckets, domain=services.settings.s3_domain)
    return app


def includes(services: Services) -> Includes:
    """What ``include=`` can name, and how each domain loads its resources for ``included``
    (through its services, so only what the caller may read)."""
    found = Includes()
    auth_api.offer_includes(found, SqlUsers(services.db))
    org_api.offer_includes(found, services.organizations)
    ws_api.offer_includes(found, services.workspaces, services.settings.public_url)
    agents_api.offer_includes(found)
    state_api.offer_includes(found, services.states, services.uploads, services.settings.public_url)
    teams_api.offer_includes(found, services.teams)
    cv_api.offer_includes(found, services.configversions, services.settings.public_url)
    runs_api.offer_includes(found, services.runs, services.logs, services.clock)
    memberships_api.offer_includes(found, Memberships(services.db, services.clock))
    variable_sets_api.offer_includes(found, services.variable_sets)
    return found


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


def background_jobs(services: Services) -> BackgroundJobs:
    """Every background job of this process."""
    jobs = BackgroundJobs()
    # Finish work a crash interrupted (state uploads), then tidy up periodically.
    jobs.add(BackgroundJob("housekeeping", 600.0, lambda: _housekeeping(services)))
    # Delete blobs no row references once past the grace period (CAIRN_BLOB_GRACE), and
    # what writers killed mid-upload left behind. Every replica may sweep: see blobs.collector.
    jobs.add(BackgroundJob("reclaiming blob storage", 3600.0, lambda: _reclaim_blobs(services)))
    # Rebuild the issuer's in-memory documents when they go stale (TTL, notification, a retired
    # key leaving the JWKS). A failed refresh keeps serving the last good documents.
    jobs.add(
        BackgroundJob(
            "refreshing the signing keys",
            0.2,
            services.issuer.refresh,
            due=services.issuer.needs_refresh,
            retry_after=5.0,
        )
    )
    # Jobs whose lease expired (unstarted: requeued; running: errored "agent lost", lock
    # released), phases past their timeout, and agents that stopped heartbeating (unknown after
    # 30 s, errored 5 min later — their running jobs errored —, deleted an hour after that).
    # Every replica sweeps; each change is conditional on the row as read.
    jobs.add(BackgroundJob("sweeping jobs and agents", JOB_SWEEP_INTERVAL, services.job_sweep.run))
    # VCS tokens expiring within 10 minutes are refreshed (OAuth) or re-minted (GitHub App)
    # here, so forge calls rarely wait for a refresh. Every replica runs it; the row's lease
    # lets one refresh per token win.
    jobs.add(BackgroundJob("refreshing VCS tokens", 60.0, services.vcs_tokens.refresh_due))
    # Webhook deliveries: claimed once across replicas and handed to the ingest (versions from
    # commits, runs); each round then posts commit statuses and registers pending forge hooks.
    if services.ingest is not None:
        jobs.add(_webhook_worker(services, services.ingest))
    # Webhook deliveries are kept 30 days (the vcs-events list), then deleted.
    jobs.add(
        BackgroundJob(
            "pruning webhook deliveries",
            3600.0,
            lambda: prune_deliveries(services.db, services.clock),
        )
    )
    # Scheduled rotation; every replica runs it, the database lets one rotation win.
    jobs.add(
        BackgroundJob("scheduled key rotation", 60.0, lambda: _rotate_when_due(services.issuer))
    )
    return jobs


def _webhook_worker(services: Services, ingest_services: IngestServices) -> BackgroundJob:
    worker = DeliveryWorker(
        services.db,
        services.clock,
        lambda delivery: ingest.handle(ingest_services, delivery),
        signal=services.deliveries,
    )
    worker.add_step(
        "commit statuses",
        lambda: statuses.post_pending(services.db, services.clock, ingest_services.forge_for),
    )
    worker.add_step(
        "forge webhooks",
        HookRegistrar(
            services.db,
            services.keyring,
            services.clock,
            lambda token_id: forge_for(services.vcs_tokens.credential(token_id)),
            services.settings.public_url,
            enabled=services.settings.vcs_register_hooks,
        ).run,
    )
    return BackgroundJob("handling VCS webhooks", 0.2, worker.run, due=worker.due, retry_after=5.0)


def _housekeeping(services: Services) -> None:
    # Maintenance, not request work: not bounded by the statement timeout.
    with no_statement_timeout():
        services.states.process_pending()
        services.states.discard_stale_pending(services.settings.upload_url_ttl_seconds + 3600)
        # Configuration versions whose upload URL expired unused (or whose upload died with
        # a process) are errored, so nothing waits on them.
        services.configversions.expire_stale_pending(
            services.clock.now()
            - timedelta(seconds=services.settings.upload_url_ttl_seconds + 3600)
        )
        # Failed-login summaries whose window is over; expired login codes and IdP states.
        services.login.housekeeping()


def _reclaim_blobs(services: Services) -> None:
    with no_statement_timeout():
        services.collector.sweep()


def _rotate_when_due(issuer: Issuer) -> None:
    plan = issuer.tick()
    if plan is not None:
        log.info("scheduled key rotation", extra={"changes": plan.summary()})
