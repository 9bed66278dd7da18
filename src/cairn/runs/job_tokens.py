"""Job tokens: what a plan or apply job uses to call cairn (the agent protocol and the TFE API
Terraform speaks through the remote backend).

Value: ``cairn_job_`` + 43 base62 characters (≈256 bits); a distinct prefix so a leaked one is
recognised and the pipeline's ``"token"`` authenticator hands it here
(``TokenService.add_prefix``, wired in ``app.py``). Stored only as a keyed hash
(``crypto.Keyring.token_hash``), bound to one claim (``attempt``), valid until the phase's
timeout, revoked when the job ends.

The subject is an ``authz.RunJob``; its access is made here from the database: its own
workspace (read, state read, variables read; state write in the apply phase) and the
workspaces of its organization that share their state with it (``global-remote-state``, or
the job's workspace among their remote-state consumers): read and state read. The authorizer
caps whatever this holds (``authz.authorizer.RUN_JOB_PERMISSIONS``).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import Connection, bindparam, or_, select, update
from sqlalchemy.orm import Session
from starlette.requests import Request

from cairn import ids
from cairn.authz.access import Access, WorkspaceGrant
from cairn.authz.permissions import (
    STATE_READ,
    STATE_READ_OUTPUTS,
    STATE_WRITE,
    VARIABLES_READ,
    WORKSPACE_READ,
)
from cairn.authz.subject import RunJob
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.base import table_of
from cairn.db.engine import Database
from cairn.errors import Conflict, Unauthorized
from cairn.runs.jobs_model import ACTIVE, Job, JobToken
from cairn.runs.model import Run
from cairn.tfeapi.http import bearer_token
from cairn.workspaces.consumers import RemoteStateConsumer
from cairn.workspaces.model import Workspace

JOB_TOKEN_PREFIX: Final = "cairn_job_"  # noqa: S105 - a public prefix for secret scanners
_ALPHABET = string.ascii_letters + string.digits
_MAX_LEN = 128

Reason = Literal["finished", "lease_lost", "canceled"]

OWN: Final = frozenset({WORKSPACE_READ, STATE_READ, STATE_READ_OUTPUTS, VARIABLES_READ})
SHARED: Final = frozenset({WORKSPACE_READ, STATE_READ, STATE_READ_OUTPUTS})

_tok = table_of(JobToken)
_job = table_of(Job)
_ws = table_of(Workspace)
_consumer = table_of(RemoteStateConsumer)
_runs = table_of(Run)

_BY_HASH = (
    select(
        _tok.c.id,
        _tok.c.attempt,
        _tok.c.expires_at,
        _tok.c.revoked_at,
        _tok.c.revoked_reason,
        _job.c.id,
        _job.c.run_id,
        _job.c.kind,
        _job.c.organization_id,
        _job.c.attempt,
        _job.c.status,
        _runs.c.workspace_id,
    )
    .join_from(_tok, _job, _job.c.id == _tok.c.job_id)
    .join(_runs, _runs.c.id == _job.c.run_id)
    .where(_tok.c.token_hash == bindparam("digest"))
)
# The workspaces of the organization sharing their state with the job's workspace.
_SHARING = select(_ws.c.id).where(
    _ws.c.organization_id == bindparam("org_id"),
    _ws.c.id != bindparam("ws_id"),
    or_(
        _ws.c.global_remote_state.is_(True),
        _ws.c.id.in_(
            select(_consumer.c.workspace_id).where(_consumer.c.consumer_id == bindparam("ws_id"))
        ),
    ),
)


def new_value() -> str:
    return JOB_TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(43))


@dataclass(frozen=True)
class Found:
    """A job token the pipeline let in (nothing to do after the request)."""

    subject: RunJob

    def after(self) -> None:
        return None


class LeaseLost(Conflict):
    """The job was taken from this executor (lease expired, agent lost, canceled): it must
    stop Terraform and drop the job."""

    code = "lease_lost"


class JobTokens:
    """Issuing, revoking and authenticating job tokens."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return "JobTokens(<redacted>)"

    def issue(self, s: Session, job_id: str, attempt: int, expires_at: datetime) -> str:
        """A new token for ``job_id``'s claim ``attempt``, added to ``s`` (the claim's unit of
        work); the value is returned once and never stored."""
        value = new_value()
        s.add(
            JobToken(
                id=ids.new_id("job_token"),
                job_id=job_id,
                attempt=attempt,
                token_hash=self._keys.token_hash(value),
                created_at=self._clock.now(),
                expires_at=expires_at,
            )
        )
        s.flush()
        return value

    @staticmethod
    def revoke(s: Session, job_id: str, reason: Reason, now: datetime) -> None:
        """Revoke every live token of ``job_id`` (in the caller's transaction)."""
        s.execute(
            update(JobToken)
            .where(JobToken.job_id == job_id, JobToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )

    def authenticator(self, *, agent_protocol: bool = False) -> JobTokenAuthenticator:
        """The authenticator of job tokens: for the TFE API (every refusal a 401) or for the
        agent protocol (``agent_protocol``: a token whose job was taken away is a 409
        ``lease_lost``, so the executor stops rather than retries)."""
        return JobTokenAuthenticator(self, agent_protocol=agent_protocol)

    def subject(self, conn: Connection, token: str, *, agent_protocol: bool) -> RunJob:
        """The RunJob behind ``token``; Unauthorized (or LeaseLost) otherwise."""
        if not token.startswith(JOB_TOKEN_PREFIX) or len(token) > _MAX_LEN:
            raise Unauthorized("the job token is not valid")
        row = conn.execute(_BY_HASH, {"digest": self._keys.token_hash(token)}).first()
        if row is None:
            raise Unauthorized("the job token is not valid")
        (
            token_id,
            token_attempt,
            expires_at,
            revoked_at,
            reason,
            job_id,
            run_id,
            kind,
            org_id,
            job_attempt,
            status,
            ws_id,
        ) = row
        lost = agent_protocol and (
            reason in ("lease_lost", "canceled")
            or (revoked_at is None and (token_attempt != job_attempt or status not in ACTIVE))
        )
        if lost:
            raise LeaseLost(
                f"job {job_id} is no longer this executor's (its lease was lost, it was "
                "canceled or claimed again): stop Terraform and drop the job"
            )
        if revoked_at is not None or status not in ACTIVE or token_attempt != job_attempt:
            raise Unauthorized(
                f"the job token of job {job_id} is no longer valid: the job has ended"
            )
        if expires_at <= self._clock.now():
            raise Unauthorized(
                f"the job token of job {job_id} has expired (the phase's timeout has passed)"
            )
        phase: Literal["plan", "apply"] = "apply" if kind == "apply" else "plan"
        own = OWN | {STATE_WRITE} if phase == "apply" else OWN
        grants = [WorkspaceGrant(org_id, own, workspace_id=ws_id)]
        for (other,) in conn.execute(_SHARING, {"org_id": org_id, "ws_id": ws_id}):
            grants.append(WorkspaceGrant(org_id, SHARED, workspace_id=other))
        return RunJob(
            id=job_id,
            run_id=run_id,
            workspace_id=ws_id,
            organization_id=org_id,
            phase=phase,
            token_id=token_id,
            attempt=job_attempt,
            access=Access(grants=tuple(grants)),
        )


class JobTokenAuthenticator:
    """Job tokens, inside the request's transaction. Registered as the ``cairn_job_`` prefix
    of the pipeline's ``"token"`` authenticator, and as the agent protocol's ``"job"``."""

    def __init__(self, tokens: JobTokens, *, agent_protocol: bool) -> None:
        self._tokens = tokens
        self._agent = agent_protocol

    def credential(self, request: Request) -> str | None:
        return bearer_token(request)

    def missing(self) -> Unauthorized:
        return Unauthorized(
            "a job token is required: pass it as 'Authorization: Bearer cairn_job_…' "
            "(the claim's job_token)"
        )

    def authenticate(self, credential: str) -> Found:
        with self._tokens._db.read_transaction() as conn:
            return Found(self._tokens.subject(conn, credential, agent_protocol=self._agent))
