"""What the run machine needs from the job side and from configuration versions, as
``Protocol``s (the seam of the design: ``runs.jobs.JobQueue`` and ``runs.logs.LogStore`` are
built by ``app.py`` and handed in; tests may hand in fakes).

Every method takes the caller's Session: it runs inside the run machine's transaction, so a
job exists exactly when the run status that waits for it committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy.orm import Session

CancelResult = Literal["dequeued", "signalled", "none"]


class JobQueue(Protocol):
    """The jobs of runs (``runs.jobs.JobQueue``)."""

    def enqueue(
        self,
        s: Session,
        *,
        run_id: str,
        phase_id: str,
        kind: Literal["plan", "apply"],
        pool_id: str | None,
        organization_id: str,
        priority: int,
        now: datetime,
    ) -> str:
        """Queue a job for the phase; its ID. Executors are woken after commit."""
        ...

    def cancel(self, s: Session, run_id: str, *, force: bool, now: datetime) -> CancelResult:
        """Cancel the run's unfinished job: ``"dequeued"`` (it had not started: it is gone, the
        caller finishes the run as canceled), ``"signalled"`` (it runs: its executor is told
        ``graceful`` or ``force`` at its next heartbeat), ``"none"`` (it has no such job)."""
        ...


class LogUrls(Protocol):
    """Where a phase's log is read (``runs.logs.LogStore``)."""

    def read_url(self, phase_id: str) -> str:
        """Absolute and signed; the secret is in the path (the CLI replaces the query)."""
        ...


class ConfigurationVersionRow(Protocol):
    """The columns of a configuration version the run machine reads."""

    @property
    def id(self) -> str: ...
    @property
    def workspace_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def speculative(self) -> bool: ...
    @property
    def created_by_id(self) -> str | None: ...


class ConfigurationVersions(Protocol):
    """Configuration versions as runs see them (``configversions``)."""

    def get(self, s: Session, cv_id: str) -> ConfigurationVersionRow | None: ...
    def latest_uploaded(self, s: Session, workspace_id: str) -> ConfigurationVersionRow | None:
        """The workspace's newest configuration version in status ``uploaded``, if any."""
        ...
