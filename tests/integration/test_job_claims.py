"""A job is claimed once: two processes claim from one queue of 100 jobs as fast as they can,
on SQLite (one database file, BEGIN IMMEDIATE between the processes) and on PostgreSQL
(``FOR UPDATE SKIP LOCKED``); every job is claimed by exactly one of them, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from cairn.db.notify import Listener
from cairn.runs.jobs import JobQueue, JobSignal
from cairn.runs.jobs_model import Job, JobToken
from cairn.runs.scheduler import Scheduler
from tests.api.jobs.conftest import install
from tests.support.app import SECRET_KEY, build, create_organization, create_workspace

JOBS = 100


@dataclass(frozen=True)
class _Agent:
    agent_id: str
    pool_id: str | None = None


def _claimer(database_url: str, name: str, ready: Any, start: Any, out: Any) -> None:
    """One process: claim until the queue is empty; send back what it claimed."""
    from cairn.clock import SystemClock
    from cairn.config import Settings
    from cairn.crypto import Keyring
    from cairn.db.engine import Database, make_engine
    from cairn.runs.job_tokens import JobTokens
    from cairn.runs.jobs import JobQueue

    db = Database(make_engine(database_url, pool_size=2))
    clock = SystemClock()
    defaults = Settings(data_dir=Path("."))
    queue = JobQueue(
        db,
        clock,
        JobTokens(db, Keyring(SECRET_KEY), clock),
        plan_timeout=defaults.plan_timeout,
        apply_timeout=defaults.apply_timeout,
    )
    claimed: list[str] = []
    with db.unit_of_work() as s:  # connected before the start
        s.execute(text("SELECT 1"))
    ready.put(name)
    start.wait()
    while True:
        got = queue.claim(_Agent(f"agent-{name}"), ["plan", "apply"], clock.now())
        if got is None:
            break
        claimed.append(got.job_id)
    db.dispose()
    out.put((name, claimed))


@pytest.mark.anyio
async def test_two_processes_claim_each_of_100_jobs_once(database: dict[str, Any]) -> None:
    app = build(database["dir"], database["admin"], **database["settings"])
    try:
        side = install(app)
        async with app.client(app.admin_token) as admin:
            ws = await create_workspace(admin, await create_organization(admin))
        for _ in range(JOBS):
            side.make_run(ws.id, speculative=True)  # speculative: all queued at once
        url = app.settings.database_url
        app.ctx.db.dispose()

        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Queue()
        start = spawn.Event()
        out = spawn.Queue()
        procs = [
            spawn.Process(target=_claimer, args=(url, name, ready, start, out))
            for name in ("a", "b")
        ]
        for p in procs:
            p.start()
        for _ in procs:  # both imported and connected: they start together
            ready.get(timeout=60)
        start.set()
        results = dict(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0

        every = results["a"] + results["b"]
        assert len(every) == JOBS, {k: len(v) for k, v in results.items()}
        assert not [j for j, n in Counter(every).items() if n > 1]
        if "postgresql" in url:
            # SKIP LOCKED lets both claim side by side (on SQLite one writer may well take
            # them all while the other waits for the lock: that is allowed).
            assert results["a"] and results["b"], {k: len(v) for k, v in results.items()}
        with app.ctx.db.unit_of_work() as s:
            rows = s.execute(select(Job.id, Job.status, Job.attempt, Job.agent_id)).all()
            assert {r.id for r in rows} == set(every)
            assert all(r.status == "claimed" and r.attempt == 1 for r in rows)
            for name, ids in results.items():
                assert all(r.agent_id == f"agent-{name}" for r in rows if r.id in set(ids))
            tokens = Counter(s.scalars(select(JobToken.job_id)))
            assert set(tokens.values()) == {1} and len(tokens) == JOBS
    finally:
        app.close()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_waiting_claimer_wakes_on_another_replicas_enqueue(
    pg: Any, tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica 1 waits on its job signal; replica 2 (its own queue and signal) enqueues: the
    NOTIFY sent in replica 2's transaction reaches replica 1 through its listener."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    url = pg.create_database()
    app = build(tmp_path / "data", admin_token, database_url=url, secret_key=SECRET_KEY)
    listener = Listener(url, poll=0.2)
    try:
        side = install(app)
        side.queue.signal.follow(listener)
        listener.start()
        assert await asyncio.to_thread(listener.connected.wait, 10)
        other_queue = JobQueue(
            app.ctx.db,
            app.ctx.clock,
            side.tokens,
            plan_timeout=side.queue.plan_timeout,
            apply_timeout=side.queue.apply_timeout,
            signal=JobSignal(),
        )
        replica2 = dataclasses.replace(side, queue=other_queue, scheduler=Scheduler(other_queue))
        async with app.client(app.admin_token) as admin:
            ws = await create_workspace(admin, await create_organization(admin))
        with side.queue.signal.waiter() as waiter:
            assert not await waiter.wait(0.3)  # nothing enqueued: no wake-up
            await asyncio.to_thread(replica2.make_run, ws.id)
            assert await waiter.wait(5)
    finally:
        listener.stop()
        app.close()
