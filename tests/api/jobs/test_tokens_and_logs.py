"""Job tokens on the TFE API (remote-state sharing), and the phase log's limits and URL."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.runs import logs as logs_module
from cairn.runs.jobs_model import Job
from tests.api.jobs.conftest import JobSide, install
from tests.api.jobs.test_agent_protocol import bearer, claim, put_log, read_log, start, workspace
from tests.support.app import CT, InProcessCairn, document
from tests.support.statefile import new_lineage, state_file, version_body

pytestmark = pytest.mark.anyio


@pytest.fixture
def side(any_app: InProcessCairn) -> JobSide:
    return install(any_app)


async def test_a_job_reads_other_state_only_as_remote_state_sharing_allows(side: JobSide) -> None:
    app = side.app
    org, ws_a = await workspace(app)
    _, ws_b = await workspace(app, org)
    async with app.client(app.admin_token) as admin:
        lock = {"data": {"type": "", "attributes": {"reason": "test"}}}
        document(
            await admin.post(f"/api/v2/workspaces/{ws_b}/actions/lock", json=lock, headers=CT), 200
        )
        raw = state_file(1, new_lineage())
        document(
            await admin.post(
                f"/api/v2/workspaces/{ws_b}/state-versions", json=version_body(raw), headers=CT
            ),
            201,
        )
        document(await admin.post(f"/api/v2/workspaces/{ws_b}/actions/unlock", headers=CT), 200)
    session = side.register()
    side.make_run(ws_a)
    async with app.client() as c:
        job = await claim(c, session)
        auth = bearer(job["job_token"])
        current = f"/api/v2/workspaces/{ws_b}/current-state-version"
        assert (await c.get(current, headers=auth)).status_code == 404
        by_name = f"/api/v2/organizations/{org}/workspaces"
        async with app.client(app.admin_token) as admin:
            body = {"data": {"type": "workspaces", "attributes": {"global-remote-state": True}}}
            document(await admin.patch(f"/api/v2/workspaces/{ws_b}", json=body, headers=CT), 200)
        document(await c.get(current, headers=auth), 200)  # the very next request sees it
        listed = document(await c.get(by_name, headers=auth), 200)
        assert {w["id"] for w in listed["data"]} == {ws_a, ws_b}
        async with app.client(app.admin_token) as admin:
            body = {"data": {"type": "workspaces", "attributes": {"global-remote-state": False}}}
            document(await admin.patch(f"/api/v2/workspaces/{ws_b}", json=body, headers=CT), 200)
        assert (await c.get(current, headers=auth)).status_code == 404
        async with app.client(app.admin_token) as admin:
            rel = {"data": [{"type": "workspaces", "id": ws_a}]}
            r = await admin.post(
                f"/api/v2/workspaces/{ws_b}/relationships/remote-state-consumers",
                json=rel,
                headers=CT,
            )
            assert r.status_code == 204, r.text
        document(await c.get(current, headers=auth), 200)
        # Reading is all: the state of a sharing workspace is never the job's to write.
        written = await c.post(
            f"/api/v2/workspaces/{ws_b}/state-versions",
            json=version_body(state_file(2, new_lineage())),
            headers={**CT, **auth},
        )
        assert written.status_code == 403


async def test_a_log_past_its_limit_keeps_one_truncation_line(
    side: JobSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_module, "MAX_LOG", 10)
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        await start(c, job)
        assert (await put_log(c, job, 0, b"12345678")).status_code == 204
        assert (await put_log(c, job, 8, b"abcdef")).status_code == 204  # crosses the limit
        assert (await put_log(c, job, 8, b"abcdef")).status_code == 204  # identical retry
        assert (await put_log(c, job, 14, b"dropped")).status_code == 204
        gap = await put_log(c, job, 30, b"x")
        assert gap.status_code == 409 and gap.json()["offset"] == 21
        with app.ctx.db.unit_of_work() as s:
            phase_id = s.get(Job, job["job_id"]).phase_id  # type: ignore[union-attr]
        log = await read_log(c, side.logs.read_url(phase_id))
        assert log == b"\x02" + b"12345678ab" + logs_module.TRUNCATED


async def test_the_log_url_is_bound_to_its_phase_and_bounded(side: JobSide) -> None:
    app = side.app
    _, ws_id = await workspace(app)
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job: dict[str, Any] = await claim(c, session)
        await start(c, job)
        with app.ctx.db.unit_of_work() as s:
            phase_id = s.get(Job, job["job_id"]).phase_id  # type: ignore[union-attr]
        url = side.logs.read_url(phase_id)
        token = url.rsplit("/", 1)[1]
        moved = url.replace(phase_id, "plan-" + "z" * 16)
        assert (await c.get(moved)).status_code == 401
        forged = token[:-2] + ("yy" if token.endswith("xx") else "xx")
        assert (await c.get(url[: -len(token)] + forged)).status_code == 401
        assert (await c.get(f"{url}?limit=abc")).status_code == 400
        assert (await put_log(c, job, 0, b"y" * 70000)).status_code == 204
        body = await read_log(c, url, offset=0, limit=10**9)
        assert len(body) == 65536 and body[:1] == b"\x02"  # at most go-tfe's buffer
