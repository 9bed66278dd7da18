"""The job queue: runs enqueue the phases they need executed, executors claim them.

- ``enqueue`` adds a queued job in the caller's transaction and announces it: ``NOTIFY
  cairn_jobs`` in that transaction (PostgreSQL: every replica's waiters hear it once it
  commits) and an in-process wake-up once the caller's session commits (SQLite, and the
  waiters of this process).
- ``claim`` is ONE transaction: the oldest queued job of the highest priority that the agent
  may take (a pool's job only to that pool's agents, a job of no pool only to the server's
  built-in workers) becomes ``claimed`` by a conditional ``UPDATE … WHERE id = (SELECT …)``
  — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent claimers pass over each other's
  rows; on SQLite the writer lock serialises claims and ``status = 'queued'`` is re-checked —
  with ``attempt + 1``, a lease of ``LEASE`` and a fresh job token valid until the phase's
  timeout. The database decides: a job is claimed once.
- ``wait`` lets a claimer sleep (no database connection held) until a job may be there.
- ``cancel`` takes a job that has not started off the queue at once, or signals a running
  one through its next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from cairn import ids
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.db.notify import Subscriptions, notify
from cairn.runs.job_tokens import JobTokens
from cairn.runs.jobs_model import Job

log = logging.getLogger("cairn.runs")

CHANNEL: Final = "cairn_jobs"
LEASE: Final = timedelta(seconds=60)
MAX_WAIT: Final = 25.0  # seconds a claim may long-poll
PHASES: Final = ("plan", "apply")
Phase = Literal["plan", "apply"]


class AgentSession(Protocol):
    """Who is claiming (``agents.Agents.authenticate_session``'s answer)."""

    @property
    def agent_id(self) -> str: ...

    @property
    def pool_id(self) -> str | None: ...


@dataclass(frozen=True)
class Claimed:
    """A job just claimed, with its token (shown to the claimer once)."""

    job_id: str
    run_id: str
    phase_id: str
    kind: Phase
    attempt: int
    lease_expires_at: datetime
    timeout_at: datetime
    token: str

    def __repr__(self) -> str:
        return f"Claimed(job_id={self.job_id!r}, attempt={self.attempt}, token=<redacted>)"


class JobSignal:
    """Wakes claimers waiting in this process: on ``NOTIFY cairn_jobs`` (the listener's thread),
    after an enqueue commits (a worker thread), and when the listener reconnects (whatever
    was notified while it was cut off). Thread-safe; each waiter is an asyncio event on its
    own loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        """The server is shutting down: a claim answers at once instead of long-polling."""
        return self._closed

    def close(self) -> None:
        """At shutdown: wake every waiting claim (each answers 204 at once) and keep new ones
        from waiting, so a graceful stop does not wait out the agents' long-polls."""
        self._closed = True
        self.wake()

    def wake(self, _payload: str = "") -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, ev in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its waiter is gone
                loop.call_soon_threadsafe(ev.set)

    def waiter(self) -> Waiter:
        """A waiter registered now: a job enqueued from this moment on wakes it (so a claim
        that found nothing cannot miss one enqueued just after it looked)."""
        return Waiter(self)

    def _add(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.add(item)

    def _remove(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(item)

    def follow(self, listener: Subscriptions) -> None:
        """Hear other replicas' enqueues (PostgreSQL)."""
        listener.subscribe(CHANNEL, self.wake, on_connect=self.wake)


class Waiter:
    def __init__(self, signal: JobSignal) -> None:
        self._signal = signal
        self._event = asyncio.Event()
        self._item = (asyncio.get_running_loop(), self._event)
        signal._add(self._item)

    async def wait(self, timeout: float) -> bool:
        """Until woken (True) or ``timeout`` seconds (False); re-armed for the next wait."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._signal._remove(self._item)

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class JobQueue:
    """The queue of plan and apply jobs (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        tokens: JobTokens,
        *,
        plan_timeout: timedelta,
        apply_timeout: timedelta,
        signal: JobSignal | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._tokens = tokens
        self.plan_timeout = plan_timeout
        self.apply_timeout = apply_timeout
        self.signal = signal or JobSignal()

    # ---- the runs side ---------------------------------------------------------------------

    def enqueue(
        self,
        s: Session,
        *,
        run_id: str,
        phase_id: str,
        kind: Phase,
        pool_id: str | None,
        organization_id: str,
        priority: int,
        now: datetime,
    ) -> str:
        """Queue the job of ``phase_id`` in the caller's transaction; waiters hear of it once
        that commits. Returns the job's ID."""
        if kind not in PHASES:
            raise ValueError(f"a job is a plan or an apply, not {kind!r}")
        job_id = ids.new_id("job")
        s.add(
            Job(
                id=job_id,
                run_id=run_id,
                phase_id=phase_id,
                kind=kind,
                pool_id=pool_id,
                organization_id=organization_id,
                status="queued",
                attempt=0,
                priority=priority,
                cancel="none",
                queued_at=now,
                log_offset=0,
            )
        )
        s.flush()
        notify(s, CHANNEL, pool_id or "")
        self.wake_after_commit(s)
        return job_id

    def wake_after_commit(self, s: Session) -> None:
        """Wake this process's waiters when ``s`` commits (a requeue, an enqueue)."""
        event.listen(s, "after_commit", lambda _s: self.signal.wake(), once=True)

    def cancel(
        self, s: Session, run_id: str, *, force: bool, now: datetime
    ) -> Literal["dequeued", "signalled", "none"]:
        """Cancel the run's live job: one not started yet is canceled at once
        (``"dequeued"``: the caller finishes the run as canceled); a running one is told
        ``graceful`` (SIGINT) or ``force`` (SIGKILL) on its next heartbeat (``"signalled"``);
        ``"none"`` when the run has no live job."""
        job = s.scalar(
            select(Job)
            .where(Job.run_id == run_id, Job.status.in_(("queued", "claimed", "running")))
            .order_by(Job.queued_at.desc())
            .limit(1)
        )
        if job is None:
            return "none"
        if job.status in ("queued", "claimed"):
            done = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.status.in_(("queued", "claimed")))
                .values(status="canceled", finished_at=now, lease_expires_at=None)
            )
            if affected(done) == 1:
                self._tokens.revoke(s, job.id, "canceled", now)
                s.expire(job)
                return "dequeued"
            s.refresh(job)  # it started meanwhile: signal it
        signal = "force" if force else "graceful"
        s.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "running", Job.cancel != "force")
            .values(cancel=signal)
        )
        s.expire(job)
        return "signalled"

    # ---- the executors' side ---------------------------------------------------------------

    def claim(self, agent: AgentSession, accept: Sequence[str], now: datetime) -> Claimed | None:
        """Claim one job for ``agent`` (in its own writing unit of work, or the caller's),
        or None when none is queued for it."""
        kinds = [k for k in PHASES if k in accept]
        if not kinds:
            return None
        with self._db.unit_of_work(write=True) as s:
            found = self.claim_in(s, agent, kinds, now)
            s.commit()
            return found

    def claim_in(
        self, s: Session, agent: AgentSession, kinds: Sequence[str], now: datetime
    ) -> Claimed | None:
        """``claim`` in the caller's transaction (which commits it)."""
        pool = Job.pool_id.is_(None) if agent.pool_id is None else Job.pool_id == agent.pool_id
        pick = (
            select(Job.id)
            .where(Job.status == "queued", pool, Job.kind.in_(list(kinds)))
            .order_by(Job.priority, Job.queued_at, Job.id)
            .limit(1)
        )
        if s.get_bind().dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        lease = now + LEASE
        row = s.execute(
            update(Job)
            .where(Job.id == pick.scalar_subquery(), Job.status == "queued")
            .values(
                status="claimed",
                agent_id=agent.agent_id,
                attempt=Job.attempt + 1,
                claimed_at=now,
                lease_expires_at=lease,
                cancel="none",
            )
            .returning(Job.id, Job.run_id, Job.phase_id, Job.kind, Job.attempt)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return None
        job_id, run_id, phase_id, kind, attempt = row
        timeout_at = now + (self.apply_timeout if kind == "apply" else self.plan_timeout)
        s.execute(update(Job).where(Job.id == job_id).values(timeout_at=timeout_at))
        token = self._tokens.issue(s, job_id, attempt, timeout_at)
        log.info(
            "job claimed",
            extra={
                "job_id": job_id,
                "run_id": run_id,
                "agent_id": agent.agent_id,
                "attempt": attempt,
            },
        )
        return Claimed(
            job_id=job_id,
            run_id=run_id,
            phase_id=phase_id,
            kind="apply" if kind == "apply" else "plan",
            attempt=attempt,
            lease_expires_at=lease,
            timeout_at=timeout_at,
            token=token,
        )
