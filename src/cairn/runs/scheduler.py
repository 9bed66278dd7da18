"""The run machine's writes: starting a run, finishing one, and starting the next.

Every function runs in the caller's transaction (its Session) and first locks the workspace's
row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's writer is already alone), so creations,
finishes and unlocks of one workspace are serialised and each sees the others' commits: of two
runs created at once on one workspace exactly one becomes active. The workspace lock is taken
and released with ``workspaces.locks.write_lock`` (one conditional UPDATE) as
``Holder("runs", run_id)``; a final run releases it and the next pending run (lowest
``position``) starts in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cairn import ids
from cairn.authz.subject import Holder
from cairn.runs import model as m
from cairn.runs.events import RunHooks
from cairn.runs.model import Run, RunEvent, RunPhase
from cairn.runs.queue import JobQueue
from cairn.workspaces.locks import write_lock
from cairn.workspaces.model import LockChange, Workspace

RUN_HOLDER_KIND: Final = "runs"
# The workspace columns ``write_lock`` changes behind the session's back (reloaded on access).
_LOCK_COLUMNS: Final = ["locked_by_kind", "locked_by_id", "lock_reason", "locked_at"]


def holder(run_id: str) -> Holder:
    """The lock holder a run takes its workspace's lock as."""
    return Holder(RUN_HOLDER_KIND, run_id)


def lock_workspace_row(s: Session, ws_id: str) -> Workspace | None:
    """The workspace, its row locked until the transaction ends (read afresh)."""
    stmt = select(Workspace).where(Workspace.id == ws_id).execution_options(populate_existing=True)
    if s.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return s.scalar(stmt)


def phase(s: Session, run_id: str, kind: m.PhaseKind) -> RunPhase:
    found = s.scalar(select(RunPhase).where(RunPhase.run_id == run_id, RunPhase.kind == kind))
    assert found is not None, f"run {run_id} has no {kind} phase"
    return found


def event(
    s: Session, run: Run, action: str, now: datetime, actor_id: str | None, description: str = ""
) -> None:
    seq = s.scalar(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id)) or 0
    s.add(
        RunEvent(
            seq=seq + 1,
            id=ids.new_id("run_event"),
            run_id=run.id,
            action=action,
            description=description[:500],
            actor_id=actor_id,
            created_at=now,
        )
    )


class Scheduler:
    """Writes the machine's transitions and talks to the job queue; every status it sets is
    reported to ``hooks`` (``runs.events``) in the same transaction."""

    def __init__(self, jobs: JobQueue, hooks: RunHooks | None = None) -> None:
        self.jobs = jobs
        self.hooks = hooks if hooks is not None else RunHooks()

    # ---- queueing jobs -------------------------------------------------------------------------

    def queue_phase(self, s: Session, run: Run, kind: m.PhaseKind, now: datetime) -> None:
        """``plan_queued`` / ``apply_queued`` and the phase's job, in one transaction."""
        ph = phase(s, run.id, kind)
        run.stamp(m.PLAN_QUEUED if kind == "plan" else m.APPLY_QUEUED, now)
        ph.stamp(m.PHASE_QUEUED, now)
        s.flush()
        self.jobs.enqueue(
            s,
            run_id=run.id,
            phase_id=ph.id,
            kind=kind,
            pool_id=run.pool_id,
            organization_id=run.organization_id,
            priority=m.priority(run, kind),
            now=now,
        )
        event(s, run, "queued" if kind == "plan" else "apply_queued", now, None)
        self.hooks.changed(s, run)

    def confirm(self, s: Session, run: Run, now: datetime, actor_id: str | None) -> None:
        """``confirmed`` then at once ``apply_queued`` with its job (``confirmed`` is never
        committed: the CLI treats it like ``pending``)."""
        run.stamp(m.CONFIRMED, now)
        event(s, run, "confirmed", now, actor_id)
        self.queue_phase(s, run, "apply", now)

    # ---- starting ------------------------------------------------------------------------------

    def admit(self, s: Session, run: Run, now: datetime) -> None:
        """A new run (already added to the session): speculative ones go straight to
        ``plan_queued`` (they never lock); others start if nothing is ahead of them,
        else wait ``pending``."""
        if run.speculative:
            self.queue_phase(s, run, "plan", now)
            return
        run.stamp(m.PENDING, now)
        event(s, run, "pending", now, None)
        self.hooks.changed(s, run)
        s.flush()
        self.advance(s, run.workspace_id, now)

    def advance(self, s: Session, ws_id: str, now: datetime) -> Run | None:
        """Start the workspace's next pending run if nothing holds it back, and point the
        workspace's ``current-run`` at the run that is current; the run started, if any."""
        ws = lock_workspace_row(s, ws_id)
        if ws is None:
            return None
        s.flush()
        active = s.scalar(
            select(Run)
            .where(
                Run.workspace_id == ws_id,
                Run.speculative.is_(False),
                Run.status.in_(m.ACTIVE),
            )
            .order_by(Run.position)
            .limit(1)
        )
        pending = list(
            s.scalars(
                select(Run)
                .where(
                    Run.workspace_id == ws_id,
                    Run.speculative.is_(False),
                    Run.status == m.PENDING,
                )
                .order_by(Run.position)
                .limit(1)
            )
        )
        current_holder = ws.holder
        active_holds = active is not None and current_holder == holder(active.id)
        locked_by_other = current_holder is not None and not active_holds
        if active is None and current_holder is not None and current_holder.kind == RUN_HOLDER_KIND:
            # A lock left by a run that is no longer active (cannot happen through the machine;
            # repaired rather than blocking the workspace forever).
            stale = s.get(Run, current_holder.id)
            if stale is None or stale.final:
                write_lock(s, ws, LockChange(expected=current_holder, holder=None), now=now)
                s.expire(ws, _LOCK_COLUMNS)
                locked_by_other = False
        start, current = m.next_in_line(pending, active, locked_by_other)
        if current is not None and ws.current_run_id != current.id:
            ws.current_run_id = current.id
        if start is None:
            return None
        if not write_lock(s, ws, LockChange(expected=None, holder=holder(start.id)), now=now):
            # Taken meanwhile (a user locked it between our read and write: impossible under
            # the row lock on PostgreSQL; on SQLite the writer is alone): wait for the unlock.
            return None
        s.expire(ws, _LOCK_COLUMNS)
        self.queue_phase(s, start, "plan", now)
        return start

    # ---- finishing -----------------------------------------------------------------------------

    def finish(
        self,
        s: Session,
        run: Run,
        status: str,
        now: datetime,
        *,
        actor_id: str | None = None,
        description: str = "",
    ) -> None:
        """Move ``run`` to the final ``status``: phases not run are ``unreachable`` (or
        ``canceled``/``errored`` when they were under way), the workspace lock is released
        if the run held it and the next pending run starts — one transaction."""
        assert status in m.FINAL, status
        run.stamp(status, now)
        if status == m.ERRORED and description:
            run.error_message = description[:500]
        for ph in s.scalars(select(RunPhase).where(RunPhase.run_id == run.id)):
            if ph.status in m.PHASE_FINAL:
                continue
            if ph.status in (m.PHASE_QUEUED, m.PHASE_RUNNING) and status in (
                m.CANCELED,
                m.ERRORED,
                m.DISCARDED,
            ):
                ph.stamp(m.PHASE_ERRORED if status == m.ERRORED else m.PHASE_CANCELED, now)
            else:
                ph.stamp(m.PHASE_UNREACHABLE, now)
        event(s, run, status, now, actor_id, description)
        self.hooks.changed(s, run)
        s.flush()
        if run.speculative:
            return
        ws = lock_workspace_row(s, run.workspace_id)
        if ws is not None and ws.held_by(holder(run.id)):
            write_lock(s, ws, LockChange(expected=holder(run.id), holder=None), now=now)
            s.expire(ws, _LOCK_COLUMNS)
        self.advance(s, run.workspace_id, now)
