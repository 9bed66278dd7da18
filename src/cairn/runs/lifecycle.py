"""The seam between runs and jobs: what the job side tells the run machine, and what it asks.

Each method takes the job side's Session and works inside its transaction: a job's state and
its run's state commit together (a plan ``finished`` and its run ``planned`` + confirmable are
written in one transaction; a final run releases its workspace lock and starts the next
pending run in that same transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from cairn.errors import Conflict, NotFound
from cairn.organizations.model import Organization
from cairn.runs import model as m
from cairn.runs.model import Run, RunPhase
from cairn.runs.scheduler import Scheduler, event, phase
from cairn.workspaces.model import Workspace


@dataclass(frozen=True)
class PhaseOutcome:
    status: Literal["finished", "errored", "canceled"]
    has_changes: bool = False
    additions: int = 0
    changes: int = 0
    destructions: int = 0
    imports: int = 0
    error: str = ""  # one line, shown in the run and the log


@dataclass(frozen=True)
class JobContext:
    """What the claim answer needs about the run."""

    run_id: str
    phase_id: str
    phase: Literal["plan", "apply"]
    workspace_id: str
    workspace_name: str
    organization_id: str
    organization_name: str
    working_directory: str
    terraform_version: str
    configuration_version_id: str
    is_destroy: bool
    refresh: bool
    refresh_only: bool
    plan_only: bool
    speculative: bool
    target_addrs: list[str] = field(default_factory=list)
    replace_addrs: list[str] = field(default_factory=list)


class RunLifecycle:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def _run_and_phase(self, s: Session, run_id: str, phase_id: str) -> tuple[Run, RunPhase]:
        run = s.get(Run, run_id, populate_existing=True)
        ph = s.get(RunPhase, phase_id, populate_existing=True)
        if run is None or ph is None or ph.run_id != run_id:
            raise NotFound(f"run {run_id} has no phase {phase_id}")
        return run, ph

    def job_context(self, s: Session, run_id: str, phase_id: str) -> JobContext:
        run, ph = self._run_and_phase(s, run_id, phase_id)
        ws = s.get(Workspace, run.workspace_id)
        org = s.get(Organization, run.organization_id)
        assert ws is not None and org is not None  # both cascade to the run
        return JobContext(
            run_id=run.id,
            phase_id=ph.id,
            phase="plan" if ph.kind == "plan" else "apply",
            workspace_id=ws.id,
            workspace_name=ws.name,
            organization_id=org.id,
            organization_name=org.name,
            working_directory=ws.working_directory,
            terraform_version=run.terraform_version,
            configuration_version_id=run.configuration_version_id,
            is_destroy=run.is_destroy,
            refresh=run.refresh,
            refresh_only=run.refresh_only,
            plan_only=run.plan_only,
            speculative=run.speculative,
            target_addrs=list(run.target_addrs or []),
            replace_addrs=list(run.replace_addrs or []),
        )

    def phase_started(self, s: Session, run_id: str, phase_id: str, now: datetime) -> None:
        """``plan_queued`` → ``planning`` / ``apply_queued`` → ``applying``, phase running.
        A run that is no longer waiting for this phase (canceled meanwhile) is a Conflict:
        the job must not start."""
        run, ph = self._run_and_phase(s, run_id, phase_id)
        waiting, running = (
            (m.PLAN_QUEUED, m.PLANNING) if ph.kind == "plan" else (m.APPLY_QUEUED, m.APPLYING)
        )
        if run.status == running and ph.status == m.PHASE_RUNNING:
            return  # a repeated start of the same attempt
        if run.status != waiting or ph.status != m.PHASE_QUEUED:
            raise Conflict(
                f"run {run.id} is {run.status}, not waiting for its {ph.kind}; the job must "
                "not start"
            )
        run.stamp(running, now)
        ph.stamp(m.PHASE_RUNNING, now)
        event(s, run, "planning" if ph.kind == "plan" else "applying", now, None)
        self._scheduler.hooks.changed(s, run)

    def phase_finished(
        self, s: Session, run_id: str, phase_id: str, outcome: PhaseOutcome, now: datetime
    ) -> None:
        run, ph = self._run_and_phase(s, run_id, phase_id)
        if ph.status in m.PHASE_FINAL or run.final:
            return  # already decided (force-canceled, or a repeated finish)
        if outcome.status == "errored":
            ph.stamp(m.PHASE_ERRORED, now)
            self._scheduler.finish(
                s, run, m.ERRORED, now, description=outcome.error or f"the {ph.kind} failed"
            )
            return
        if outcome.status == "canceled":
            ph.stamp(m.PHASE_CANCELED, now)
            self._scheduler.finish(s, run, m.CANCELED, now)
            return
        ph.resource_additions = max(0, outcome.additions)
        ph.resource_changes = max(0, outcome.changes)
        ph.resource_destructions = max(0, outcome.destructions)
        ph.resource_imports = max(0, outcome.imports)
        ph.has_changes = outcome.has_changes
        ph.stamp(m.PHASE_FINISHED, now)
        if ph.kind == "apply":
            self._scheduler.finish(s, run, m.APPLIED, now)
            return
        run.has_changes = outcome.has_changes
        verdict = m.after_plan(run, outcome.has_changes)
        if verdict.status in m.FINAL:
            self._scheduler.finish(s, run, verdict.status, now)
            return
        run.stamp(m.PLANNED, now)
        event(s, run, "planned", now, None)
        self._scheduler.hooks.changed(s, run)
        if verdict.apply_now:
            self._scheduler.confirm(s, run, now, None)

    def attach_plan(
        self, s: Session, phase_id: str, *, binary_sha256: str | None, json_sha256: str | None
    ) -> None:
        ph = s.get(RunPhase, phase_id)
        if ph is None or ph.kind != "plan":
            raise NotFound(f"there is no plan {phase_id}")
        if binary_sha256 is not None:
            ph.plan_file_sha256 = binary_sha256
        if json_sha256 is not None:
            ph.json_plan_sha256 = json_sha256

    def plan_file_sha256(self, s: Session, run_id: str) -> str | None:
        return phase(s, run_id, "plan").plan_file_sha256
