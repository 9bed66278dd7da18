"""The job sweep: what happens to jobs whose executor went silent (a background job of
``app.py``, every ``INTERVAL`` seconds, on every replica).

- a **claimed** job (not started) whose lease expired goes back to the queue, keeping its
  attempt count; after ``MAX_ATTEMPTS`` claims nobody started, its phase errors ("no executor
  started the job");
- a **running** job whose lease expired is errored: the log gets the line "agent lost" and the
  phase errors through ``RunLifecycle.phase_finished`` (the run errors and its workspace lock
  is released). An apply is never re-run by itself: it is not idempotent;
- a **running** job past its phase's timeout (``CAIRN_PLAN_TIMEOUT`` / ``CAIRN_APPLY_TIMEOUT``)
  is errored the same way, with a line saying so (its token expired with it);
- the agents' own status rule runs (``Agents.sweep``); the jobs of agents that became
  ``errored`` just now are handled as above, in the same transaction.

Each job is handled in its own transaction by a conditional UPDATE on the row as read (status,
attempt, lease), so two replicas sweeping at once handle it once, and a heartbeat that lands
first keeps the job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.runs.job_tokens import JobTokens
from cairn.runs.jobs import JobQueue
from cairn.runs.jobs_model import ACTIVE, Job
from cairn.runs.lifecycle import PhaseOutcome, RunLifecycle
from cairn.runs.logs import LogStore

log = logging.getLogger("cairn.runs")

INTERVAL: Final = 10.0
MAX_ATTEMPTS: Final = 3
_BATCH: Final = 100
AGENT_LOST: Final = "agent lost: the executor stopped heartbeating while the job ran"
TIMED_OUT: Final = "the {kind} ran past its timeout ({env}) and was stopped"
NOT_STARTED: Final = (
    f"no executor started the job ({MAX_ATTEMPTS} claims expired before it started)"
)


class AgentSweep(Protocol):
    def sweep(self, s: Session, now: datetime) -> list[str]:
        """Apply the agents' status rule; the IDs of agents that became errored now."""
        ...


class JobSweep:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        queue: JobQueue,
        tokens: JobTokens,
        logs: LogStore,
        lifecycle: RunLifecycle,
        agents: AgentSweep,
    ) -> None:
        self._db = db
        self._clock = clock
        self._queue = queue
        self._tokens = tokens
        self._logs = logs
        self._lifecycle = lifecycle
        self._agents = agents

    def run(self) -> int:
        """One sweep; the number of jobs it requeued or errored."""
        now = self._clock.now()
        with self._db.unit_of_work() as s:
            expired = s.execute(
                select(Job.id, Job.status, Job.attempt)
                .where(Job.status.in_(ACTIVE), Job.lease_expires_at < now)
                .order_by(Job.lease_expires_at)
                .limit(_BATCH)
            ).all()
        handled = 0
        for job_id, status, attempt in expired:
            with self._db.unit_of_work(write=True) as s:
                # Still as read, and still expired (a heartbeat meanwhile keeps the job).
                as_read = (
                    Job.id == job_id,
                    Job.status == status,
                    Job.attempt == attempt,
                    Job.lease_expires_at < now,
                )
                if self._lapse(s, job_id, status, attempt, as_read, now):
                    handled += 1
                s.commit()
        handled += self._timeouts(now)
        with self._db.unit_of_work(write=True) as s:
            errored = self._agents.sweep(s, now)
            handled += self._orphans(s, errored, now)
            s.commit()
        return handled

    def _timeouts(self, now: datetime) -> int:
        """Running jobs past their phase's timeout (their token has expired too, so their
        executor can no longer finish them): errored, saying so."""
        with self._db.unit_of_work() as s:
            late = s.execute(
                select(Job.id, Job.attempt, Job.kind)
                .where(Job.status == "running", Job.timeout_at < now)
                .limit(_BATCH)
            ).all()
        n = 0
        for job_id, attempt, kind in late:
            with self._db.unit_of_work(write=True) as s:
                as_read = (
                    Job.id == job_id,
                    Job.status == "running",
                    Job.attempt == attempt,
                    Job.timeout_at < now,
                )
                why = TIMED_OUT.format(kind=kind, env=f"CAIRN_{kind.upper()}_TIMEOUT")
                n += self._lapse(s, job_id, "running", attempt, as_read, now, reason=why)
                s.commit()
        return n

    def _orphans(self, s: Session, agent_ids: Sequence[str], now: datetime) -> int:
        """The jobs of agents that just became errored (in the sweep's transaction)."""
        if not agent_ids:
            return 0
        rows = s.execute(
            select(Job.id, Job.status, Job.attempt).where(
                Job.agent_id.in_(list(agent_ids)), Job.status.in_(ACTIVE)
            )
        ).all()
        n = 0
        for job_id, status, attempt in rows:
            as_read = (Job.id == job_id, Job.status == status, Job.attempt == attempt)
            n += self._lapse(s, job_id, status, attempt, as_read, now)
        return n

    def _lapse(
        self,
        s: Session,
        job_id: str,
        status: str,
        attempt: int,
        as_read: tuple[object, ...],
        now: datetime,
        *,
        reason: str | None = None,
    ) -> bool:
        """Requeue or error one job whose executor is gone (or, with ``reason``, that ran out
        of time), if it is still as read."""
        if reason is None and status == "claimed" and attempt < MAX_ATTEMPTS:
            done = s.execute(
                update(Job)
                .where(*as_read)  # type: ignore[arg-type]
                .values(status="queued", agent_id=None, lease_expires_at=None, claimed_at=None)
                .execution_options(synchronize_session=False)
            )
            if affected(done) != 1:
                return False
            self._tokens.revoke(s, job_id, "lease_lost", now)
            self._queue.wake_after_commit(s)
            log.info("requeued a job nobody started", extra={"job_id": job_id, "attempt": attempt})
            return True
        if reason is None:
            reason = AGENT_LOST if status == "running" else NOT_STARTED
        done = s.execute(
            update(Job)
            .where(*as_read)  # type: ignore[arg-type]
            .values(status="errored", finished_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if affected(done) != 1:
            return False
        job = s.get(Job, job_id, populate_existing=True)
        assert job is not None
        self._tokens.revoke(s, job_id, "lease_lost", now)
        self._logs.append_line(s, job_id, reason)
        self._lifecycle.phase_finished(
            s, job.run_id, job.phase_id, PhaseOutcome(status="errored", error=reason), now
        )
        log.warning("errored a job its executor left", extra={"job_id": job_id, "why": reason})
        return True
