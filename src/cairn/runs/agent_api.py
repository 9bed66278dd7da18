"""The agent job protocol, server side: ``/api/agent/v1/jobs/…`` (plain JSON, not JSON:API).

Spoken by the server's built-in workers and by ``cairn agent`` alike (``cairn.executor``):

| endpoint | auth | |
|---|---|---|
| ``POST /jobs/claim?wait=25`` | agent session token | 200 a job, or 204 after at most ``wait`` s |
| ``POST /jobs/{id}/start`` | job token | ``{attempt}`` → 200 ``{}`` |
| ``POST /jobs/{id}/heartbeat`` | job token | ``{attempt, log_offset}`` → lease and cancel |
| ``PUT /jobs/{id}/logs?offset=N&attempt=A`` | job token | raw bytes ≤ 1 MiB → 204 |
| ``PUT /jobs/{id}/plan?attempt=A&format=binary|json`` | job token, plan | → 204 |
| ``GET /jobs/{id}/plan`` | job token, apply | the plan file |
| ``GET /jobs/{id}/variables`` | job token | the workspace's variables |
| ``POST /jobs/{id}/workload-identity`` | job token | ``{attempt}`` → 200 the phase's
  workload-identity tokens and their configurations (``runs.credentials``), or 422
  ``credentials`` naming the variable to fix |
| ``POST /jobs/{id}/finish`` | job token | ``{attempt, status, …}`` → 200 ``{}`` |

Errors are ``{"error": code, "detail": text}`` (plus ``offset`` for a log gap). Fencing: every
call with a job token names its ``attempt``; another attempt's call is a 409
``stale_attempt``, and a token whose job was taken away (lease lost, canceled, claimed again)
a 409 ``lease_lost``. A job token reaches only its own job (another job's is "not found").

A claim long-polls without holding a database connection: it tries, then waits on the job
signal (``NOTIFY cairn_jobs`` or an in-process wake-up) and tries again until ``wait`` is over.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute

from cairn.audit.log import Actor
from cairn.authz.subject import RunJob
from cairn.blobs.store import BlobStore
from cairn.clock import Clock, iso8601
from cairn.db.engine import Database, affected
from cairn.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
)
from cairn.identity.issuer import Minted, Place
from cairn.identity.lifecycle import RotationPolicy
from cairn.organizations.model import Organization
from cairn.runs import credentials
from cairn.runs.job_tokens import JobTokens, LeaseLost
from cairn.runs.jobs import LEASE, MAX_WAIT, PHASES, AgentSession, Claimed, JobQueue
from cairn.runs.jobs_model import ACTIVE, Job
from cairn.runs.lifecycle import JobContext, PhaseOutcome, RunLifecycle
from cairn.runs.logs import MAX_CHUNK, LogStore, OffsetMismatch
from cairn.runs.model import Run
from cairn.tfeapi.http import Call, bearer_token, route
from cairn.variables.service import JobVariables
from cairn.workspaces.model import Workspace

PREFIX: Final = "/api/agent/v1"
SMALL_BODY: Final = 16 * 1024  # every JSON body of the protocol
FINISH_STATUSES: Final = ("finished", "errored", "canceled")
MAX_ERROR: Final = 1000  # characters of a finish's error line


class Agents(Protocol):
    """What the job protocol needs from agents (``agents.Agents``)."""

    def authenticate_session(self, s: Session, token: str | None) -> AgentSession: ...

    def touch(self, s: Session, agent_id: str, *, busy: bool, now: datetime) -> None: ...


class Variables(Protocol):
    """``variables.VariableService.for_job``."""

    def for_job(self, s: Session, workspace_id: str) -> JobVariables: ...


class JobIssuer(Protocol):
    """What the workload-identity call asks of the issuer (``identity.issuer.Issuer``)."""

    policy: RotationPolicy  # its max_token_ttl caps every token's lifetime

    def locate_in(self, conn: Any, ws_id: str) -> Place | None: ...

    def mint_for_job(
        self,
        s: Session,
        place: Place,
        *,
        audience: str,
        phase: credentials.TokenPhase,
        speculative: bool,
        ttl: timedelta,
        run_id: str,
        actor: Actor,
        config: str,
    ) -> Minted: ...


class StaleAttempt(Conflict):
    code = "stale_attempt"


class NotAcceptable(Conflict):
    """A call the job's state does not allow (start after finish, a plan upload to an apply)."""

    code = "job_state"


def agent_error(err: ApiError) -> Response:
    """The protocol's error body: ``{"error": code, "detail": text}``."""
    body: dict[str, Any] = {"error": err.code.replace("-", "_"), "detail": err.detail}
    if isinstance(err, OffsetMismatch):
        body["offset"] = err.offset
    return JSONResponse(body, status_code=err.status, headers=err.headers)


@dataclass(frozen=True)
class Limits:
    public_url: str
    max_plan_bytes: int


class AgentJobs:
    """The handlers' service: one unit of work per call, the fencing rules, the answers."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        queue: JobQueue,
        tokens: JobTokens,
        logs: LogStore,
        lifecycle: RunLifecycle,
        agents: Agents,
        variables: Variables,
        blobs: BlobStore,
        limits: Limits,
        *,
        issuer: JobIssuer | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.queue = queue
        self._tokens = tokens
        self._logs = logs
        self._lifecycle = lifecycle
        self._agents = agents
        self._variables = variables
        self.blobs = blobs
        self.limits = limits
        self._issuer = issuer

    # ---- claim ---------------------------------------------------------------------------

    def check_session(self, token: str) -> None:
        """Refuse a bad session token at once (before any long wait)."""
        with self._db.unit_of_work() as s:
            self._agents.authenticate_session(s, token)

    def try_claim(self, token: str, accept: list[str]) -> dict[str, Any] | None:
        """One claim attempt, in one writing unit of work: the job's answer, or None."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            agent = self._agents.authenticate_session(s, token)
            claimed = self.queue.claim_in(s, agent, accept, now)
            if claimed is None:
                return None
            self._agents.touch(s, agent.agent_id, busy=True, now=now)
            ctx = self._lifecycle.job_context(s, claimed.run_id, claimed.phase_id)
            answer = self._answer(claimed, ctx, now)
            s.commit()
            return answer

    def _answer(self, job: Claimed, ctx: JobContext, now: datetime) -> dict[str, Any]:
        base = self.limits.public_url.rstrip("/")
        own = f"{base}{PREFIX}/jobs/{job.job_id}"
        return {
            "job_id": job.job_id,
            "attempt": job.attempt,
            "run_id": job.run_id,
            "workspace_id": ctx.workspace_id,
            "workspace_name": ctx.workspace_name,
            "organization_name": ctx.organization_name,
            "working_directory": ctx.working_directory,
            "phase": job.kind,
            "job_token": job.token,
            "lease_expires_at": iso8601(job.lease_expires_at),
            "timeout_s": max(1, int((job.timeout_at - now).total_seconds())),
            "terraform_version": ctx.terraform_version,
            "operation": {
                "is_destroy": ctx.is_destroy,
                "refresh": ctx.refresh,
                "refresh_only": ctx.refresh_only,
                "plan_only": ctx.plan_only,
                "speculative": ctx.speculative,
                "target_addrs": list(ctx.target_addrs),
                "replace_addrs": list(ctx.replace_addrs),
            },
            "hostname": urlsplit(base).netloc,
            "urls": {
                "configuration": (
                    f"{base}/api/v2/configuration-versions/{ctx.configuration_version_id}/download"
                ),
                "variables": f"{own}/variables",
                "workload_identity": f"{own}/workload-identity",
                "plan": f"{own}/plan",
                "logs": f"{own}/logs",
                "heartbeat": f"{own}/heartbeat",
                "start": f"{own}/start",
                "finish": f"{own}/finish",
            },
        }

    # ---- the job's calls ------------------------------------------------------------------

    def _job(self, s: Session, caller: RunJob, job_id: str, attempt: int) -> Job:
        """The caller's own job, at ``attempt`` and held by an executor."""
        if caller.id != job_id:
            raise NotFound(f"job {job_id} not found, or your job token is not for it")
        job = s.get(Job, job_id, populate_existing=True)
        if job is None:
            raise NotFound(f"job {job_id} not found, or your job token is not for it")
        if attempt != job.attempt:
            raise StaleAttempt(
                f"attempt {attempt} of job {job_id} is stale (the job is at attempt "
                f"{job.attempt}): stop Terraform and drop the job"
            )
        if job.status not in ACTIVE:
            raise NotAcceptable(f"job {job_id} is {job.status}; it takes no more calls")
        return job

    def start(self, caller: RunJob, job_id: str, attempt: int) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            if job.status == "claimed":
                s.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.attempt == attempt, Job.status == "claimed")
                    .values(status="running", started_at=now, lease_expires_at=now + LEASE)
                    .execution_options(synchronize_session=False)
                )
                try:
                    self._lifecycle.phase_started(s, job.run_id, job.phase_id, now)
                except Conflict as exc:
                    # The run no longer waits for this phase (canceled meanwhile): the job
                    # ends here, so nobody claims it again.
                    s.rollback()
                    self._drop(s, job.id, now)
                    s.commit()
                    raise LeaseLost(f"job {job_id} must not start: {exc.detail}") from None
            s.commit()

    def _drop(self, s: Session, job_id: str, now: datetime) -> None:
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE))
            .values(status="canceled", finished_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        self._tokens.revoke(s, job_id, "canceled", now)

    def heartbeat(self, caller: RunJob, job_id: str, attempt: int) -> dict[str, Any]:
        now = self._clock.now()
        lease = now + LEASE
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            kept = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.attempt == attempt, Job.status.in_(ACTIVE))
                .values(lease_expires_at=lease)
                .execution_options(synchronize_session=False)
            )
            if affected(kept) != 1:
                raise NotAcceptable(f"job {job_id} ended meanwhile")
            if job.agent_id is not None:
                self._agents.touch(s, job.agent_id, busy=True, now=now)
            cancel = job.cancel
            s.commit()
        return {"lease_expires_at": iso8601(lease), "cancel": cancel}

    def append_log(
        self, caller: RunJob, job_id: str, attempt: int, offset: int, data: bytes
    ) -> None:
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            self._logs.append(s, job, offset, data)
            s.commit()

    def plan_digest(self, caller: RunJob, job_id: str) -> str:
        """The plan file an apply job applies."""
        with self._db.unit_of_work() as s:
            job = self._job(s, caller, job_id, caller.attempt)
            if job.kind != "apply":
                raise NotAcceptable("only an apply job downloads the plan file")
            digest = self._lifecycle.plan_file_sha256(s, job.run_id)
        if digest is None:
            raise NotFound(f"run {caller.run_id} has no saved plan file to apply")
        return digest

    def check_plan_upload(self, caller: RunJob, job_id: str, attempt: int) -> None:
        with self._db.unit_of_work() as s:
            job = self._job(s, caller, job_id, attempt)
            if job.kind != "plan":
                raise NotAcceptable("only a plan job uploads a plan")

    def attach_plan(self, caller: RunJob, job_id: str, attempt: int, fmt: str, digest: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            if job.kind != "plan":
                raise NotAcceptable("only a plan job uploads a plan")
            self._lifecycle.attach_plan(
                s,
                job.phase_id,
                binary_sha256=digest if fmt == "binary" else None,
                json_sha256=digest if fmt == "json" else None,
            )
            s.commit()

    def variables(self, caller: RunJob, job_id: str) -> dict[str, Any]:
        with self._db.unit_of_work() as s:
            job = self._job(s, caller, job_id, caller.attempt)
            del job
            found = self._variables.for_job(s, caller.workspace_id)
        return {
            "terraform": [{"key": v.key, "value": v.value, "hcl": v.hcl} for v in found.terraform],
            "env": [{"key": v.key, "value": v.value} for v in found.env],
            "sensitive": list(found.sensitive_values),
        }

    def workload_identity(
        self, caller: RunJob, job_id: str, attempt: int, source: str
    ) -> dict[str, Any]:
        """The phase's workload-identity tokens: one fresh token per configuration the job's
        variables ask for (``credentials.configs_for_job``), ``run_phase`` the job's phase
        (``speculative_plan`` for a speculative plan under ``distinct_subject``), valid until
        the phase's timeout capped by the issuer's maximum lifetime. Each mint is audited
        (its ``jti``, never the token) in the same transaction. A misconfiguration is a
        CredentialsError (422 ``credentials``) and mints nothing."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            run = s.get(Run, job.run_id)
            ws = None if run is None else s.get(Workspace, run.workspace_id)
            org = None if ws is None else s.get(Organization, ws.organization_id)
            if run is None or ws is None or org is None:
                raise NotFound(f"job {job_id}'s run no longer exists")
            mode = credentials.check_mode(
                ws.speculative_plan_credentials or org.speculative_plan_credentials,
                "/speculative-plan-credentials",
            )
            phase: credentials.Phase = "apply" if job.kind == "apply" else "plan"
            env = self._variables.for_job(s, ws.id).env
            configs = credentials.configs_for_job(
                env, phase=phase, speculative=run.speculative, mode=mode
            )
            timeout_at = job.timeout_at or now + (
                self.queue.apply_timeout if phase == "apply" else self.queue.plan_timeout
            )
            if not configs:  # the workspace asks for nothing: nothing to mint
                return {"expires_at": iso8601(timeout_at), "configs": []}
            if self._issuer is None:
                raise Unavailable("this server has no workload-identity issuer configured")
            ttl = timeout_at - now
            if ttl <= timedelta(0):
                raise NotAcceptable(
                    f"job {job_id} is past its phase's timeout; no token is minted for it"
                )
            ttl = min(ttl, self._issuer.policy.max_token_ttl)
            place = self._issuer.locate_in(s.connection(), ws.id)
            if place is None:
                raise NotFound(f"job {job_id}'s workspace no longer exists")
            token_phase = credentials.token_phase(phase, speculative=run.speculative, mode=mode)
            actor = Actor(caller.id, caller.name, source)
            answered: list[dict[str, Any]] = []
            expires = now.replace(microsecond=0) + ttl
            for config in configs:
                minted = self._issuer.mint_for_job(
                    s,
                    place,
                    audience=config.audience,
                    phase=token_phase,
                    speculative=run.speculative,
                    ttl=ttl,
                    run_id=run.id,
                    actor=actor,
                    config=config.label,
                )
                expires = min(expires, minted.expires_at)
                answered.append(config.wire(minted.token))
            s.commit()
        return {"expires_at": iso8601(expires), "configs": answered}

    def finish(self, caller: RunJob, job_id: str, attempt: int, outcome: PhaseOutcome) -> None:
        """The phase's outcome, the job's end and its token's revocation: one transaction."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            job = self._job(s, caller, job_id, attempt)
            if job.status == "claimed" and outcome.status == "finished":
                raise NotAcceptable(f"job {job_id} never started; it cannot have finished")
            ended = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.attempt == attempt, Job.status.in_(ACTIVE))
                .values(status=outcome.status, finished_at=now, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            if affected(ended) != 1:
                raise NotAcceptable(f"job {job_id} ended meanwhile")
            self._lifecycle.phase_finished(s, job.run_id, job.phase_id, outcome, now)
            self._tokens.revoke(s, job.id, "finished", now)
            if job.agent_id is not None:
                # An agent that went away meanwhile: the outcome counts all the same.
                with contextlib.suppress(Conflict):
                    self._agents.touch(s, job.agent_id, busy=False, now=now)
            s.commit()


# ---- parsing ---------------------------------------------------------------------------------


def _body(call: Call) -> dict[str, Any]:
    if not call.raw.strip():
        return {}
    try:
        doc = json.loads(call.raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def _int(value: Any, name: str, *, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise Invalid(f"'{name}' must be an integer of at least {least}", pointer=f"/{name}")
    return value


def _query_int(call: Call, name: str, *, least: int = 0) -> int:
    value = call.request.query_params.get(name)
    if value is None:
        raise BadRequest(f"query parameter '{name}' is required", parameter=name)
    if not (value.isascii() and value.isdigit()) or len(value) > 18 or int(value) < least:
        raise BadRequest(
            f"query parameter '{name}' must be an integer of at least {least}", parameter=name
        )
    return int(value)


def _outcome(doc: dict[str, Any]) -> PhaseOutcome:
    status = doc.get("status")
    if status not in FINISH_STATUSES:
        raise Invalid("'status' must be finished, errored or canceled", pointer="/status")
    has_changes = doc.get("has_changes", False)
    if not isinstance(has_changes, bool):
        raise Invalid("'has_changes' must be true or false", pointer="/has_changes")
    error = doc.get("error", "") or ""
    if not isinstance(error, str):
        raise Invalid("'error' must be a string", pointer="/error")
    counts = {
        name: _int(doc.get(f"resource_{name}", 0), f"resource_{name}")
        for name in ("additions", "changes", "destructions", "imports")
    }
    line = " ".join(error.split())[:MAX_ERROR]  # one line
    return PhaseOutcome(
        status=status,
        has_changes=has_changes,
        additions=counts["additions"],
        changes=counts["changes"],
        destructions=counts["destructions"],
        imports=counts["imports"],
        error=line,
    )


def _run_job(call: Call) -> RunJob:
    caller = call.caller
    if not isinstance(caller, RunJob):
        raise Unauthorized("a job token is required (the claim's job_token)")
    return caller


def _accepted(call: Call, raw: bytes) -> list[str]:
    """The phases the claimer takes: ``accept`` in the body or the query (default both)."""
    wanted: Any = None
    if raw.strip():
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        wanted = doc.get("accept")
    if wanted is None and (q := call.request.query_params.get("accept")) is not None:
        wanted = q.split(",")
    if wanted is None:
        return list(PHASES)
    if not isinstance(wanted, list) or not wanted or any(k not in PHASES for k in wanted):
        raise Invalid("'accept' lists plan and/or apply", pointer="/accept")
    return [k for k in PHASES if k in wanted]


# ---- routes ----------------------------------------------------------------------------------


def routes(jobs: AgentJobs) -> list[BaseRoute]:
    """The job routes (mount under ``/api/agent/v1``; the agents domain adds register and
    deregister). ``"job"`` is the pipeline's authenticator of job tokens for this protocol."""

    async def claim(call: Call) -> Response:
        token = bearer_token(call.request)
        if token is None:
            raise Unauthorized(
                "an agent session token is required: pass it as 'Authorization: Bearer <token>' "
                "(register first)"
            )
        raw = b"".join([c async for c in call.stream(SMALL_BODY)])
        accept = _accepted(call, raw)
        wait_param = call.request.query_params.get("wait", "")
        if wait_param and not (wait_param.isascii() and wait_param.isdigit()):
            raise BadRequest("query parameter 'wait' must be whole seconds", parameter="wait")
        wait = min(float(wait_param or MAX_WAIT), MAX_WAIT)
        await call.run(jobs.check_session, token)
        deadline = time.monotonic() + wait
        with jobs.queue.signal.waiter() as waiter:
            while True:
                answer = await call.run(jobs.try_claim, token, accept)
                if answer is not None:
                    return JSONResponse(answer)
                left = deadline - time.monotonic()
                if left <= 0 or jobs.queue.signal.closed:
                    return Response(status_code=204)
                await waiter.wait(left)
                if jobs.queue.signal.closed:  # shutting down: answer now, claim nothing more
                    return Response(status_code=204)

    def start(call: Call) -> Response:
        doc = _body(call)
        jobs.start(
            _run_job(call), call.param("job_id"), _int(doc.get("attempt"), "attempt", least=1)
        )
        return JSONResponse({})

    def heartbeat(call: Call) -> Response:
        doc = _body(call)
        attempt = _int(doc.get("attempt"), "attempt", least=1)
        if "log_offset" in doc:
            _int(doc["log_offset"], "log_offset")
        return JSONResponse(jobs.heartbeat(_run_job(call), call.param("job_id"), attempt))

    def logs(call: Call) -> Response:
        offset = _query_int(call, "offset")
        attempt = _query_int(call, "attempt", least=1)
        jobs.append_log(_run_job(call), call.param("job_id"), attempt, offset, call.raw)
        return Response(status_code=204)

    async def put_plan(call: Call) -> Response:
        caller = _run_job(call)
        job_id = call.param("job_id")
        attempt = _query_int(call, "attempt", least=1)
        fmt = call.request.query_params.get("format", "binary")
        if fmt not in ("binary", "json"):
            raise BadRequest("query parameter 'format' is binary or json", parameter="format")
        await call.run(jobs.check_plan_upload, caller, job_id, attempt)
        limit = jobs.limits.max_plan_bytes
        writer = jobs.blobs.writer(max_size=limit)
        try:
            checked = fmt != "json"
            async for chunk in call.stream(limit):
                if not checked and chunk.strip():
                    if not chunk.lstrip().startswith(b"{"):
                        raise Invalid("a JSON plan is a JSON object (terraform show -json)")
                    checked = True
                await call.run(writer.write, chunk)
            ref = await call.run(writer.commit)
        except BaseException:
            writer.abort()
            raise
        await call.run(jobs.attach_plan, caller, job_id, attempt, fmt, ref.sha256)
        return Response(status_code=204)

    async def get_plan(call: Call) -> Response:
        caller = _run_job(call)
        digest = await call.run(jobs.plan_digest, caller, call.param("job_id"))
        return StreamingResponse(
            jobs.blobs.iter_chunks(digest), media_type="application/octet-stream"
        )

    def variables(call: Call) -> Response:
        return JSONResponse(jobs.variables(_run_job(call), call.param("job_id")))

    def workload_identity(call: Call) -> Response:
        doc = _body(call)
        attempt = _int(doc.get("attempt"), "attempt", least=1)
        answer = jobs.workload_identity(_run_job(call), call.param("job_id"), attempt, call.source)
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    def finish(call: Call) -> Response:
        doc = _body(call)
        attempt = _int(doc.get("attempt"), "attempt", least=1)
        jobs.finish(_run_job(call), call.param("job_id"), attempt, _outcome(doc))
        return JSONResponse({})

    err = agent_error
    return [
        route("/jobs/claim", claim, ["POST"], auth=None, executor="stream", errors=err),
        route("/jobs/{job_id}/start", start, ["POST"], auth="job", limit=SMALL_BODY, errors=err),
        route(
            "/jobs/{job_id}/heartbeat",
            heartbeat,
            ["POST"],
            auth="job",
            limit=SMALL_BODY,
            errors=err,
        ),
        route("/jobs/{job_id}/logs", logs, ["PUT"], auth="job", limit=MAX_CHUNK, errors=err),
        route("/jobs/{job_id}/plan", put_plan, ["PUT"], auth="job", executor="stream", errors=err),
        route("/jobs/{job_id}/plan", get_plan, ["GET"], auth="job", executor="stream", errors=err),
        route("/jobs/{job_id}/variables", variables, ["GET"], auth="job", errors=err),
        route(
            "/jobs/{job_id}/workload-identity",
            workload_identity,
            ["POST"],
            auth="job",
            limit=SMALL_BODY,
            errors=err,
        ),
        route("/jobs/{job_id}/finish", finish, ["POST"], auth="job", limit=SMALL_BODY, errors=err),
    ]
