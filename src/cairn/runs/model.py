"""Run, RunPhase and RunEvent rows, and the run state machine's rules as pure functions.

A run goes (HCP Terraform's vocabulary) ``pending`` (waiting behind another run of its
workspace, or behind a user-held lock) → ``plan_queued`` (its plan job waits for an executor)
→ ``planning`` → ``planned`` (waiting for confirmation) | ``planned_and_finished`` (no
changes, plan-only, speculative) → [apply action: ``confirmed``, never left visible] →
``apply_queued`` → ``applying`` → ``applied``; ``discarded``, ``canceled`` and ``errored`` are
final too. Every run has a plan phase and an apply phase row from its creation (the CLI
panics on a run without ``plan`` and ``apply`` linkage); an apply that never happens ends
``unreachable``.

The functions here decide on rows as read and ``now``; ``runs.scheduler`` writes what they
decide, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.clock import iso8601
from cairn.db.base import Base, UTCDateTime

# ---- statuses --------------------------------------------------------------------------------

PENDING: Final = "pending"
PLAN_QUEUED: Final = "plan_queued"
PLANNING: Final = "planning"
PLANNED: Final = "planned"
CONFIRMED: Final = "confirmed"
APPLY_QUEUED: Final = "apply_queued"
APPLYING: Final = "applying"
APPLIED: Final = "applied"
PLANNED_AND_FINISHED: Final = "planned_and_finished"
DISCARDED: Final = "discarded"
CANCELED: Final = "canceled"
ERRORED: Final = "errored"

STATUSES: Final = (
    PENDING,
    PLAN_QUEUED,
    PLANNING,
    PLANNED,
    CONFIRMED,
    APPLY_QUEUED,
    APPLYING,
    APPLIED,
    PLANNED_AND_FINISHED,
    DISCARDED,
    CANCELED,
    ERRORED,
)
FINAL: Final = frozenset({APPLIED, PLANNED_AND_FINISHED, DISCARDED, CANCELED, ERRORED})
# A non-speculative run in one of these holds its workspace's lock (one per workspace).
ACTIVE: Final = frozenset({PLAN_QUEUED, PLANNING, PLANNED, CONFIRMED, APPLY_QUEUED, APPLYING})
QUEUED: Final = frozenset({PLAN_QUEUED, APPLY_QUEUED})  # waiting for an executor
RUNNING: Final = frozenset({PLANNING, APPLYING})  # a job is executing
CANCELABLE: Final = frozenset({PENDING, PLAN_QUEUED, PLANNING, APPLY_QUEUED, APPLYING})
DISCARDABLE: Final = frozenset({PENDING, PLANNED})

# Phase statuses (go-tfe plan.go / apply.go).
PHASE_PENDING: Final = "pending"
PHASE_QUEUED: Final = "queued"
PHASE_RUNNING: Final = "running"
PHASE_FINISHED: Final = "finished"
PHASE_ERRORED: Final = "errored"
PHASE_CANCELED: Final = "canceled"
PHASE_UNREACHABLE: Final = "unreachable"
PHASE_FINAL: Final = frozenset({PHASE_FINISHED, PHASE_ERRORED, PHASE_CANCELED, PHASE_UNREACHABLE})

# How long after a cancel a force-cancel becomes possible (HCP Terraform's cool-off).
FORCE_CANCEL_COOL_OFF: Final = timedelta(seconds=10)

# Job priorities (lower first).
PRIORITY_APPLY: Final = 0
PRIORITY_PLAN: Final = 1
PRIORITY_SPECULATIVE: Final = 2

# Sources a run can be created with (go-tfe / pytfe RunSource).
SOURCES: Final = frozenset(
    {
        "tfe-api",
        "tfe-configuration-version",
        "tfe-ui",
        "terraform+cloud",
        "terraform",
        "tfe-run-trigger",
        "tfe-infrastructure-lifecycle",
        "tfe-module",
    }
)
OPERATIONS: Final = frozenset(
    {"plan_and_apply", "plan_only", "refresh_only", "destroy", "empty_apply", "save_plan"}
)
STATUS_GROUPS: Final = {
    "non_final": frozenset(STATUSES) - FINAL,
    "final": FINAL,
    "discardable": DISCARDABLE,
}

PhaseKind = Literal["plan", "apply"]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("workspace_id", "position"),
        Index("ix_runs_workspace_status", "workspace_id", "status"),
        Index("ix_runs_organization_created", "organization_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    configuration_version_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(2000), default="")
    source: Mapped[str] = mapped_column(String(40), default="tfe-api")
    trigger_reason: Mapped[str] = mapped_column(String(40), default="manual")
    is_destroy: Mapped[bool] = mapped_column(Boolean, default=False)
    refresh: Mapped[bool] = mapped_column(Boolean, default=True)
    refresh_only: Mapped[bool] = mapped_column(Boolean, default=False)
    plan_only: Mapped[bool] = mapped_column(Boolean, default=False)
    speculative: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_apply: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_empty_apply: Mapped[bool] = mapped_column(Boolean, default=False)
    target_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    replace_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where its jobs run: "remote" (cairn's workers, pool NULL) or "agent" (pool_id).
    execution_mode: Mapped[str] = mapped_column(String(16), default="remote")
    pool_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_timestamps: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # When a cancel was asked for (HCP's canceled-at), and when force-cancel opens.
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    force_cancel_available_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    has_changes: Mapped[bool] = mapped_column(Boolean, default=False)
    # Queue order within the workspace (increasing; unique per workspace).
    position: Mapped[int] = mapped_column(Integer)
    terraform_version: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(String(500), default="")

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def stamp(self, status: str, now: datetime) -> None:
        """Enter ``status`` at ``now`` (and note it in ``status-timestamps``)."""
        self.status = status
        self.updated_at = now
        self.status_timestamps = {
            **(self.status_timestamps or {}),
            f"{status.replace('_', '-')}-at": _iso(now),
        }


class RunPhase(Base):
    """A run's plan or apply: ``plan-…`` / ``apply-…``."""

    __tablename__ = "run_phases"
    __table_args__ = (UniqueConstraint("run_id", "kind"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # plan | apply
    status: Mapped[str] = mapped_column(String(16), default=PHASE_PENDING)
    resource_additions: Mapped[int] = mapped_column(Integer, default=0)
    resource_changes: Mapped[int] = mapped_column(Integer, default=0)
    resource_destructions: Mapped[int] = mapped_column(Integer, default=0)
    resource_imports: Mapped[int] = mapped_column(Integer, default=0)
    has_changes: Mapped[bool] = mapped_column(Boolean, default=False)
    log_size: Mapped[int] = mapped_column(Integer, default=0)
    status_timestamps: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    plan_file_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    json_plan_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def stamp(self, status: str, now: datetime) -> None:
        """Enter ``status`` at ``now``; ``status-timestamps`` names it as HCP Terraform does
        (``queued-at``, ``started-at`` for running, ``finished-at``, …)."""
        self.status = status
        key = "started" if status == PHASE_RUNNING else status
        self.status_timestamps = {**(self.status_timestamps or {}), f"{key}-at": _iso(now)}
        if status == PHASE_RUNNING:
            self.started_at = now
        elif status in PHASE_FINAL:
            self.finished_at = now


class RunEvent(Base):
    """What happened to a run and who did it (HCP Terraform's run events)."""

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_run_seq", "run_id", "seq"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(500), default="")
    actor_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Order within the run (1, 2, …): events of one instant keep the order they happened in.
    seq: Mapped[int] = mapped_column(Integer, default=0)


def _iso(now: datetime) -> str:
    return iso8601(now) or ""


# ---- rules (pure: rows as read and now) -------------------------------------------------------


@dataclass(frozen=True)
class Actions:
    """What can be done to a run now (the document's ``actions``)."""

    is_cancelable: bool
    is_confirmable: bool
    is_discardable: bool
    is_force_cancelable: bool

    def as_wire(self) -> dict[str, Any]:
        return {
            "is-cancelable": self.is_cancelable,
            "is-confirmable": self.is_confirmable,
            "is-discardable": self.is_discardable,
            "is-force-cancelable": self.is_force_cancelable,
        }


def cancel_requested(run: Run) -> bool:
    return run.canceled_at is not None


def actions(run: Run, now: datetime) -> Actions:
    return Actions(
        is_cancelable=run.status in CANCELABLE and not cancel_requested(run),
        is_confirmable=run.status == PLANNED,
        is_discardable=run.status in DISCARDABLE,
        is_force_cancelable=force_cancelable(run, now),
    )


def force_cancelable(run: Run, now: datetime) -> bool:
    """A cancel was asked for, the run has not stopped, and the cool-off is over."""
    return (
        cancel_requested(run)
        and not run.final
        and run.force_cancel_available_at is not None
        and now >= run.force_cancel_available_at
    )


def operation(run: Run) -> str:
    """The run's operation as ``filter[operation]`` names it."""
    if run.refresh_only:
        return "refresh_only"
    if run.is_destroy:
        return "destroy"
    if run.plan_only or run.speculative:
        return "plan_only"
    if run.allow_empty_apply:
        return "empty_apply"
    return "plan_and_apply"


@dataclass(frozen=True)
class PlanVerdict:
    """Where a run goes when its plan finished."""

    status: str  # planned | planned_and_finished | canceled
    apply_now: bool  # auto-apply: confirmed and queued for apply in the same transaction


def after_plan(run: Run, has_changes: bool) -> PlanVerdict:
    """The run's next status once its plan finished without error."""
    if cancel_requested(run):
        return PlanVerdict(CANCELED, False)
    if run.speculative or run.plan_only:
        return PlanVerdict(PLANNED_AND_FINISHED, False)
    if not has_changes and not run.allow_empty_apply:
        return PlanVerdict(PLANNED_AND_FINISHED, False)
    if run.auto_apply:
        return PlanVerdict(APPLY_QUEUED, True)
    return PlanVerdict(PLANNED, False)


def priority(run: Run, kind: PhaseKind) -> int:
    if kind == "apply":
        return PRIORITY_APPLY
    return PRIORITY_SPECULATIVE if run.speculative else PRIORITY_PLAN


def next_in_line(
    pending: list[Run], active: Run | None, locked_by_other: bool
) -> tuple[Run | None, Run | None]:
    """Given a workspace's pending runs (in queue order), its active run and whether its lock
    is held by someone other than a run: ``(run to start now, run that is current)``.

    An active run stays current and nothing starts. A lock held by someone else (a user)
    starts nothing, and the first pending run is the current one (the CLI then says
    "Waiting for the manually locked workspace to be unlocked..."). Otherwise the first
    pending run starts."""
    if active is not None:
        return None, active
    first = pending[0] if pending else None
    if locked_by_other:
        return None, first
    return first, first
