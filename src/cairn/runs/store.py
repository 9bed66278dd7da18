"""Run, phase and event rows, read in the caller's session. Runs are seen through their
workspace: a run of a workspace the caller may not read does not exist for them (404).
Lists are filtered by the authorizer in SQL (``authz.visible``) and paged by the database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.auth.model import User
from cairn.authz.permissions import WORKSPACE_READ
from cairn.authz.subject import Subject
from cairn.configversions.model import ConfigurationVersion
from cairn.errors import BadRequest, NotFound
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.runs import model as m
from cairn.runs.model import Run, RunEvent, RunPhase
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace


@dataclass
class RunView:
    """A run with what its document shows."""

    run: Run
    org: Organization
    ws: Workspace
    plan: RunPhase
    apply: RunPhase
    permissions: frozenset[str]
    position_in_queue: int = 0


@dataclass
class RunFilter:
    statuses: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    status_group: str | None = None
    user: str | None = None
    commit: str | None = None
    basic: str | None = None


def _split(value: str | None, parameter: str, allowed: frozenset[str] | None) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if len(items) > 50:
        raise BadRequest(f"{parameter} names more than 50 values", parameter=parameter)
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise BadRequest(
                    f"{parameter}: {item[:60]!r} is not one of {', '.join(sorted(allowed))}",
                    parameter=parameter,
                )
    return items


def run_filter(
    status: str | None,
    operation: str | None,
    source: str | None,
    status_group: str | None,
    user: str | None,
    commit: str | None,
    basic: str | None,
) -> RunFilter:
    """The list filters of a request, checked (400 naming the parameter)."""
    if status_group is not None and status_group not in m.STATUS_GROUPS:
        raise BadRequest(
            f"filter[status_group] must be one of {', '.join(m.STATUS_GROUPS)}",
            parameter="filter[status_group]",
        )
    for value, name in (
        (user, "search[user]"),
        (commit, "search[commit]"),
        (basic, "search[basic]"),
    ):
        if value is not None and len(value) > 200:
            raise BadRequest(f"{name} is longer than 200 characters", parameter=name)
    return RunFilter(
        statuses=_split(status, "filter[status]", frozenset(m.STATUSES)),
        operations=_split(operation, "filter[operation]", m.OPERATIONS),
        sources=_split(source, "filter[source]", None),
        status_group=status_group,
        user=user,
        commit=commit,
        basic=basic,
    )


def find(s: Session, caller: Subject, run_id: str) -> tuple[Organization, Workspace, Run]:
    """A run, its workspace and organization, if the caller may read the workspace."""
    row = s.execute(
        select(Organization, Workspace, Run)
        .join(Workspace, Workspace.organization_id == Organization.id)
        .join(Run, Run.workspace_id == Workspace.id)
        .where(Run.id == run_id)
    ).first()
    if row is None or not authz.allowed(caller, WORKSPACE_READ, workspaces.target(row[0], row[1])):
        raise authz.not_found("run", repr(run_id))
    return row[0], row[1], row[2]


def find_phase(
    s: Session, caller: Subject, phase_id: str, kind: m.PhaseKind
) -> tuple[Organization, Workspace, Run, RunPhase]:
    ph = s.get(RunPhase, phase_id)
    if ph is None or ph.kind != kind:
        raise authz.not_found(kind, repr(phase_id))
    org, ws, run = find(s, caller, ph.run_id)
    return org, ws, run, ph


def find_event(s: Session, caller: Subject, event_id: str) -> tuple[Run, RunEvent]:
    ev = s.get(RunEvent, event_id)
    if ev is None:
        raise authz.not_found("run event", repr(event_id))
    try:
        _, _, run = find(s, caller, ev.run_id)
    except NotFound:
        raise authz.not_found("run event", repr(event_id)) from None
    return run, ev


def views(
    s: Session, caller: Subject, rows: list[tuple[Organization, Workspace, Run]]
) -> list[RunView]:
    """The documents' worth of each run: its phases in one query whatever the number."""
    run_ids = [r.id for _, _, r in rows]
    phases: dict[str, dict[str, RunPhase]] = defaultdict(dict)
    if run_ids:
        for ph in s.scalars(select(RunPhase).where(RunPhase.run_id.in_(run_ids))):
            phases[ph.run_id][ph.kind] = ph
    perms: dict[str, frozenset[str]] = {}
    out: list[RunView] = []
    for org, ws, run in rows:
        if ws.id not in perms:
            perms[ws.id] = authz.permissions(caller, org.id, ws.name, ws.id, ws.project_id)
        out.append(
            RunView(
                run=run,
                org=org,
                ws=ws,
                plan=phases[run.id]["plan"],
                apply=phases[run.id]["apply"],
                permissions=perms[ws.id],
            )
        )
    return out


def _visible(s: Session, caller: Subject, org_id: str) -> Any:
    return authz.visible(
        caller,
        WORKSPACE_READ,
        org_id,
        workspace_id=Workspace.id.expression,
        workspace_name=Workspace.name.expression,
        dialect=s.get_bind().dialect.name,
        project_id=Workspace.project_id.expression,
    )


def _filtered(stmt: Select[Any], flt: RunFilter) -> Select[Any]:
    if flt.statuses:
        stmt = stmt.where(Run.status.in_(flt.statuses))
    if flt.status_group is not None:
        stmt = stmt.where(Run.status.in_(sorted(m.STATUS_GROUPS[flt.status_group])))
    if flt.sources:
        stmt = stmt.where(Run.source.in_(flt.sources))
    if flt.operations:
        conds: list[ColumnElement[bool]] = []
        for op in flt.operations:
            if op == "refresh_only":
                conds.append(Run.refresh_only.is_(True))
            elif op == "destroy":
                conds.append((Run.is_destroy.is_(True)) & Run.refresh_only.is_(False))
            elif op == "plan_only":
                conds.append(
                    or_(Run.plan_only.is_(True), Run.speculative.is_(True))
                    & Run.is_destroy.is_(False)
                    & Run.refresh_only.is_(False)
                )
            elif op == "empty_apply":
                conds.append(
                    Run.allow_empty_apply.is_(True)
                    & Run.plan_only.is_(False)
                    & Run.speculative.is_(False)
                    & Run.is_destroy.is_(False)
                    & Run.refresh_only.is_(False)
                )
            elif op == "plan_and_apply":
                conds.append(
                    Run.plan_only.is_(False)
                    & Run.speculative.is_(False)
                    & Run.is_destroy.is_(False)
                    & Run.refresh_only.is_(False)
                    & Run.allow_empty_apply.is_(False)
                )
            # save_plan: cairn has no saved-plan runs; it matches nothing.
        stmt = stmt.where(or_(*conds)) if conds else stmt.where(Run.id.is_(None))
    if flt.user:
        stmt = stmt.where(Run.created_by_id.in_(select(User.id).where(User.username == flt.user)))
    if flt.commit:
        # No run of cairn comes from a VCS commit yet: a commit search matches nothing.
        stmt = stmt.where(Run.id.is_(None))
    if flt.basic:
        needle = flt.basic
        stmt = stmt.where(
            or_(
                Run.id == needle,
                Run.message.contains(needle, autoescape=True),
                Run.created_by_id.in_(
                    select(User.id).where(User.username.contains(needle, autoescape=True))
                ),
            )
        )
    return stmt


def search(
    s: Session,
    caller: Subject,
    org: Organization,
    flt: RunFilter,
    page: Page,
    *,
    ws_id: str | None = None,
) -> tuple[list[RunView], int]:
    """One page of the runs of ``org`` (or of one of its workspaces) the caller may read,
    newest first, and their total."""
    stmt = (
        select(Organization, Workspace, Run)
        .join(Workspace, Workspace.organization_id == Organization.id)
        .join(Run, Run.workspace_id == Workspace.id)
        .where(Organization.id == org.id, _visible(s, caller, org.id))
    )
    if ws_id is not None:
        stmt = stmt.where(Run.workspace_id == ws_id)
    stmt = _filtered(stmt, flt)  # type: ignore[arg-type]
    total = (
        s.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None))
        or 0
    )
    rows = s.execute(
        stmt.order_by(Run.created_at.desc(), Run.position.desc(), Run.id.desc())
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return views(s, caller, [(row[0], row[1], row[2]) for row in rows]), total


def queue(s: Session, caller: Subject, org: Organization, page: Page) -> tuple[list[RunView], int]:
    """The organization's runs waiting for or holding an executor (readable ones), in the
    order they entered the queue: running ones have position 0, waiting ones 1, 2, …"""
    stmt = (
        select(Organization, Workspace, Run)
        .join(Workspace, Workspace.organization_id == Organization.id)
        .join(Run, Run.workspace_id == Workspace.id)
        .where(
            Organization.id == org.id,
            Run.status.in_(sorted(m.QUEUED | m.RUNNING)),
            _visible(s, caller, org.id),
        )
        .order_by(Run.updated_at, Run.id)
    )
    rows = [(row[0], row[1], row[2]) for row in s.execute(stmt).all()]
    waiting = 0
    positions: dict[str, int] = {}
    for _, _, r in rows:
        if r.status in m.QUEUED:
            waiting += 1
            positions[r.id] = waiting
        else:
            positions[r.id] = 0
    total = len(rows)
    found = views(s, caller, rows[page.offset : page.offset + page.size])
    for v in found:
        v.position_in_queue = positions[v.run.id]
    return found, total


def capacity(s: Session, org_id: str) -> tuple[int, int]:
    """(pending, running): the organization's runs waiting for an executor and executing."""
    counts = dict(
        s.execute(
            select(Run.status, func.count())
            .where(Run.organization_id == org_id, Run.status.in_(sorted(m.QUEUED | m.RUNNING)))
            .group_by(Run.status)
        ).all()
    )
    pending = sum(int(counts.get(st, 0)) for st in m.QUEUED)
    running = sum(int(counts.get(st, 0)) for st in m.RUNNING)
    return pending, running


def pending_position(s: Session, run: Run) -> int:
    """How many non-final runs of its workspace are ahead of a pending run."""
    if run.status != m.PENDING:
        return 0
    return (
        s.scalar(
            select(func.count())
            .select_from(Run)
            .where(
                Run.workspace_id == run.workspace_id,
                Run.speculative.is_(False),
                Run.position < run.position,
                Run.status.in_(sorted(frozenset(m.STATUSES) - m.FINAL)),
            )
        )
        or 0
    )


def events(s: Session, run_id: str, page: Page) -> tuple[list[RunEvent], int]:
    stmt = select(RunEvent).where(RunEvent.run_id == run_id)
    total = s.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True)) or 0
    rows = s.scalars(stmt.order_by(RunEvent.seq, RunEvent.id).offset(page.offset).limit(page.size))
    return list(rows), total


def next_position(s: Session, ws_id: str) -> int:
    return int(s.scalar(select(func.max(Run.position)).where(Run.workspace_id == ws_id)) or 0) + 1


class ConfigurationVersionRows:
    """``runs.queue.ConfigurationVersions`` on the ``configuration_versions`` table."""

    def get(self, s: Session, cv_id: str) -> ConfigurationVersion | None:
        return s.get(ConfigurationVersion, cv_id)

    def latest_uploaded(self, s: Session, workspace_id: str) -> ConfigurationVersion | None:
        return s.scalar(
            select(ConfigurationVersion)
            .where(
                ConfigurationVersion.workspace_id == workspace_id,
                ConfigurationVersion.status == "uploaded",
            )
            .order_by(ConfigurationVersion.created_at.desc(), ConfigurationVersion.id.desc())
            .limit(1)
        )
