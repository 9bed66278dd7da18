"""Runs: creating them, reading them, and the actions (apply, discard, cancel, force-cancel,
force-execute). Each is one unit of work: the run's change, its job, the workspace lock and
the audit event commit together. The machine's writes are in ``runs.scheduler``, its rules in
``runs.model``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.subjects import subject_now
from cairn.authz.permissions import RUN_APPLY, RUN_PLAN, STATE_READ, WORKSPACE_MANAGE
from cairn.authz.subject import Subject
from cairn.blobs.store import BlobStore
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.runs import model as m
from cairn.runs import store
from cairn.runs.model import Run, RunEvent, RunPhase
from cairn.runs.queue import ConfigurationVersionRow, ConfigurationVersions
from cairn.runs.scheduler import Scheduler, event, lock_workspace_row
from cairn.runs.store import RunFilter, RunView
from cairn.workspaces import store as workspaces
from cairn.workspaces.locks import held_message
from cairn.workspaces.model import Workspace


@dataclass
class NewRun:
    workspace_id: str
    configuration_version_id: str | None = None
    message: str = ""
    is_destroy: bool = False
    refresh: bool = True
    refresh_only: bool = False
    plan_only: bool = False
    auto_apply: bool | None = None
    allow_empty_apply: bool = False
    target_addrs: list[str] = field(default_factory=list)
    replace_addrs: list[str] = field(default_factory=list)
    source: str = "tfe-api"


@dataclass
class PhaseView:
    view: RunView
    phase: RunPhase


class RunService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        scheduler: Scheduler,
        configuration_versions: ConfigurationVersions,
        blobs: BlobStore,
    ) -> None:
        self._db = db
        self._clock = clock
        self._scheduler = scheduler
        self._cvs = configuration_versions
        self._blobs = blobs

    # ---- creating ------------------------------------------------------------------------------

    def create(self, caller: Subject, new: NewRun, source: str) -> RunView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, new.workspace_id)
            target = workspaces.target(org, ws)
            authz.require(caller, RUN_PLAN, target, doing="queue runs on")
            where = f"workspace {org.name}/{ws.name}"
            if ws.execution_mode == "local":
                raise Invalid(
                    f"{where} uses local execution: Terraform runs on your machine and only "
                    "stores state here. Set its execution-mode to remote (or agent) to queue runs.",
                    pointer="/data/relationships/workspace",
                )
            cv = self._configuration(s, ws, where, new.configuration_version_id)
            speculative = bool(cv.speculative or new.plan_only)
            auto_apply = ws.auto_apply if new.auto_apply is None else new.auto_apply
            if new.is_destroy and new.refresh_only:
                raise Invalid(
                    "a run cannot be both is-destroy and refresh-only",
                    pointer="/data/attributes/refresh-only",
                )
            if new.refresh_only and not new.refresh:
                raise Invalid(
                    "a refresh-only run needs refresh; leave refresh true",
                    pointer="/data/attributes/refresh",
                )
            if new.is_destroy and not ws.allow_destroy_plan:
                raise Invalid(
                    f"{where} does not allow destroy plans (allow-destroy-plan is false); "
                    "an admin of the workspace can turn it on",
                    pointer="/data/attributes/is-destroy",
                )
            if not speculative and (auto_apply or new.is_destroy):
                authz.require(
                    caller,
                    RUN_APPLY,
                    target,
                    doing="queue destroy runs on"
                    if new.is_destroy
                    else "queue auto-applied runs on",
                )
            pool_id: str | None = None
            if ws.execution_mode == "agent":
                pool_id = ws.agent_pool_id
                if pool_id is None:
                    raise Invalid(
                        f"{where} uses agent execution but names no agent pool; set its "
                        "agent-pool-id first",
                        pointer="/data/relationships/workspace",
                    )
            run = self._insert(
                s,
                org,
                ws,
                cv,
                new,
                speculative=speculative,
                auto_apply=auto_apply,
                pool_id=pool_id,
                created_by_id=caller.id if caller.kind in ("user", "service-account") else None,
                now=now,
            )
            self._audit(s, caller, source, now, "run.create", org, ws, run, speculative=speculative)
            s.commit()
            return self._view(s, caller, run.id)

    def _insert(
        self,
        s: Session,
        org: Organization,
        ws: Workspace,
        cv: ConfigurationVersionRow,
        new: NewRun,
        *,
        speculative: bool,
        auto_apply: bool,
        pool_id: str | None,
        created_by_id: str | None,
        now: datetime,
    ) -> Run:
        """Insert the run and its two phases and admit it to the machine."""
        # The workspace's row lock orders this creation with every other change of its queue.
        lock_workspace_row(s, ws.id)
        run = Run(
            id=ids.new_id("run"),
            workspace_id=ws.id,
            organization_id=org.id,
            configuration_version_id=cv.id,
            status=m.PENDING,
            message=new.message,
            source=new.source,
            trigger_reason="manual",
            is_destroy=new.is_destroy,
            refresh=new.refresh,
            refresh_only=new.refresh_only,
            plan_only=speculative,
            speculative=speculative,
            auto_apply=auto_apply and not speculative,
            allow_empty_apply=new.allow_empty_apply,
            target_addrs=list(new.target_addrs),
            replace_addrs=list(new.replace_addrs),
            execution_mode=ws.execution_mode,
            pool_id=pool_id,
            created_by_id=created_by_id,
            created_at=now,
            updated_at=now,
            status_timestamps={},
            position=store.next_position(s, ws.id),
            terraform_version=ws.terraform_version,
        )
        s.add(run)
        for kind in ("plan", "apply"):
            s.add(
                RunPhase(
                    id=ids.new_id(kind),
                    run_id=run.id,
                    kind=kind,
                    status=m.PHASE_PENDING,
                    status_timestamps={},
                )
            )
        s.flush()
        self._scheduler.admit(s, run, now)
        return run

    def queue_from_vcs(
        self,
        s: Session,
        org: Organization,
        ws: Workspace,
        cv: ConfigurationVersionRow,
        *,
        speculative: bool,
        message: str,
        actor: str,
    ) -> Run | None:
        """A run of a configuration version made from a commit by a VCS event
        (``webhooks.ingest``), in the caller's transaction: speculative (a change request's
        plan) or a normal run, auto-applied as the workspace says. Nobody asked for it, so
        nobody's rights are checked and it has no creator (``actor`` names the connection in
        the audit event). A workspace with local execution, or agent execution without a pool,
        runs nothing (None)."""
        if ws.execution_mode == "local":
            return None
        pool_id = ws.agent_pool_id if ws.execution_mode == "agent" else None
        if ws.execution_mode == "agent" and pool_id is None:
            return None
        now = self._clock.now()
        run = self._insert(
            s,
            org,
            ws,
            cv,
            NewRun(workspace_id=ws.id, message=message[:2000], source="tfe-configuration-version"),
            speculative=speculative,
            auto_apply=ws.auto_apply,
            pool_id=pool_id,
            created_by_id=None,
            now=now,
        )
        record(
            s,
            at=now,
            actor=Actor(None, actor),
            action="run.create",
            subject=f"{org.name}/{ws.name}/{run.id}",
            workspace_id=ws.id,
            run_id=run.id,
            speculative=speculative or None,
            vcs=True,
        )
        return run

    def after_upload(self, s: Session, cv: ConfigurationVersionRow) -> None:
        """``ConfigVersions.after_upload`` (an ``auto-queue-runs`` version was uploaded): queue
        a run of it, as its creator, whose rights are read again now (revoked or disabled
        since the version was created: refused, and the upload with it). A workspace with local
        execution, or agent execution without a pool, runs nothing."""
        now = self._clock.now()
        ws = s.get(Workspace, cv.workspace_id)
        if ws is None or ws.execution_mode == "local":
            return
        pool_id = ws.agent_pool_id if ws.execution_mode == "agent" else None
        if ws.execution_mode == "agent" and pool_id is None:
            return
        org = s.get(Organization, ws.organization_id)
        assert org is not None
        created_by = cv.created_by_id
        creator = subject_now(s, created_by) if created_by else None
        target = workspaces.target(org, ws)
        doing = "queue runs on"
        if creator is None:
            raise Forbidden(
                f"the creator of configuration version {cv.id} can no longer queue runs on "
                f"workspace {org.name}/{ws.name}; create a new version with auto-queue-runs"
            )
        authz.require(creator, RUN_PLAN, target, doing=doing)
        if ws.auto_apply and not cv.speculative:
            authz.require(creator, RUN_APPLY, target, doing="queue auto-applied runs on")
        run = self._insert(
            s,
            org,
            ws,
            cv,
            NewRun(workspace_id=ws.id, source="tfe-configuration-version"),
            speculative=bool(cv.speculative),
            auto_apply=ws.auto_apply,
            pool_id=pool_id,
            created_by_id=created_by,
            now=now,
        )
        record(
            s,
            at=now,
            actor=Actor(created_by, "cairn (auto-queue-runs)"),
            action="run.create",
            subject=f"{org.name}/{ws.name}/{run.id}",
            workspace_id=ws.id,
            run_id=run.id,
            auto_queued=True,
        )

    def _configuration(
        self, s: Session, ws: Workspace, where: str, cv_id: str | None
    ) -> ConfigurationVersionRow:
        pointer = "/data/relationships/configuration-version"
        if cv_id is None:
            latest = self._cvs.latest_uploaded(s, ws.id)
            if latest is None:
                raise Invalid(
                    f"{where} has no uploaded configuration version; create one "
                    f"(POST /api/v2/workspaces/{ws.id}/configuration-versions), upload the "
                    "configuration, then queue the run",
                    pointer=pointer,
                )
            return latest
        cv = self._cvs.get(s, cv_id)
        if cv is None or cv.workspace_id != ws.id:
            raise Invalid(
                f"configuration version {cv_id!r} does not exist in {where}", pointer=pointer
            )
        if cv.status != "uploaded":
            raise Invalid(
                f"configuration version {cv_id} is {cv.status}, not uploaded; upload the "
                "configuration to its upload-url first",
                pointer=pointer,
            )
        return cv

    # ---- reading -------------------------------------------------------------------------------

    def _view(self, s: Session, caller: Subject, run_id: str) -> RunView:
        org, ws, run = store.find(s, caller, run_id)
        view = store.views(s, caller, [(org, ws, run)])[0]
        view.position_in_queue = store.pending_position(s, run)
        return view

    def get(self, caller: Subject, run_id: str) -> RunView:
        with self._db.unit_of_work() as s:
            return self._view(s, caller, run_id)

    def list_for_workspace(
        self, caller: Subject, ws_id: str, flt: RunFilter, page: Page
    ) -> tuple[list[RunView], int]:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            return store.search(s, caller, org, flt, page, ws_id=ws.id)

    def list_for_organization(
        self, caller: Subject, org_name: str, flt: RunFilter, page: Page
    ) -> tuple[list[RunView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            return store.search(s, caller, org, flt, page)

    def phase(self, caller: Subject, phase_id: str, kind: m.PhaseKind) -> PhaseView:
        with self._db.unit_of_work() as s:
            org, ws, run, ph = store.find_phase(s, caller, phase_id, kind)
            return PhaseView(store.views(s, caller, [(org, ws, run)])[0], ph)

    def run_phase(self, caller: Subject, run_id: str, kind: m.PhaseKind) -> PhaseView:
        with self._db.unit_of_work() as s:
            view = self._view(s, caller, run_id)
            return PhaseView(view, view.plan if kind == "plan" else view.apply)

    def json_plan(self, caller: Subject, plan_id: str) -> str | None:
        """The sha256 of a plan's JSON output (``terraform show -json``), or None when it has
        none yet. It may hold sensitive values, as the state does: it needs ``state:read``."""
        with self._db.unit_of_work() as s:
            org, ws, _run, ph = store.find_phase(s, caller, plan_id, "plan")
            authz.require(
                caller, STATE_READ, workspaces.target(org, ws), doing="read the JSON plans of"
            )
            return ph.json_plan_sha256

    def plan_id_of(self, caller: Subject, run_id: str) -> str:
        with self._db.unit_of_work() as s:
            return self._view(s, caller, run_id).plan.id

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._blobs.iter_chunks(sha256)

    def events(self, caller: Subject, run_id: str, page: Page) -> tuple[list[RunEvent], int]:
        with self._db.unit_of_work() as s:
            store.find(s, caller, run_id)
            return store.events(s, run_id, page)

    def event(self, caller: Subject, event_id: str) -> RunEvent:
        with self._db.unit_of_work() as s:
            return store.find_event(s, caller, event_id)[1]

    def queue(self, caller: Subject, org_name: str, page: Page) -> tuple[list[RunView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            return store.queue(s, caller, org, page)

    def capacity(self, caller: Subject, org_name: str) -> tuple[str, int, int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            pending, running = store.capacity(s, org.id)
            return org.name, pending, running

    # ---- actions -------------------------------------------------------------------------------

    def _acting(
        self, s: Session, caller: Subject, run_id: str, permission: str, doing: str
    ) -> tuple[Organization, Workspace, Run]:
        org, ws, run = store.find(s, caller, run_id)
        authz.require(caller, permission, workspaces.target(org, ws), doing=doing)
        # Serialised with the job side's finishes and other actions on this workspace.
        lock_workspace_row(s, ws.id)
        s.refresh(run)
        return org, ws, run

    def apply(self, caller: Subject, run_id: str, comment: str, source: str) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws, run = self._acting(s, caller, run_id, RUN_APPLY, "apply runs of")
            if run.status != m.PLANNED:
                raise Conflict(f"Run is not paused for confirmation: run {run.id} is {run.status}")
            self._scheduler.confirm(s, run, now, caller.id)
            self._audit(s, caller, source, now, "run.apply", org, ws, run, comment=comment)
            s.commit()

    def discard(self, caller: Subject, run_id: str, comment: str, source: str) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws, run = self._acting(s, caller, run_id, RUN_APPLY, "discard runs of")
            if run.status not in m.DISCARDABLE:
                raise Conflict(
                    f"Run is not paused for confirmation or priority: run {run.id} is {run.status}"
                )
            self._scheduler.finish(
                s, run, m.DISCARDED, now, actor_id=caller.id, description=comment
            )
            self._audit(s, caller, source, now, "run.discard", org, ws, run, comment=comment)
            s.commit()

    def cancel(self, caller: Subject, run_id: str, comment: str, source: str) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws, run = self._acting(s, caller, run_id, RUN_PLAN, "cancel runs of")
            if run.status not in m.CANCELABLE:
                raise Conflict(
                    f"Run is not cancelable: run {run.id} is {run.status} (only pending, "
                    "queued, planning and applying runs are)"
                )
            if m.cancel_requested(run):
                raise Conflict(
                    f"run {run.id} is already being canceled; force-cancel it after "
                    f"{m.FORCE_CANCEL_COOL_OFF.seconds} seconds if it does not stop"
                )
            outcome = "none"
            if run.status != m.PENDING:
                outcome = self._scheduler.jobs.cancel(s, run.id, force=False, now=now)
            run.canceled_at = now
            if outcome == "signalled":
                # The job stops at its next heartbeat; the run is canceled when it finishes.
                run.force_cancel_available_at = now + m.FORCE_CANCEL_COOL_OFF
                run.updated_at = now
                event(s, run, "cancel_requested", now, caller.id, comment)
            else:
                self._scheduler.finish(
                    s, run, m.CANCELED, now, actor_id=caller.id, description=comment
                )
            self._audit(s, caller, source, now, "run.cancel", org, ws, run, comment=comment)
            s.commit()

    def force_cancel(self, caller: Subject, run_id: str, comment: str, source: str) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws, run = self._acting(s, caller, run_id, WORKSPACE_MANAGE, "force-cancel runs of")
            if not m.force_cancelable(run, now):
                if run.final or not m.cancel_requested(run):
                    raise Conflict(
                        f"run {run.id} is {run.status}: force-cancel is only for a run that "
                        "was canceled and has not stopped; cancel it first"
                    )
                assert run.force_cancel_available_at is not None
                wait = int((run.force_cancel_available_at - now).total_seconds()) + 1
                raise Conflict(
                    f"run {run.id} was canceled moments ago; force-cancel is available at "
                    f"{run.force_cancel_available_at:%Y-%m-%dT%H:%M:%SZ} (in {wait} s)"
                )
            self._scheduler.jobs.cancel(s, run.id, force=True, now=now)
            self._scheduler.finish(s, run, m.CANCELED, now, actor_id=caller.id, description=comment)
            run.status_timestamps = {
                **run.status_timestamps,
                "force-canceled-at": run.status_timestamps.get("canceled-at", ""),
            }
            self._audit(s, caller, source, now, "run.force_cancel", org, ws, run, comment=comment)
            s.commit()

    def force_execute(self, caller: Subject, run_id: str, source: str) -> None:
        """A pending run goes first: every earlier unfinished run of its workspace is canceled
        (a running job killed), then it starts. A lock held by a user is not broken."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws, run = self._acting(
                s, caller, run_id, WORKSPACE_MANAGE, "force-execute runs of"
            )
            if run.status != m.PENDING:
                raise Conflict(
                    f"run {run.id} is {run.status}: only a pending run can be force-executed"
                )
            holder = ws.holder
            if holder is not None and holder.is_user:
                raise Conflict(
                    held_message(s, org, ws.id, "is locked")
                    + "; unlock it first (force-execute cancels runs, not user locks)"
                )
            earlier = s.scalars(
                select(Run)
                .where(
                    Run.workspace_id == ws.id,
                    Run.speculative.is_(False),
                    Run.position < run.position,
                    Run.status.in_(sorted(frozenset(m.STATUSES) - m.FINAL)),
                )
                .order_by(Run.position)
            ).all()
            for other in earlier:
                if other.status != m.PENDING:
                    self._scheduler.jobs.cancel(s, other.id, force=True, now=now)
                other.canceled_at = now
                self._scheduler.finish(
                    s,
                    other,
                    m.CANCELED,
                    now,
                    actor_id=caller.id,
                    description=f"canceled to force-execute {run.id}",
                )
            s.refresh(run)
            if run.status == m.PENDING:
                self._scheduler.advance(s, ws.id, now)
            self._audit(s, caller, source, now, "run.force_execute", org, ws, run)
            s.commit()

    # ---- hooks ---------------------------------------------------------------------------------

    def after_unlock(self, s: Session, org: Organization, ws: Workspace) -> None:
        """``WorkspaceHooks.after_unlock``: a released lock lets the next pending run start."""
        self._scheduler.advance(s, ws.id, self._clock.now())

    def _audit(
        self,
        s: Session,
        caller: Subject,
        source: str,
        now: datetime,
        action: str,
        org: Organization,
        ws: Workspace,
        run: Run,
        **details: Any,
    ) -> None:
        record(
            s,
            at=now,
            actor=Actor(caller.id, caller.name, source),
            action=action,
            subject=f"{org.name}/{ws.name}/{run.id}",
            workspace_id=ws.id,
            run_id=run.id,
            **{k: v for k, v in details.items() if v not in ("", None)},
        )
