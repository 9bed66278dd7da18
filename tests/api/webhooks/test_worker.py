"""The delivery worker: each delivery handled once, failures retried with backoff then failed
with a clear outcome, a lapsed lease claimed again (and the lapsed worker fenced off), old
deliveries pruned. The ingest is injected (``handle``), as ``app.py`` injects the real one."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from cairn.errors import Conflict, Unavailable
from cairn.webhooks import store
from cairn.webhooks.model import Delivery, DeliveryFailed, VcsDelivery
from cairn.webhooks.worker import DeliveryWorker, Policy, prune_deliveries
from tests.api.webhooks.conftest import Connection, gitlab_push, make_connection, send
from tests.support.app import InProcessCairn, create_organization, document

pytestmark = pytest.mark.anyio


class Recorder:
    """An ingest that records what it was given and answers as told."""

    def __init__(self, *answers: str | Exception) -> None:
        self.seen: list[Delivery] = []
        self.answers = list(answers)

    def __call__(self, delivery: Delivery) -> str:
        self.seen.append(delivery)
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, Exception):
            raise answer
        return answer


def worker(app: InProcessCairn, handle: Recorder) -> DeliveryWorker:
    # A round budget no test reaches: rounds end when nothing is left.
    return DeliveryWorker(app.ctx.db, app.clock, handle, policy=Policy(round_budget=60.0))


async def deliver(app: InProcessCairn, admin: httpx.AsyncClient, n: int = 1) -> Connection:
    conn = make_connection(app, await create_organization(admin), "gitlab_token")
    async with app.client() as forge:
        for _ in range(n):
            document(await send(forge, conn, gitlab_push()), 202)
    return conn


def row(app: InProcessCairn) -> VcsDelivery:
    with app.ctx.db.unit_of_work() as s:
        found = s.scalars(select(VcsDelivery)).one()
        return found


async def test_each_delivery_is_handled_once_in_order(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await deliver(app, admin, 3)
    ingest = Recorder("run run-1 queued", "skipped: no workspace on this branch", "ok")
    step_calls: list[str] = []
    w = worker(app, ingest)
    w.add_step("statuses", lambda: step_calls.append("statuses"))
    assert w.run() == 3
    assert w.run() == 0
    assert step_calls == ["statuses", "statuses"]
    assert [d.attempt for d in ingest.seen] == [1, 1, 1]
    first = ingest.seen[0]
    assert (first.provider, first.event, first.oauth_client_id) == ("gitlab", "Push Hook", conn.id)
    assert first.body.startswith(b"{") and "body" not in repr(first)
    with app.ctx.db.unit_of_work() as s:
        done = s.execute(
            select(VcsDelivery.state, VcsDelivery.outcome, VcsDelivery.processed_at).order_by(
                VcsDelivery.received_at, VcsDelivery.id
            )
        ).all()
    assert {d.state for d in done} == {"done"}
    assert {d.outcome for d in done} == {
        "run run-1 queued",
        "skipped: no workspace on this branch",
        "ok",
    }
    assert all(d.processed_at == app.clock.now() for d in done)


async def test_a_failing_ingest_is_retried_with_backoff_then_failed(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    await deliver(app, admin)
    ingest = Recorder(
        RuntimeError("boom with a token glpat-secret"),
        Unavailable("the forge answered 502"),
        RuntimeError("again"),
    )
    w = worker(app, ingest)
    assert w.run() == 1
    first = row(app)
    assert (first.state, first.attempts) == ("queued", 1)
    assert first.not_before == app.clock.now() + timedelta(seconds=30)
    assert "attempt 1 of 3 failed (RuntimeError" in (first.outcome or "")
    assert "glpat-secret" not in (first.outcome or "")  # exception texts stay in the server log
    assert w.run() == 0  # backoff: not before 30 s
    app.advance(timedelta(seconds=30))
    assert w.run() == 1
    second = row(app)
    assert (second.state, second.attempts) == ("queued", 2)
    assert second.not_before == app.clock.now() + timedelta(minutes=2)
    assert "the forge answered 502" in (second.outcome or "")
    app.advance(timedelta(minutes=1))
    assert w.run() == 0
    app.advance(timedelta(minutes=1))
    assert w.run() == 1
    last = row(app)
    assert (last.state, last.attempts) == ("failed", 3)
    assert last.outcome is not None and last.outcome.startswith("failed 3 times; the last error: ")
    app.advance(timedelta(hours=1))
    assert w.run() == 0 and len(ingest.seen) == 3


@pytest.mark.parametrize(
    "error",
    [
        DeliveryFailed("connection oc-x needs re-authorisation: connect it again"),
        Conflict("connection oc-x needs re-authorisation: connect it again"),
    ],
    ids=["delivery-failed", "api-error-4xx"],
)
async def test_a_permanent_failure_is_not_retried(
    app: InProcessCairn, admin: httpx.AsyncClient, error: Exception
) -> None:
    await deliver(app, admin)
    ingest = Recorder(error)
    assert worker(app, ingest).run() == 1
    failed = row(app)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert failed.outcome == "connection oc-x needs re-authorisation: connect it again"
    app.advance(timedelta(hours=1))
    assert worker(app, ingest).run() == 0


async def test_a_lapsed_lease_is_claimed_again_and_the_old_claim_fenced(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """A worker that claimed a delivery and died: after the lease, another claims it (attempt
    2); if the first comes back, its result is not written."""
    await deliver(app, admin)
    policy = Policy()
    with app.ctx.db.unit_of_work(write=True) as s:
        stale = store.claim(s, app.clock.now(), lease=policy.lease, max_attempts=3)
        s.commit()
    assert stale is not None and stale.attempt == 1
    ingest = Recorder("handled by the second worker")
    w = worker(app, ingest)
    assert w.run() == 0  # held under its lease
    app.advance(policy.lease + timedelta(seconds=1))
    assert w.run() == 1
    assert [d.attempt for d in ingest.seen] == [2]
    with app.ctx.db.unit_of_work(write=True) as s:
        assert not store.finish(s, stale, state="done", outcome="late", now=app.clock.now())
        s.commit()
    done = row(app)
    assert (done.state, done.outcome, done.attempts) == ("done", "handled by the second worker", 2)


async def test_a_delivery_whose_worker_died_three_times_is_failed(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    await deliver(app, admin)
    policy = Policy()
    for _ in range(3):
        with app.ctx.db.unit_of_work(write=True) as s:
            assert store.claim(s, app.clock.now(), lease=policy.lease, max_attempts=3)
            s.commit()
        app.advance(policy.lease + timedelta(seconds=1))
    ingest = Recorder()
    assert worker(app, ingest).run() == 0
    failed = row(app)
    assert (failed.state, failed.attempts) == ("failed", 3)
    assert "lease expired" in (failed.outcome or "") and ingest.seen == []


async def test_a_failing_step_does_not_stop_the_round(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    await deliver(app, admin)
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("the forge is down")

    w = worker(app, Recorder())
    w.add_step("broken", broken)
    w.add_step("registration", lambda: calls.append("registration"))
    assert w.run() == 1
    assert calls == ["broken", "registration"]


async def test_the_worker_is_due_when_woken_or_after_its_poll(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    w = DeliveryWorker(app.ctx.db, app.clock, Recorder(), policy=Policy(poll=3600.0))
    assert w.due()  # never ran
    w.run()
    assert not w.due()
    w.signal.wake()
    assert w.due() and not w.due()
    # The receiver of this process wakes its worker once the delivery has committed.
    app.ctx.deliveries.take()
    await deliver(app, admin)
    assert app.ctx.deliveries.take()


async def test_a_round_yields_after_its_budget(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    await deliver(app, admin, 3)
    w = DeliveryWorker(app.ctx.db, app.clock, Recorder(), policy=Policy(round_budget=0.0))
    assert w.run() == 1
    assert w.due()  # the next round at once
    assert w.run() == 1 and w.run() == 1 and w.run() == 0


async def test_deliveries_are_kept_30_days(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    await deliver(app, admin)
    app.advance(timedelta(days=30))
    assert prune_deliveries(app.ctx.db, app.clock) == 0
    await deliver(app, admin)
    app.advance(timedelta(seconds=1))
    assert prune_deliveries(app.ctx.db, app.clock) == 1
    with app.ctx.db.unit_of_work() as s:
        assert len(s.scalars(select(VcsDelivery)).all()) == 1
