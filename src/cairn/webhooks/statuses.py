"""Commit statuses: what cairn tells the forge about the runs a commit started.

HCP's *aggregated* status check (``vcs-status-checks.mdx``): one status per (connection,
repository, commit), context ``cairn/<organization>``, summarising every run that commit
started through that connection:

* ``pending`` while any of them is not final (and not waiting for confirmation);
* ``failure`` when one errored, else ``error`` when one was canceled or discarded;
* ``success`` when all planned or applied fine (a change request's speculative plan ends
  ``planned_and_finished``; a run waiting for confirmation has planned fine too);
* a commit whose changes concern none of the workspaces still gets a passing status (HCP).

The status is an **outbox** row (``vcs_statuses``), written in the transaction of the run's
transition (``runs.events.RunHooks.after_change`` → :class:`StatusHook`): ``version`` moves on
each change and ``posted_version`` records what the forge has. :func:`post_pending` (a step of
the webhook worker's round, in every replica) claims rows whose forge copy is behind with a
lease (one conditional UPDATE: one replica posts each change), posts them
(``Forge.set_status``) and retries a failed post later with a growing delay; a run never
waits for a forge. After ``MAX_ATTEMPTS`` failed posts of a version it is given up (the error
stays on the row) until the next change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, event, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cairn import ids
from cairn.clock import Clock
from cairn.configversions.model import ConfigurationVersionIngress
from cairn.db.base import Base, UTCDateTime, partial_index
from cairn.db.engine import Database, affected
from cairn.organizations.model import Organization
from cairn.runs import model as m
from cairn.runs.model import Run
from cairn.webhooks.model import one_line
from cairn.workspaces.model import Workspace

log = logging.getLogger("cairn.webhooks")

MAX_DESCRIPTION: Final = 140  # GitHub's limit on a status description
LEASE: Final = timedelta(minutes=2)
MAX_ATTEMPTS: Final = 8
BATCH: Final = 20  # statuses posted per round


class VcsStatus(Base):
    __tablename__ = "vcs_statuses"
    __table_args__ = (
        UniqueConstraint("oauth_client_id", "repo", "sha"),
        # What a post round scans: statuses whose forge copy is behind.
        partial_index("ix_vcs_statuses_due", "not_before", where="posted_version < version"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # The token whose forge client posts (a workspace's; no FK: vcs deletes tokens itself).
    oauth_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    repo: Mapped[str] = mapped_column(String(255))
    sha: Mapped[str] = mapped_column(String(64))
    context: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # pending | success | failure | error
    description: Mapped[str] = mapped_column(String(MAX_DESCRIPTION))
    target_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    posted_version: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# ---- the aggregate (pure) ---------------------------------------------------------------------

_WORDS: Final = {
    m.PENDING: "pending",
    m.PLAN_QUEUED: "plan queued",
    m.PLANNING: "planning",
    m.PLANNED: "planned, needs confirmation",
    m.CONFIRMED: "confirmed",
    m.APPLY_QUEUED: "apply queued",
    m.APPLYING: "applying",
    m.APPLIED: "applied",
    m.PLANNED_AND_FINISHED: "planned",
    m.DISCARDED: "discarded",
    m.CANCELED: "canceled",
    m.ERRORED: "errored",
}
_RANK: Final = {"pending": 0, "failure": 1, "error": 2, "success": 3}


@dataclass(frozen=True)
class RunFact:
    workspace: str  # name
    run_id: str
    status: str
    url: str | None


def state_of(status: str) -> str:
    """A run status as a commit status state."""
    if status == m.ERRORED:
        return "failure"
    if status in (m.CANCELED, m.DISCARDED):
        return "error"
    if status in (m.APPLIED, m.PLANNED_AND_FINISHED, m.PLANNED):
        return "success"
    return "pending"


def aggregate(runs: Sequence[RunFact]) -> tuple[str, str, str | None]:
    """(state, description, target URL) of a commit's runs, in creation order."""
    if not runs:
        return "success", "No changes to the workspaces' paths: nothing to run", None
    worst = min(runs, key=lambda r: _RANK[state_of(r.status)])
    state = state_of(worst.status)
    if len(runs) == 1:
        text = f"{worst.workspace}: run {_WORDS.get(worst.status, worst.status)}"
    else:
        counts: dict[str, int] = {}
        for r in runs:
            word = _WORDS.get(r.status, r.status)
            counts[word] = counts.get(word, 0) + 1
        parts = ", ".join(f"{n} {word}" for word, n in counts.items())
        text = f"{len(runs)} runs: {parts}"
    return state, one_line(text, MAX_DESCRIPTION), worst.url


def run_url(public_url: str, org: str, workspace: str, run_id: str) -> str:
    """Where a run is shown (the UI's path; the API's run document until the UI exists)."""
    return f"{public_url.rstrip('/')}/app/{org}/{workspace}/runs/{run_id}"


# ---- writing the outbox (in the run's transaction) --------------------------------------------


def record(
    s: Session,
    *,
    oauth_client_id: str,
    organization_id: str,
    oauth_token_id: str | None,
    repo: str,
    sha: str,
    public_url: str,
    now: datetime,
) -> VcsStatus:
    """Recompute the commit's status from its runs and store it when it changed."""
    row = _locked(s, oauth_client_id, organization_id, oauth_token_id, repo, sha, now)
    org_name = s.scalar(select(Organization.name).where(Organization.id == organization_id))
    facts = [
        RunFact(ws_name, run_id, status, run_url(public_url, org_name or "", ws_name, run_id))
        for run_id, status, ws_name in s.execute(
            select(Run.id, Run.status, Workspace.name)
            .join(
                ConfigurationVersionIngress,
                ConfigurationVersionIngress.configuration_version_id
                == Run.configuration_version_id,
            )
            .join(Workspace, Workspace.id == Run.workspace_id)
            .where(
                ConfigurationVersionIngress.oauth_client_id == oauth_client_id,
                ConfigurationVersionIngress.repo == repo,
                ConfigurationVersionIngress.commit_sha == sha,
            )
            .order_by(Run.created_at, Run.id)
        )
    ]
    state, description, url = aggregate(facts)
    _set(row, state, description, url, f"cairn/{org_name}", oauth_token_id, now)
    return row


def _set(
    row: VcsStatus,
    state: str,
    description: str,
    url: str | None,
    context: str,
    token_id: str | None,
    now: datetime,
) -> None:
    if (row.state, row.description, row.target_url, row.context) != (
        state,
        description,
        url,
        context,
    ):
        row.state, row.description, row.target_url, row.context = state, description, url, context
        row.version += 1
        row.attempts = 0
        row.not_before = None
        row.error = None
        row.updated_at = now
    if token_id and not row.oauth_token_id:
        row.oauth_token_id = token_id


def _locked(
    s: Session,
    oauth_client_id: str,
    organization_id: str,
    token_id: str | None,
    repo: str,
    sha: str,
    now: datetime,
) -> VcsStatus:
    """The commit's status row, made if missing (concurrent makers: one insert wins), locked
    for this transaction on PostgreSQL so concurrent run changes aggregate one after another."""
    values = dict(
        id=ids.new_id("vcs_status"),
        oauth_client_id=oauth_client_id,
        organization_id=organization_id,
        oauth_token_id=token_id,
        repo=repo,
        sha=sha,
        context="",
        state="",
        description="",
        version=0,
        posted_version=0,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    postgres = s.get_bind().dialect.name == "postgresql"
    if postgres:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(VcsStatus).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(VcsStatus).values(**values)  # type: ignore[assignment]
    s.execute(stmt.on_conflict_do_nothing(index_elements=["oauth_client_id", "repo", "sha"]))
    query = (
        select(VcsStatus)
        .where(
            VcsStatus.oauth_client_id == oauth_client_id,
            VcsStatus.repo == repo,
            VcsStatus.sha == sha,
        )
        .execution_options(populate_existing=True)
    )
    if postgres:
        query = query.with_for_update()
    row = s.scalar(query)
    assert row is not None
    return row


class StatusHook:
    """``RunHooks.after_change``: a run started by a VCS event changed → its commit's status
    (one primary-key read for any other run)."""

    def __init__(
        self, public_url: str, clock: Clock, wake: Callable[[], None] | None = None
    ) -> None:
        self._public_url = public_url
        self._clock = clock
        # Wakes this process's webhook worker once the transaction commits, so the forge
        # hears of the change in a moment rather than at the next poll.
        self._wake = wake

    def __call__(self, s: Session, run: Run) -> None:
        ingress = s.get(ConfigurationVersionIngress, run.configuration_version_id)
        if ingress is None:
            return
        s.flush()
        row = record(
            s,
            oauth_client_id=ingress.oauth_client_id,
            organization_id=run.organization_id,
            oauth_token_id=ingress.oauth_token_id,
            repo=ingress.repo,
            sha=ingress.commit_sha,
            public_url=self._public_url,
            now=self._clock.now(),
        )
        wake = self._wake
        if wake is not None and row.posted_version < row.version:
            event.listen(s, "after_commit", lambda _s: wake(), once=True)


# ---- posting ----------------------------------------------------------------------------------


class StatusPoster(Protocol):
    """What posting needs of a forge client (``vcs.forges.Forge``)."""

    def set_status(
        self,
        repo: str,
        sha: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None,
    ) -> None: ...


ForgeFor = Callable[[str], StatusPoster]
"""A forge client for a token ID (``forge_for(vcs_tokens.credential(token_id))``)."""


def retry_delay(attempts: int) -> timedelta:
    """15 s, 30 s, 1 min, … up to 30 min between failed posts."""
    return timedelta(seconds=min(15 * 2 ** max(attempts - 1, 0), 1800))


def post_pending(db: Database, clock: Clock, forge_for: ForgeFor, *, batch: int = BATCH) -> int:
    """Post the statuses whose forge copy is behind; how many were posted."""
    now = clock.now()
    with db.unit_of_work() as s:
        due = list(
            s.execute(
                select(VcsStatus.id, VcsStatus.version)
                .where(
                    VcsStatus.posted_version < VcsStatus.version,
                    (VcsStatus.not_before.is_(None)) | (VcsStatus.not_before <= now),
                    (VcsStatus.lease_until.is_(None)) | (VcsStatus.lease_until < now),
                )
                .order_by(VcsStatus.updated_at)
                .limit(batch)
            )
        )
    posted = 0
    for status_id, version in due:
        row = _claim(db, status_id, version, now)
        if row is not None and _post(db, clock, forge_for, row):
            posted += 1
    return posted


def _claim(db: Database, status_id: str, version: int, now: datetime) -> VcsStatus | None:
    with db.unit_of_work(write=True) as s:
        won = affected(
            s.execute(
                update(VcsStatus)
                .where(
                    VcsStatus.id == status_id,
                    VcsStatus.version == version,
                    (VcsStatus.lease_until.is_(None)) | (VcsStatus.lease_until < now),
                )
                .values(lease_until=now + LEASE)
                .execution_options(synchronize_session=False)
            )
        )
        row = s.get(VcsStatus, status_id) if won == 1 else None
        if row is not None:
            s.expunge(row)
        s.commit()
        return row


def _post(db: Database, clock: Clock, forge_for: ForgeFor, row: VcsStatus) -> bool:
    error: str | None = None
    try:
        if not row.oauth_token_id:
            raise LookupError("no token of the connection can post to this repository")
        forge_for(row.oauth_token_id).set_status(
            row.repo, row.sha, row.state, row.context, row.description, row.target_url
        )
    except Exception as exc:  # a forge down, a token needing re-authorisation: try later
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        error = one_line(f"{type(exc).__name__}: {detail}", 500)
        log.warning(
            "posting a commit status failed; trying again later",
            extra={"status_id": row.id, "error": error},
        )
    now = clock.now()
    attempts = row.attempts + 1
    values: dict[str, object]
    if error is None:
        values = dict(posted_version=row.version, attempts=0, error=None, not_before=None)
    elif attempts >= MAX_ATTEMPTS:
        values = dict(posted_version=row.version, attempts=attempts, error=error)
    else:
        values = dict(attempts=attempts, error=error, not_before=now + retry_delay(attempts))
    with db.unit_of_work(write=True) as s:
        s.execute(
            update(VcsStatus)
            .where(VcsStatus.id == row.id, VcsStatus.version == row.version)
            .values(lease_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        # A newer version written meanwhile: just release the lease; it is posted next.
        s.execute(
            update(VcsStatus)
            .where(VcsStatus.id == row.id)
            .values(lease_until=None)
            .execution_options(synchronize_session=False)
        )
        s.commit()
    return error is None
