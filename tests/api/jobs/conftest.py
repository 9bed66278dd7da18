"""The job side wired onto an in-process cairn as ``app.py`` wires it (``install``), and helpers
that make runs whose jobs wait in the queue."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from cairn import ids
from cairn.agents.sessions import Agents
from cairn.runs.agent_api import AgentJobs
from cairn.runs.job_tokens import JobTokens
from cairn.runs.jobs import JobQueue
from cairn.runs.lifecycle import RunLifecycle
from cairn.runs.logs import LogStore
from cairn.runs.model import Run, RunPhase
from cairn.runs.scheduler import Scheduler
from cairn.runs.sweep import JobSweep
from cairn.workspaces.model import Workspace
from tests.api.conftest import admin, any_app, anyio_backend, app
from tests.support.app import InProcessCairn

__all__ = ["JobSide", "admin", "any_app", "anyio_backend", "app", "install"]


@dataclass
class JobSide:
    app: InProcessCairn
    tokens: JobTokens
    queue: JobQueue
    logs: LogStore
    scheduler: Scheduler
    lifecycle: RunLifecycle
    jobs: AgentJobs
    sweep: JobSweep

    @property
    def agents(self) -> Agents:
        return self.app.ctx.agents

    def register(self, name: str = "worker") -> str:
        """A built-in worker's session token."""
        with self.app.ctx.db.unit_of_work(write=True) as s:
            reg = self.agents.register(
                s, self.agents.builtin_secret, name=name, version="test", ip_address="127.0.0.1"
            )
            s.commit()
        return reg.session_token

    def make_run(
        self,
        ws_id: str,
        *,
        speculative: bool = False,
        auto_apply: bool = False,
        pool_id: str | None = None,
    ) -> str:
        """A run admitted by the scheduler (plan queued when nothing is ahead of it)."""
        ctx = self.app.ctx
        now = ctx.clock.now()
        with ctx.db.unit_of_work(write=True) as s:
            ws = s.get(Workspace, ws_id)
            assert ws is not None
            position = len(list(s.scalars(select(Run.id).where(Run.workspace_id == ws_id))))
            run = Run(
                id=ids.new_id("run"),
                workspace_id=ws_id,
                organization_id=ws.organization_id,
                configuration_version_id="cv-" + "x" * 16,
                status="pending",
                speculative=speculative,
                auto_apply=auto_apply,
                pool_id=pool_id,
                execution_mode="agent" if pool_id else "remote",
                created_at=now,
                updated_at=now,
                position=position + 1,
                terraform_version="1.0.3",
                target_addrs=[],
                replace_addrs=[],
                status_timestamps={},
            )
            s.add(run)
            for kind in ("plan", "apply"):
                s.add(RunPhase(id=ids.new_id(kind), run_id=run.id, kind=kind, status="pending"))
            s.flush()
            self.scheduler.admit(s, run, now)
            s.commit()
            return run.id

    def run_status(self, run_id: str) -> tuple[str, dict[str, str]]:
        """The run's status and its phases' statuses by kind."""
        with self.app.ctx.db.unit_of_work() as s:
            run = s.get(Run, run_id, populate_existing=True)
            assert run is not None
            phases = {
                p.kind: p.status
                for p in s.scalars(select(RunPhase).where(RunPhase.run_id == run_id))
            }
            return run.status, phases


def install(app: InProcessCairn) -> JobSide:
    """The job side as ``app.py`` wires it (its services, from the app)."""
    ctx = app.ctx
    return JobSide(
        app,
        ctx.job_tokens,
        ctx.jobs,
        ctx.logs,
        ctx.scheduler,
        ctx.lifecycle,
        ctx.agent_jobs,
        ctx.job_sweep,
    )
