"""Jobs, job tokens and log chunks: the rows of the job queue and of the phases' logs.

A **job** is one phase (plan or apply) of a run waiting for, or held by, an executor (a built-in
worker or a ``cairn agent``): ``queued → claimed → running → finished | errored | canceled``.
``attempt`` counts claims and fences every call of the agent protocol (a call carrying an older
attempt is refused); ``lease_expires_at`` is pushed forward by heartbeats and read by the sweep
(``runs.sweep``). ``pool_id`` NULL: only the server's built-in workers may claim it. The partial
index on queued jobs is what a claim scans.

A **job token** (``cairn_job_…``) is issued at each claim, kept only as a keyed hash, bound to
its attempt, valid until the phase's timeout and revoked when the job ends (``revoked_reason``:
``finished``, ``lease_lost``, ``canceled``).

A **log chunk** is a piece of a phase's log at its byte ``offset``; the log is the chunks in
offset order (``runs.logs``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime, partial_index

JOB_STATUSES = ("queued", "claimed", "running", "finished", "errored", "canceled")
ACTIVE = ("claimed", "running")  # held by an executor
CANCEL_SIGNALS = ("none", "graceful", "force")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # What a claim scans: the queued jobs of one pool (or of the built-in workers), in
        # priority then arrival order.
        partial_index(
            "ix_jobs_queued", "pool_id", "priority", "queued_at", where="status = 'queued'"
        ),
        # What the sweep scans: jobs held by an executor, by lease.
        partial_index(
            "ix_jobs_active_lease", "lease_expires_at", where="status IN ('claimed', 'running')"
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    phase_id: Mapped[str] = mapped_column(
        ForeignKey("run_phases.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(8))  # plan | apply
    # NULL: the server's built-in workers; else the agent pool whose agents may claim it.
    pool_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer)  # apply 0, plan 1, speculative 2
    cancel: Mapped[str] = mapped_column(String(8), default="none")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    timeout_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bytes of log the executor has sent for this phase (its offsets), stored or dropped past
    # the log limit; appends are conditional on it.
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)


class JobToken(Base):
    __tablename__ = "job_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class LogChunk(Base):
    __tablename__ = "log_chunks"
    phase_id: Mapped[str] = mapped_column(
        ForeignKey("run_phases.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
