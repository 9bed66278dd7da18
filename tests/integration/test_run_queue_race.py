"""Runs created at the same instant on one workspace by two processes (PostgreSQL: two
replicas; SQLite: two processes on one database file) queue up: exactly one is active and
holds the workspace lock, the others wait ``pending`` in distinct positions, and the lock,
the current run and the one queued plan job agree."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cairn import ids
from cairn.configversions.model import ConfigurationVersion
from cairn.runs.jobs_model import Job
from cairn.runs.model import Run
from cairn.workspaces.model import Workspace
from tests.support.app import SECRET_KEY, build, create_organization, create_workspace

PER_PROCESS = 4


def _creator(database_url: str, ws_id: str, start: Any, out: Any) -> None:
    """One process: create PER_PROCESS runs from as many threads at once; report their IDs."""
    from concurrent.futures import ThreadPoolExecutor

    from cairn.authz.subject import System
    from cairn.blobs.database import DatabaseBlobStore
    from cairn.clock import SystemClock
    from cairn.config import Settings
    from cairn.crypto import Keyring
    from cairn.db.engine import Database, make_engine
    from cairn.runs.job_tokens import JobTokens
    from cairn.runs.jobs import JobQueue
    from cairn.runs.scheduler import Scheduler
    from cairn.runs.service import NewRun, RunService
    from cairn.runs.store import ConfigurationVersionRows

    db = Database(make_engine(database_url, pool_size=PER_PROCESS))
    clock = SystemClock()
    defaults = Settings(data_dir=Path("."))
    queue = JobQueue(
        db,
        clock,
        JobTokens(db, Keyring(SECRET_KEY), clock),
        plan_timeout=defaults.plan_timeout,
        apply_timeout=defaults.apply_timeout,
    )
    runs = RunService(
        db, clock, Scheduler(queue), ConfigurationVersionRows(), DatabaseBlobStore(db, clock)
    )
    start.wait()
    with ThreadPoolExecutor(PER_PROCESS) as pool:
        made = list(
            pool.map(
                lambda _i: runs.create(System(), NewRun(workspace_id=ws_id), "race").run.id,
                range(PER_PROCESS),
            )
        )
    db.dispose()
    out.put(made)


@pytest.mark.anyio
async def test_two_processes_queue_runs_on_one_workspace(database: dict[str, Any]) -> None:
    app = build(database["dir"], database["admin"], **database["settings"])
    try:
        async with app.client(app.admin_token) as admin:
            ws = await create_workspace(
                admin, await create_organization(admin), **{"execution-mode": "remote"}
            )
        with app.ctx.db.unit_of_work(write=True) as s:
            s.add(
                ConfigurationVersion(
                    id=ids.new_id("configuration_version"),
                    workspace_id=ws.id,
                    status="uploaded",
                    status_timestamps={},
                    created_at=app.clock.now() - timedelta(seconds=1),
                )
            )
            s.commit()
        url = app.settings.database_url
        app.ctx.db.dispose()

        spawn = multiprocessing.get_context("spawn")
        start = spawn.Event()
        out = spawn.Queue()
        procs = [spawn.Process(target=_creator, args=(url, ws.id, start, out)) for _ in range(2)]
        for p in procs:
            p.start()
        start.set()
        made = [run_id for _ in procs for run_id in out.get(timeout=120)]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert len(set(made)) == 2 * PER_PROCESS

        with app.ctx.db.unit_of_work() as s:
            runs = list(s.scalars(select(Run).where(Run.workspace_id == ws.id)))
            statuses = sorted(r.status for r in runs)
            assert statuses == ["pending"] * (2 * PER_PROCESS - 1) + ["plan_queued"], statuses
            assert len({r.position for r in runs}) == len(runs)
            active = next(r for r in runs if r.status == "plan_queued")
            # The first in the queue is the one that runs.
            assert active.position == min(r.position for r in runs)
            w = s.get(Workspace, ws.id)
            assert w is not None
            assert (w.locked_by_kind, w.locked_by_id) == ("runs", active.id)
            assert w.current_run_id == active.id
            jobs = list(s.scalars(select(Job)))
            assert [(j.run_id, j.kind, j.status) for j in jobs] == [(active.id, "plan", "queued")]
    finally:
        app.close()
