"""A webhook delivery is handled once: two processes run the delivery worker over one queue of
100 deliveries, on SQLite (one database file, BEGIN IMMEDIATE between the processes) and on
PostgreSQL (``FOR UPDATE SKIP LOCKED``); each delivery reaches exactly one ingest, once."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from cairn.webhooks.model import VcsDelivery
from tests.api.webhooks.conftest import gitlab_push, make_connection, send
from tests.support.app import build, create_organization, document

DELIVERIES = 100


def _worker(database_url: str, name: str, ready: Any, start: Any, out: Any) -> None:
    """One process: run the worker until nothing is left; send back what its ingest saw."""
    import time

    from cairn.clock import SystemClock
    from cairn.db.engine import Database, make_engine
    from cairn.webhooks.model import Delivery
    from cairn.webhooks.worker import DeliveryWorker

    db = Database(make_engine(database_url, pool_size=2))
    seen: list[str] = []

    def ingest(delivery: Delivery) -> str:
        seen.append(delivery.id)
        time.sleep(0.002)  # some work, so the two workers interleave
        return f"handled by {name}"

    worker = DeliveryWorker(db, SystemClock(), ingest)
    with db.unit_of_work() as s:  # connected before the start
        s.execute(text("SELECT 1"))
    ready.put(name)
    start.wait()
    while worker.step():
        pass
    db.dispose()
    out.put((name, seen))


@pytest.mark.anyio
async def test_two_processes_handle_each_of_100_deliveries_once(database: dict[str, Any]) -> None:
    app = build(Path(database["dir"]), database["admin"], **database["settings"])
    try:
        async with app.client(app.admin_token) as admin:
            org = await create_organization(admin)
        conns = [make_connection(app, org, "gitlab_token") for _ in range(4)]
        async with app.client() as forge:
            for i in range(DELIVERIES):
                document(await send(forge, conns[i % 4], gitlab_push()), 202)
        url = app.settings.database_url
        app.ctx.db.dispose()

        spawn = multiprocessing.get_context("spawn")
        ready, start, out = spawn.Queue(), spawn.Event(), spawn.Queue()
        procs = [
            spawn.Process(target=_worker, args=(url, name, ready, start, out))
            for name in ("a", "b")
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        start.set()
        results = dict(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0

        every = results["a"] + results["b"]
        assert len(every) == DELIVERIES, {k: len(v) for k, v in results.items()}
        assert not [d for d, n in Counter(every).items() if n > 1]
        if "postgresql" in url:
            # SKIP LOCKED lets both work side by side (on SQLite one may take them all).
            assert results["a"] and results["b"], {k: len(v) for k, v in results.items()}
        with app.ctx.db.unit_of_work() as s:
            rows = s.execute(
                select(VcsDelivery.id, VcsDelivery.state, VcsDelivery.attempts, VcsDelivery.outcome)
            ).all()
        assert {r.id for r in rows} == set(every)
        assert all(r.state == "done" and r.attempts == 1 for r in rows)
        for name, handled in results.items():
            assert all(r.outcome == f"handled by {name}" for r in rows if r.id in set(handled))
    finally:
        app.close()
