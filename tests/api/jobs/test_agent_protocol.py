"""The agent job protocol end to end in-process (SQLite, then PostgreSQL): claim, start,
heartbeat, logs, plan files, variables, finish; fencing; job tokens on the TFE API; the sweep;
the log the CLI reads."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cairn.agents.model import Agent
from cairn.runs.jobs_model import Job
from cairn.runs.logs import plan_blob_references
from cairn.runs.model import Run
from tests.api.jobs.conftest import JobSide, install
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
)
from tests.support.statefile import new_lineage, state_file, version_body

pytestmark = pytest.mark.anyio

AGENT = "/api/agent/v1"


@pytest.fixture
def side(any_app: InProcessCairn) -> JobSide:
    return install(any_app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def workspace(app: InProcessCairn, org: str | None = None) -> tuple[str, str]:
    async with app.client(app.admin_token) as admin:
        org = org or await create_organization(admin)
        ws = await create_workspace(admin, org)
    return org, ws.id


async def claim(client: httpx.AsyncClient, session: str, wait: int = 0) -> dict[str, Any]:
    r = await client.post(f"{AGENT}/jobs/claim?wait={wait}", headers=bearer(session))
    return document(r, 200)


async def start(client: httpx.AsyncClient, job: dict[str, Any]) -> None:
    r = await client.post(
        job["urls"]["start"], json={"attempt": job["attempt"]}, headers=bearer(job["job_token"])
    )
    document(r, 200)


async def finish(client: httpx.AsyncClient, job: dict[str, Any], **outcome: Any) -> httpx.Response:
    body = {"attempt": job["attempt"], "status": "finished", **outcome}
    return await client.post(job["urls"]["finish"], json=body, headers=bearer(job["job_token"]))


async def put_log(
    client: httpx.AsyncClient, job: dict[str, Any], offset: int, data: bytes
) -> httpx.Response:
    return await client.put(
        f"{job['urls']['logs']}?offset={offset}&attempt={job['attempt']}",
        content=data,
        headers=bearer(job["job_token"]),
    )


async def read_log(
    client: httpx.AsyncClient, url: str, offset: int = 0, limit: int = 65536
) -> bytes:
    r = await client.get(f"{url}?limit={limit}&offset={offset}")
    assert r.status_code == 200, r.text
    return r.content


async def test_a_plan_job_from_claim_to_finish(side: JobSide) -> None:
    app = side.app
    org, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    assert side.run_status(run_id)[0] == "plan_queued"
    async with app.client() as c:
        job = await claim(c, session)
        assert job["run_id"] == run_id and job["phase"] == "plan" and job["attempt"] == 1
        assert job["job_token"].startswith("cairn_job_") and len(job["job_token"]) == 53
        assert job["organization_name"] == org and job["workspace_id"] == ws_id
        assert job["hostname"] and job["urls"]["configuration"].startswith(app.url)
        # Nothing else is queued for this worker.
        assert (
            await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session))
        ).status_code == 204

        with app.ctx.db.unit_of_work() as s:
            phase_id = s.get(Job, job["job_id"]).phase_id  # type: ignore[union-attr]
        url = side.logs.read_url(phase_id)
        assert "?" not in url and url.startswith(app.url)
        assert await read_log(c, url) == b""  # before the phase starts

        await start(c, job)
        assert side.run_status(run_id) == ("planning", {"plan": "running", "apply": "pending"})
        assert await read_log(c, url) == b"\x02"

        assert (await put_log(c, job, 0, b"Terraform v1.0.3\n")).status_code == 204
        assert (await put_log(c, job, 0, b"Terraform v1.0.3\n")).status_code == 204  # retry
        gap = await put_log(c, job, 40, b"later\n")
        assert gap.status_code == 409
        assert gap.json() == {"error": "offset", "detail": gap.json()["detail"], "offset": 17}
        assert (await put_log(c, job, 17, b"Plan: 1 to add\n")).status_code == 204
        # A different chunk at an offset already taken is a conflict, not a silent overwrite.
        assert (await put_log(c, job, 0, b"Something else!!!")).status_code == 409

        beat = await c.post(
            job["urls"]["heartbeat"],
            json={"attempt": 1, "log_offset": 32},
            headers=bearer(job["job_token"]),
        )
        assert document(beat, 200)["cancel"] == "none"

        log = b"\x02Terraform v1.0.3\nPlan: 1 to add\n"
        assert await read_log(c, url) == log  # no ETX while the phase runs
        assert await read_log(c, url, offset=5, limit=4) == log[5:9]

        r = await finish(c, job, has_changes=True, resource_additions=1)
        document(r, 200)
        assert side.run_status(run_id) == ("planned", {"plan": "finished", "apply": "pending"})
        assert await read_log(c, url) == log + b"\x03"
        assert await read_log(c, url, offset=len(log)) == b"\x03"
        assert await read_log(c, url, offset=len(log) + 1) == b""

        # The token died with the job: 401 on the protocol and on the TFE API.
        again = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert again.status_code == 401 and again.json()["error"] == "unauthorized"
        tfe = await c.get(f"/api/v2/workspaces/{ws_id}", headers=bearer(job["job_token"]))
        assert tfe.status_code == 401


async def test_stale_attempt_and_another_runs_job(side: JobSide) -> None:
    app = side.app
    org, ws_a = await workspace(app)
    _, ws_b = await workspace(app, org)
    session = side.register()
    side.make_run(ws_a)
    side.make_run(ws_b)
    async with app.client() as c:
        a = await claim(c, session)
        b = await claim(c, session)
        assert {a["workspace_id"], b["workspace_id"]} == {ws_a, ws_b}
        stale = await c.post(
            a["urls"]["start"], json={"attempt": 2}, headers=bearer(a["job_token"])
        )
        assert stale.status_code == 409 and stale.json()["error"] == "stale_attempt"
        # a's token on b's job: not found, and on b's workspace (which shares nothing): 404.
        other = await c.post(
            b["urls"]["start"], json={"attempt": 1}, headers=bearer(a["job_token"])
        )
        assert other.status_code == 404 and other.json()["error"] == "not_found"
        tfe = await c.get(f"/api/v2/workspaces/{b['workspace_id']}", headers=bearer(a["job_token"]))
        assert tfe.status_code == 404
        own = await c.get(f"/api/v2/workspaces/{a['workspace_id']}", headers=bearer(a["job_token"]))
        document(own, 200)
        # Nothing in the organization beyond reading: no new workspace, no settings.
        body = {"data": {"type": "workspaces", "attributes": {"name": "by-a-job"}}}
        made = await c.post(
            f"/api/v2/organizations/{org}/workspaces",
            json=body,
            headers={**CT, **bearer(a["job_token"])},
        )
        assert made.status_code == 403
        changed = await c.patch(
            f"/api/v2/organizations/{org}",
            json={"data": {"type": "organizations", "attributes": {"email": "x@example.com"}}},
            headers={**CT, **bearer(a["job_token"])},
        )
        assert changed.status_code in (403, 404)
        # Nor another organization at all.
        async with app.client(app.admin_token) as admin:
            elsewhere = await create_organization(admin)
        seen = await c.get(f"/api/v2/organizations/{elsewhere}", headers=bearer(a["job_token"]))
        assert seen.status_code == 404


async def test_state_write_only_by_the_apply_job_of_the_run_holding_the_lock(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    raw = state_file(1, new_lineage())
    async with app.client() as c:
        plan = await claim(c, session)
        await start(c, plan)
        # The run holds the workspace lock; its plan job still may not write state.
        refused = await c.post(
            f"/api/v2/workspaces/{ws_id}/state-versions",
            json=version_body(raw),
            headers={**CT, **bearer(plan["job_token"])},
        )
        assert refused.status_code == 403, refused.text
        document(await finish(c, plan, has_changes=True, resource_additions=1), 200)
        with app.ctx.db.unit_of_work(write=True) as s:
            run = s.get(Run, run_id)
            assert run is not None
            side.scheduler.confirm(s, run, app.ctx.clock.now(), None)
            s.commit()
        apply = await claim(c, session)
        assert apply["phase"] == "apply" and apply["run_id"] == run_id
        await start(c, apply)
        # terraform apply -lock=false: no lock call, and the write passes the lock-holder rule
        # because the run holds the lock.
        written = await c.post(
            f"/api/v2/workspaces/{ws_id}/state-versions",
            json=version_body(raw),
            headers={**CT, **bearer(apply["job_token"])},
        )
        assert document(written, 201)["data"]["attributes"]["serial"] == 1
        document(await finish(c, apply, resource_additions=1), 200)
        assert side.run_status(run_id)[0] == "applied"
    async with app.client(app.admin_token) as admin:
        ws = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)
        assert ws["data"]["attributes"]["locked"] is False


async def test_plan_file_up_and_down_and_variables(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    async with app.client(app.admin_token) as admin:
        body = {
            "data": {
                "type": "vars",
                "attributes": {
                    "key": "secret",
                    "value": "hunter2",
                    "category": "terraform",
                    "sensitive": True,
                },
            }
        }
        document(await admin.post(f"/api/v2/workspaces/{ws_id}/vars", json=body, headers=CT), 201)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        plan = await claim(c, session)
        await start(c, plan)
        auth = bearer(plan["job_token"])
        got = document(await c.get(plan["urls"]["variables"], headers=auth), 200)
        assert got["terraform"] == [{"key": "secret", "value": "hunter2", "hcl": False}]
        assert got["sensitive"] == ["hunter2"]
        blob = b"PK\x03\x04 a plan file"
        up = await c.put(
            f"{plan['urls']['plan']}?attempt=1&format=binary", content=blob, headers=auth
        )
        assert up.status_code == 204, up.text
        bad = await c.put(
            f"{plan['urls']['plan']}?attempt=1&format=json", content=b"[1]", headers=auth
        )
        assert bad.status_code == 422
        up = await c.put(
            f"{plan['urls']['plan']}?attempt=1&format=json", content=b'{"a": 1}', headers=auth
        )
        assert up.status_code == 204
        # Both blobs are referenced (the collector keeps them), and nothing else is.
        digests = {hashlib.sha256(blob).hexdigest(), hashlib.sha256(b'{"a": 1}').hexdigest()}
        assert plan_blob_references(app.ctx.db)({*digests, "0" * 64}) == digests
        # Only an apply job downloads the plan.
        assert (await c.get(plan["urls"]["plan"], headers=auth)).status_code == 409
        document(await finish(c, plan, has_changes=True), 200)
        with app.ctx.db.unit_of_work(write=True) as s:
            run = s.get(Run, run_id)
            assert run is not None
            side.scheduler.confirm(s, run, app.ctx.clock.now(), None)
            s.commit()
        apply = await claim(c, session)
        down = await c.get(apply["urls"]["plan"], headers=bearer(apply["job_token"]))
        assert down.status_code == 200 and down.content == blob


async def test_lease_expiry_requeues_then_errors_an_unstarted_job(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        for attempt in (1, 2, 3):
            job = await claim(c, session)
            assert job["attempt"] == attempt
            app.advance(timedelta(seconds=61))
            assert side.sweep.run() == 1
            if attempt < 3:
                assert side.run_status(run_id)[0] == "plan_queued"
                # The old attempt's token is dead: the executor is told to drop the job.
                lost = await c.post(
                    job["urls"]["heartbeat"],
                    json={"attempt": attempt},
                    headers=bearer(job["job_token"]),
                )
                assert lost.status_code == 409 and lost.json()["error"] == "lease_lost"
        status, phases = side.run_status(run_id)
        assert status == "errored" and phases["plan"] == "errored"
        assert (
            await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session))
        ).status_code == 204


async def test_a_running_job_whose_agent_went_silent_errors_the_run(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        await start(c, job)
        assert (await put_log(c, job, 0, b"half a line")).status_code == 204
        app.advance(timedelta(seconds=30))
        beat = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        document(beat, 200)  # the lease moves on
        app.advance(timedelta(seconds=45))
        assert side.sweep.run() == 0  # 45 s after the heartbeat: the lease still holds
        app.advance(timedelta(seconds=20))
        assert side.sweep.run() == 1
        assert side.sweep.run() == 0  # handled once
        status, phases = side.run_status(run_id)
        assert status == "errored" and phases["plan"] == "errored"
        with app.ctx.db.unit_of_work() as s:
            phase_id = s.get(Job, job["job_id"]).phase_id  # type: ignore[union-attr]
        log = await read_log(c, side.logs.read_url(phase_id))
        assert log.startswith(b"\x02half a line\nagent lost") and log.endswith(b"\x03")
        lost = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert lost.status_code == 409 and lost.json()["error"] == "lease_lost"
    async with app.client(app.admin_token) as admin:
        ws = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)
        assert ws["data"]["attributes"]["locked"] is False


async def test_claims_match_pools_and_wake_on_enqueue(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    _, other_ws = await workspace(app)
    session = side.register()
    side.make_run(other_ws, pool_id="apool-" + "p" * 16)  # an agent pool's job
    async with app.client() as c:
        loop = asyncio.get_running_loop()
        began = loop.time()
        waiting = asyncio.create_task(
            c.post(f"{AGENT}/jobs/claim?wait=10", headers=bearer(session))
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the pool's job is not for a built-in worker
        run_id = await asyncio.to_thread(side.make_run, ws_id)
        r = await asyncio.wait_for(waiting, 5)
        assert document(r, 200)["run_id"] == run_id
        assert loop.time() - began < 5
        began = loop.time()
        r = await c.post(f"{AGENT}/jobs/claim?wait=1", headers=bearer(session))
        assert r.status_code == 204 and loop.time() - began >= 0.9
        bad = await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer("cairn_agent_nope"))
        assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"


async def test_cancel_dequeues_or_signals(side: JobSide) -> None:
    app = side.app
    _, ws_a = await workspace(app)
    _, ws_b = await workspace(app)
    session = side.register()
    running_run = side.make_run(ws_a)
    app.advance(timedelta(seconds=1))  # queue order: running_run's job first
    queued_run = side.make_run(ws_b)
    async with app.client() as c:
        job = await claim(c, session)
        assert job["run_id"] == running_run
        await start(c, job)
        now = app.ctx.clock.now()
        with app.ctx.db.unit_of_work(write=True) as s:
            assert side.queue.cancel(s, job["run_id"], force=False, now=now) == "signalled"
            assert side.queue.cancel(s, queued_run, force=False, now=now) == "dequeued"
            assert side.queue.cancel(s, queued_run, force=False, now=now) == "none"
            s.commit()
        beat = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert document(beat, 200)["cancel"] == "graceful"
        with app.ctx.db.unit_of_work(write=True) as s:
            assert side.queue.cancel(s, job["run_id"], force=True, now=now) == "signalled"
            s.commit()
        beat = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert document(beat, 200)["cancel"] == "force"
        assert (
            await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session))
        ).status_code == 204


async def test_bad_bodies_change_nothing(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        auth = bearer(job["job_token"])
        for body in (b"not json", b"[]", b'{"attempt": "1"}', b'{"attempt": 0}'):
            r = await c.post(job["urls"]["start"], content=body, headers=auth)
            assert r.status_code in (400, 422) and set(r.json()) == {"error", "detail"}
        r = await c.post(job["urls"]["finish"], json={"attempt": 1, "status": "done"}, headers=auth)
        assert r.status_code == 422
        r = await finish(c, job)  # never started: it cannot have finished
        assert r.status_code == 409
        big = await put_log(c, job, 0, b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413
        r = await c.put(f"{job['urls']['logs']}?offset=-1&attempt=1", content=b"x", headers=auth)
        assert r.status_code == 400
        await start(c, job)
        assert (await put_log(c, job, 0, b"ok\n")).status_code == 204


async def test_a_job_whose_run_ended_meanwhile_does_not_start(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        with app.ctx.db.unit_of_work(write=True) as s:
            run = s.get(Run, run_id)
            assert run is not None
            side.scheduler.finish(s, run, "canceled", app.ctx.clock.now())
            s.commit()
        r = await c.post(
            job["urls"]["start"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert r.status_code == 409 and r.json()["error"] == "lease_lost"
        with app.ctx.db.unit_of_work() as s:
            assert s.get(Job, job["job_id"]).status == "canceled"  # type: ignore[union-attr]
        app.advance(timedelta(seconds=120))
        assert side.sweep.run() == 0  # nothing left to requeue
        assert (
            await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session))
        ).status_code == 204


async def test_a_job_past_its_phase_timeout_is_errored(side: JobSide) -> None:
    app = side.app
    side.queue.plan_timeout = timedelta(seconds=30)
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        assert job["timeout_s"] == 30
        await start(c, job)
        app.advance(timedelta(seconds=31))
        late = await c.post(
            job["urls"]["heartbeat"], json={"attempt": 1}, headers=bearer(job["job_token"])
        )
        assert late.status_code == 401 and "timeout" in late.json()["detail"]
        assert side.sweep.run() == 1  # the lease (60 s) still holds: the timeout decides
        assert side.run_status(run_id)[0] == "errored"
        with app.ctx.db.unit_of_work() as s:
            phase_id = s.get(Job, job["job_id"]).phase_id  # type: ignore[union-attr]
        log = await read_log(c, side.logs.read_url(phase_id))
        assert b"the plan ran past its timeout (CAIRN_PLAN_TIMEOUT)" in log


async def test_the_jobs_of_an_agent_that_became_errored_are_errored_with_it(
    side: JobSide,
) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        await start(c, job)
        # The agent's own record says it has been silent for 6 minutes while its job's lease
        # still holds (the agents' rule decides first): the sweep errors both at once.
        now = app.ctx.clock.now()
        with app.ctx.db.unit_of_work(write=True) as s:
            s.execute(update(Agent).values(last_ping_at=now - timedelta(minutes=6), status="busy"))
            s.commit()
        assert side.sweep.run() == 1
        assert side.run_status(run_id)[0] == "errored"
        again = await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session))
        assert again.status_code == 409 and again.json()["error"] == "agent_unknown"
