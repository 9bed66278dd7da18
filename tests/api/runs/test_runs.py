"""The TFE runs API and the run machine, on SQLite and PostgreSQL: what Terraform 1.0.3's remote
backend and pytfe read, the queue of one workspace, locks held by users, the actions and their
three body shapes, cancel and force-cancel."""

from __future__ import annotations

import io
import tarfile
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pytfe.resources.run import _run_from

from cairn.runs.lifecycle import PhaseOutcome
from tests.api.runs.support import RunsRig, bearer, create_run, read_run, status, wire_runs
from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    create_organization,
    create_workspace,
    document,
    grant,
    make_user,
)

pytestmark = pytest.mark.anyio

CHANGES = PhaseOutcome("finished", has_changes=True, additions=2, changes=1)
NO_CHANGES = PhaseOutcome("finished")


@pytest.fixture
def rig(any_app: InProcessCairn) -> RunsRig:
    return wire_runs(any_app)


@pytest.fixture
async def admin(any_app: InProcessCairn, anyio_backend: str) -> Any:
    async with any_app.client(any_app.admin_token) as client:
        yield client


async def remote_workspace(admin: httpx.AsyncClient, **attributes: Any) -> Workspace:
    org = await create_organization(admin)
    return await create_workspace(admin, org, **{"execution-mode": "remote", **attributes})


async def ws_doc(admin: httpx.AsyncClient, ws_id: str) -> dict[str, Any]:
    data: dict[str, Any] = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    return data


async def test_a_run_is_queued_with_everything_the_cli_reads(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    run = await create_run(admin, ws.id, cv, refresh=True)
    attrs, rels = run["attributes"], run["relationships"]
    assert attrs["status"] == "plan_queued"
    assert attrs["status-timestamps"]["plan-queued-at"].endswith("Z")
    assert rels["plan"]["data"]["type"] == "plans" and rels["plan"]["data"]["id"]
    assert rels["apply"]["data"]["type"] == "applies" and rels["apply"]["data"]["id"]
    assert rels["configuration-version"]["data"] == {"id": cv, "type": "configuration-versions"}
    assert rels["workspace"]["data"] == {"id": ws.id, "type": "workspaces"}
    assert rels["cost-estimate"] == {"data": None}
    assert rels["policy-checks"]["data"] == []
    assert attrs["actions"] == {
        "is-cancelable": True,
        "is-confirmable": False,
        "is-discardable": False,
        "is-force-cancelable": False,
    }
    assert set(attrs["permissions"]) >= {
        "can-apply",
        "can-cancel",
        "can-discard",
        "can-force-cancel",
        "can-force-execute",
        "can-override-policy",
    }
    assert attrs["permissions"]["can-apply"] is True
    assert attrs["has-changes"] is False and attrs["is-destroy"] is False
    assert attrs["source"] == "tfe-api" and attrs["plan-only"] is False
    # One plan job, priority 1, on cairn's own workers (no pool).
    (job,) = rig.jobs_of(run["id"])
    assert (job.kind, job.priority, job.pool_id) == ("plan", 1, None)
    assert job.phase_id == rels["plan"]["data"]["id"]
    # The run holds the workspace lock and is its current run.
    w = await ws_doc(admin, ws.id)
    assert w["attributes"]["locked"] is True
    assert w["relationships"]["locked-by"]["data"] == {"id": run["id"], "type": "runs"}
    assert w["relationships"]["current-run"]["data"] == {"id": run["id"], "type": "runs"}
    # The plan and apply documents, with an absolute log URL; include works.
    plan = document(await admin.get(f"/api/v2/plans/{job.phase_id}"), 200)["data"]
    assert plan["attributes"]["status"] == "queued"
    assert plan["attributes"]["log-read-url"].startswith("http")
    assert plan["attributes"]["execution-details"] == {"mode": "remote"}
    full = document(
        await admin.get(f"/api/v2/runs/{run['id']}?include=plan,apply,workspace,created_by"), 200
    )
    assert {(i["type"], i["id"]) for i in full["included"]} >= {
        ("plans", job.phase_id),
        ("applies", rels["apply"]["data"]["id"]),
        ("workspaces", ws.id),
    }


async def test_plan_confirm_apply(rig: RunsRig, admin: httpx.AsyncClient) -> None:
    ws = await remote_workspace(admin)
    run = await create_run(admin, ws.id, rig.configuration_version(ws.id))
    rid = run["id"]
    await rig.start(rid)
    assert await status(admin, rid) == "planning"
    await rig.finish(rid, CHANGES)
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "planned"
    assert doc["attributes"]["has-changes"] is True
    assert doc["attributes"]["actions"]["is-confirmable"] is True
    assert doc["attributes"]["actions"]["is-discardable"] is True
    plan = document(await admin.get(f"/api/v2/runs/{rid}/plan"), 200)["data"]["attributes"]
    assert (plan["status"], plan["resource-additions"], plan["resource-changes"]) == (
        "finished",
        2,
        1,
    )
    # go-tfe's body: the apply is queued at once, never left "confirmed".
    applied = await admin.post(
        f"/api/v2/runs/{rid}/actions/apply", json={"data": {"type": ""}}, headers=CT
    )
    assert applied.status_code == 202 and applied.content == b""
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "apply_queued"
    assert "confirmed-at" in doc["attributes"]["status-timestamps"]
    apply_job = rig.jobs_of(rid)[-1]
    assert (apply_job.kind, apply_job.priority) == ("apply", 0)
    # A second confirmation is refused with HCP's message.
    again = await admin.post(f"/api/v2/runs/{rid}/actions/apply", headers=CT)
    assert again.status_code == 409
    assert "not paused for confirmation" in again.text
    await rig.start(rid)
    assert await status(admin, rid) == "applying"
    await rig.finish(rid, CHANGES)
    assert await status(admin, rid) == "applied"
    w = await ws_doc(admin, ws.id)
    assert w["attributes"]["locked"] is False
    events = document(await admin.get(f"/api/v2/runs/{rid}/run-events"), 200)["data"]
    actions = [e["attributes"]["action"] for e in events]
    assert actions[0] == "pending" and "confirmed" in actions and actions[-1] == "applied"
    one = document(await admin.get(f"/api/v2/run-events/{events[0]['id']}"), 200)["data"]
    assert one["relationships"]["target"]["data"] == {"id": rid, "type": "runs"}


async def test_three_runs_on_one_workspace_go_in_order(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    first, second, third = [(await create_run(admin, ws.id, cv))["id"] for _ in range(3)]
    assert [await status(admin, r) for r in (first, second, third)] == [
        "plan_queued",
        "pending",
        "pending",
    ]
    assert rig.jobs_of(second) == [] and rig.jobs_of(third) == []
    pending = await read_run(admin, third)
    assert pending["attributes"]["position-in-queue"] == 2
    # The CLI's queue display: the organization's queue and capacity.
    queue = document(await admin.get(f"/api/v2/organizations/{ws.org}/runs/queue"), 200)
    assert [(r["id"], r["attributes"]["position-in-queue"]) for r in queue["data"]] == [(first, 1)]
    cap = document(await admin.get(f"/api/v2/organizations/{ws.org}/capacity"), 200)["data"]
    assert cap["type"] == "organization-capacity"
    assert cap["attributes"] == {"pending": 1, "running": 0}
    # First: no changes → planned_and_finished, and the second starts in that transaction.
    await rig.start(first)
    cap = document(await admin.get(f"/api/v2/organizations/{ws.org}/capacity"), 200)["data"]
    assert cap["attributes"] == {"pending": 0, "running": 1}
    await rig.finish(first, NO_CHANGES)
    assert await status(admin, first) == "planned_and_finished"
    apply_phase = document(await admin.get(f"/api/v2/runs/{first}/apply"), 200)["data"]
    assert apply_phase["attributes"]["status"] == "unreachable"
    assert await status(admin, second) == "plan_queued"
    assert await status(admin, third) == "pending"
    w = await ws_doc(admin, ws.id)
    assert w["relationships"]["current-run"]["data"]["id"] == second
    assert w["relationships"]["locked-by"]["data"]["id"] == second
    # Second: planned, then discarded → the third starts.
    await rig.start(second)
    await rig.finish(second, CHANGES)
    assert await status(admin, third) == "pending"  # a planned run still holds the workspace
    discard = await admin.post(f"/api/v2/runs/{second}/actions/discard", json={"comment": "no"})
    assert discard.status_code == 202
    assert await status(admin, second) == "discarded"
    assert await status(admin, third) == "plan_queued"
    # Lists: newest first, filters.
    listed = document(await admin.get(f"/api/v2/workspaces/{ws.id}/runs"), 200)
    assert [r["id"] for r in listed["data"]] == [third, second, first]
    assert listed["meta"]["pagination"]["total-count"] == 3
    final = document(
        await admin.get(f"/api/v2/workspaces/{ws.id}/runs?filter[status_group]=final"), 200
    )
    assert {r["id"] for r in final["data"]} == {first, second}
    by_status = document(
        await admin.get(f"/api/v2/organizations/{ws.org}/runs?filter[status]=plan_queued,pending"),
        200,
    )
    assert [r["id"] for r in by_status["data"]] == [third]
    bad = await admin.get(f"/api/v2/workspaces/{ws.id}/runs?filter[status]=nonsense")
    assert bad.status_code == 400


async def test_a_user_lock_keeps_the_run_pending_until_unlocked(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    locked = await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json={}, headers=CT)
    assert locked.status_code == 200
    run = await create_run(admin, ws.id, cv)
    assert run["attributes"]["status"] == "pending"
    assert rig.jobs_of(run["id"]) == []
    # What the CLI reads to print "Waiting for the manually locked workspace to be unlocked...".
    w = await ws_doc(admin, ws.id)
    assert w["attributes"]["locked"] is True
    assert w["relationships"]["current-run"]["data"] == {"id": run["id"], "type": "runs"}
    # A speculative plan does not wait for the lock.
    spec = await create_run(admin, ws.id, rig.configuration_version(ws.id, speculative=True))
    assert spec["attributes"]["status"] == "plan_queued"
    assert spec["attributes"]["plan-only"] is True
    assert rig.jobs_of(spec["id"])[0].priority == 2
    unlocked = await admin.post(f"/api/v2/workspaces/{ws.id}/actions/unlock", headers=CT)
    assert unlocked.status_code == 200
    assert await status(admin, run["id"]) == "plan_queued"
    w = await ws_doc(admin, ws.id)
    assert w["relationships"]["locked-by"]["data"] == {"id": run["id"], "type": "runs"}


@pytest.mark.parametrize(
    "body",
    [None, {"comment": "stop"}, {"data": {"type": ""}}],
    ids=["no-body", "comment", "go-tfe"],
)
async def test_cancel_of_a_pending_run_in_every_body_shape(
    rig: RunsRig, admin: httpx.AsyncClient, body: dict[str, Any] | None
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    first = (await create_run(admin, ws.id, cv))["id"]
    waiting = (await create_run(admin, ws.id, cv))["id"]
    kwargs: dict[str, Any] = {"headers": CT}
    if body is not None:
        kwargs["json"] = body
    answer = await admin.post(f"/api/v2/runs/{waiting}/actions/cancel", **kwargs)
    assert answer.status_code == 202 and answer.content == b""
    doc = await read_run(admin, waiting)
    assert doc["attributes"]["status"] == "canceled"
    assert doc["attributes"]["actions"]["is-cancelable"] is False
    assert await status(admin, first) == "plan_queued"
    # A queued (not started) run is canceled at once too, and its job dequeued.
    answer = await admin.post(f"/api/v2/runs/{first}/actions/cancel", **kwargs)
    assert answer.status_code == 202
    assert await status(admin, first) == "canceled"
    assert rig.jobs_of(first)[0].status == "canceled"
    assert (await ws_doc(admin, ws.id))["attributes"]["locked"] is False
    again = await admin.post(f"/api/v2/runs/{first}/actions/cancel", **kwargs)
    assert again.status_code == 409


async def test_bad_action_bodies_change_nothing(rig: RunsRig, admin: httpx.AsyncClient) -> None:
    ws = await remote_workspace(admin)
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id)))["id"]
    for raw in (b"[1]", b'{"comment": 5}', b'{"data": 3}', b"{"):
        answer = await admin.post(f"/api/v2/runs/{rid}/actions/cancel", content=raw, headers=CT)
        assert answer.status_code in (400, 422), raw
    assert await status(admin, rid) == "plan_queued"


async def test_force_cancel_needs_a_cancel_and_the_cool_off(
    rig: RunsRig, admin: httpx.AsyncClient, any_app: InProcessCairn
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    rid = (await create_run(admin, ws.id, cv))["id"]
    nxt = (await create_run(admin, ws.id, cv))["id"]
    await rig.start(rid)
    early = await admin.post(f"/api/v2/runs/{rid}/actions/force-cancel", headers=CT)
    assert early.status_code == 409 and "cancel it first" in early.text
    canceled = await admin.post(f"/api/v2/runs/{rid}/actions/cancel", json={"data": {"type": ""}})
    assert canceled.status_code == 202
    assert await rig.heartbeat(rid) == "graceful"
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "planning"  # until the job stops
    assert doc["attributes"]["force-cancel-available-at"] == "2026-01-01T12:00:11.000Z"
    assert doc["attributes"]["actions"]["is-force-cancelable"] is False
    cooling = await admin.post(f"/api/v2/runs/{rid}/actions/force-cancel", headers=CT)
    assert cooling.status_code == 409 and "available at" in cooling.text
    any_app.advance(timedelta(seconds=10))
    doc = await read_run(admin, rid)
    assert doc["attributes"]["actions"]["is-force-cancelable"] is True
    forced = await admin.post(f"/api/v2/runs/{rid}/actions/force-cancel", json={"comment": "x"})
    assert forced.status_code == 202
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "canceled"
    assert "force-canceled-at" in doc["attributes"]["status-timestamps"]
    assert await status(admin, nxt) == "plan_queued"
    assert (await ws_doc(admin, ws.id))["relationships"]["locked-by"]["data"]["id"] == nxt
    # The job hears "force" (SIGKILL) at its next heartbeat; its late finish changes nothing.
    assert await rig.heartbeat(rid) == "force"
    await rig.finish(rid, PhaseOutcome("canceled"))
    assert await status(admin, rid) == "canceled"
    assert await status(admin, nxt) == "plan_queued"


async def test_a_graceful_cancel_ends_when_the_job_stops(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    ws = await remote_workspace(admin)
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id)))["id"]
    await rig.start(rid)
    assert (await admin.post(f"/api/v2/runs/{rid}/actions/cancel")).status_code == 202
    await rig.finish(rid, PhaseOutcome("canceled"))
    assert await status(admin, rid) == "canceled"
    assert (await ws_doc(admin, ws.id))["attributes"]["locked"] is False


async def test_auto_apply_and_errors(rig: RunsRig, admin: httpx.AsyncClient) -> None:
    ws = await remote_workspace(admin, **{"auto-apply": True})
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id)))["id"]
    await rig.start(rid)
    await rig.finish(rid, CHANGES)
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "apply_queued"
    assert doc["attributes"]["auto-apply"] is True
    await rig.start(rid)
    await rig.finish(rid, PhaseOutcome("errored", error="provider crashed"))
    doc = await read_run(admin, rid)
    assert doc["attributes"]["status"] == "errored"
    apply = document(await admin.get(f"/api/v2/runs/{rid}/apply"), 200)["data"]
    assert apply["attributes"]["status"] == "errored"
    assert (await ws_doc(admin, ws.id))["attributes"]["locked"] is False


async def test_refusals(rig: RunsRig, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    local = await create_workspace(admin, org)
    cv = rig.configuration_version(local.id)
    answer = await admin.post(
        "/api/v2/runs",
        json={
            "data": {
                "type": "runs",
                "relationships": {"workspace": {"data": {"type": "workspaces", "id": local.id}}},
            }
        },
        headers=CT,
    )
    assert answer.status_code == 422 and "local execution" in answer.text
    ws = await create_workspace(admin, org, **{"execution-mode": "remote"})
    # No configuration version uploaded yet.
    none = await admin.post(
        "/api/v2/runs",
        json={
            "data": {
                "type": "runs",
                "relationships": {"workspace": {"data": {"type": "workspaces", "id": ws.id}}},
            }
        },
        headers=CT,
    )
    assert none.status_code == 422 and "no uploaded configuration version" in none.text
    pending_cv = rig.configuration_version(ws.id, status="pending")
    body: dict[str, Any] = {
        "data": {
            "type": "runs",
            "relationships": {
                "workspace": {"data": {"type": "workspaces", "id": ws.id}},
                "configuration-version": {
                    "data": {"type": "configuration-versions", "id": pending_cv}
                },
            },
        }
    }
    answer = await admin.post("/api/v2/runs", json=body, headers=CT)
    assert answer.status_code == 422 and "not uploaded" in answer.text
    # Another workspace's configuration version.
    body["data"]["relationships"]["configuration-version"]["data"]["id"] = cv
    answer = await admin.post("/api/v2/runs", json=body, headers=CT)
    assert answer.status_code == 422
    # The latest uploaded one is used when none is named.
    uploaded = rig.configuration_version(ws.id)
    run = await create_run(admin, ws.id)
    assert run["relationships"]["configuration-version"]["data"]["id"] == uploaded
    # Destroy plans refused by the workspace.
    settings: dict[str, Any] = {"execution-mode": "remote", "allow-destroy-plan": False}
    strict = await create_workspace(admin, org, **settings)
    rig.configuration_version(strict.id)
    answer = await admin.post(
        "/api/v2/runs",
        json={
            "data": {
                "type": "runs",
                "attributes": {"is-destroy": True},
                "relationships": {"workspace": {"data": {"type": "workspaces", "id": strict.id}}},
            }
        },
        headers=CT,
    )
    assert answer.status_code == 422 and "allow-destroy-plan" in answer.text
    assert (await admin.get("/api/v2/runs/run-doesnotexist")).status_code == 404


async def test_runs_are_as_private_as_their_workspace(
    rig: RunsRig, admin: httpx.AsyncClient, any_app: InProcessCairn
) -> None:
    ws = await remote_workspace(admin)
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id)))["id"]
    outsider = await make_user(admin, "outsider")
    async with any_app.client(outsider.token) as client:
        assert (await client.get(f"/api/v2/runs/{rid}")).status_code == 404
        assert (await client.post(f"/api/v2/runs/{rid}/actions/cancel")).status_code == 404
        listed = await client.get(f"/api/v2/organizations/{ws.org}/runs")
        assert listed.status_code == 404
    assert await status(admin, rid) == "plan_queued"


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b'output "hello" { value = "world" }\n'
        info = tarfile.TarInfo("main.tf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def test_an_auto_queue_runs_upload_queues_a_run(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    ws = await remote_workspace(admin)
    body = {
        "data": {
            "type": "configuration-versions",
            "attributes": {"auto-queue-runs": True},
        }
    }
    cv = document(
        await admin.post(
            f"/api/v2/workspaces/{ws.id}/configuration-versions", json=body, headers=CT
        ),
        201,
    )["data"]
    put = await admin.put(
        cv["attributes"]["upload-url"],
        content=_tarball(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 200, put.text
    runs = document(await admin.get(f"/api/v2/workspaces/{ws.id}/runs"), 200)["data"]
    assert len(runs) == 1
    (run,) = runs
    assert run["attributes"]["source"] == "tfe-configuration-version"
    assert run["attributes"]["status"] == "plan_queued"
    assert run["relationships"]["configuration-version"]["data"]["id"] == cv["id"]
    # The workspace includes its current run (and that run's plan).
    w = document(
        await admin.get(f"/api/v2/workspaces/{ws.id}?include=current_run,current_run.plan"), 200
    )
    assert {i["type"] for i in w["included"]} == {"runs", "plans"}


async def test_an_auto_queued_run_acts_with_its_creators_rights_of_now(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    """The run an ``auto-queue-runs`` upload queues acts for the version's creator, whose rights
    are read when the upload ends: a planner whose grant was revoked meanwhile queues nothing
    (the upload is refused and the version errored); one who may plan but not apply cannot have
    an auto-apply workspace apply for them."""
    ws = await remote_workspace(admin)
    planner = await make_user(admin, "planner")
    grant_id = await grant(admin, ws, planner, "plan")
    body = {"data": {"type": "configuration-versions", "attributes": {"auto-queue-runs": True}}}
    path = f"/api/v2/workspaces/{ws.id}/configuration-versions"
    async with rig.app.client(planner.token) as p:
        revoked = document(await p.post(path, json=body, headers=CT), 201)["data"]
        auto = document(await p.post(path, json=body, headers=CT), 201)["data"]
    # Revoked between creating the version and uploading it.
    deleted = await admin.delete(f"/api/cairn/v1/grants/{grant_id}")
    assert deleted.status_code == 204, deleted.text
    octet = {"Content-Type": "application/octet-stream"}
    put = await admin.put(revoked["attributes"]["upload-url"], content=_tarball(), headers=octet)
    assert put.status_code in (403, 404), put.text
    shown = document(await admin.get(f"/api/v2/configuration-versions/{revoked['id']}"), 200)
    assert shown["data"]["attributes"]["status"] == "errored"
    assert document(await admin.get(f"/api/v2/workspaces/{ws.id}/runs"), 200)["data"] == []
    # Plan rights again, but the workspace auto-applies: applying needs run:apply.
    await grant(admin, ws, planner, "plan")
    patched = await admin.patch(
        f"/api/v2/workspaces/{ws.id}",
        json={"data": {"type": "workspaces", "attributes": {"auto-apply": True}}},
        headers=CT,
    )
    assert patched.status_code == 200, patched.text
    put = await admin.put(auto["attributes"]["upload-url"], content=_tarball(), headers=octet)
    assert put.status_code == 403 and "run:apply" in put.text, put.text
    assert document(await admin.get(f"/api/v2/workspaces/{ws.id}/runs"), 200)["data"] == []


async def test_pytfe_decodes_the_run_document(rig: RunsRig, admin: httpx.AsyncClient) -> None:
    ws = await remote_workspace(admin)
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id), message="hi"))["id"]
    doc = document(await admin.get(f"/api/v2/runs/{rid}?include=plan,apply,workspace"), 200)
    run = _run_from(doc["data"], doc.get("included"))
    assert run.status is not None and run.status.value == "plan_queued"
    assert run.message == "hi"
    assert run.actions is not None and run.actions.is_cancelable is True
    assert run.permissions is not None and run.permissions.can_apply is True
    assert (
        run.plan is not None and run.plan.id == doc["data"]["relationships"]["plan"]["data"]["id"]
    )
    assert run.apply is not None
    assert run.status_timestamps is not None and run.status_timestamps.plan_queued_at is not None


async def test_the_json_plan_is_served_to_state_readers(
    rig: RunsRig, admin: httpx.AsyncClient, any_app: InProcessCairn
) -> None:
    ws = await remote_workspace(admin)
    rid = (await create_run(admin, ws.id, rig.configuration_version(ws.id)))["id"]
    plan_id = (await read_run(admin, rid))["relationships"]["plan"]["data"]["id"]
    none = await admin.get(f"/api/v2/plans/{plan_id}/json-output")
    assert none.status_code == 404 and "no JSON output yet" in none.text
    job = await rig.start(rid)
    json_plan = b'{"format_version":"0.2","resource_changes":[]}'
    async with any_app.client() as c:
        put = await c.put(
            f"{job['urls']['plan']}?attempt={job['attempt']}&format=json",
            content=json_plan,
            headers=bearer(job["job_token"]),
        )
    assert put.status_code == 204, put.text
    await rig.finish(rid, CHANGES)
    for path in (f"/api/v2/plans/{plan_id}/json-output", f"/api/v2/runs/{rid}/plan/json-output"):
        got = await admin.get(path)
        assert got.status_code == 200 and got.content == json_plan
    # Someone who may not read the workspace learns nothing of it.
    outsider = await make_user(admin, "outsider")
    async with any_app.client(outsider.token) as client:
        assert (await client.get(f"/api/v2/plans/{plan_id}/json-output")).status_code == 404


async def test_an_agent_workspace_queues_its_jobs_to_its_pool(
    rig: RunsRig, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    pool_body = {"data": {"type": "agent-pools", "attributes": {"name": "builders"}}}
    pool = document(
        await admin.post(f"/api/v2/organizations/{org}/agent-pools", json=pool_body, headers=CT),
        201,
    )["data"]
    ws = await create_workspace(admin, org)
    patch = {
        "data": {
            "type": "workspaces",
            "attributes": {"execution-mode": "agent", "agent-pool-id": pool["id"]},
        }
    }
    document(await admin.patch(f"/api/v2/workspaces/{ws.id}", json=patch, headers=CT), 200)
    run = await create_run(admin, ws.id, rig.configuration_version(ws.id))
    (job,) = rig.jobs_of(run["id"])
    assert job.pool_id == pool["id"]
    plan = document(await admin.get(f"/api/v2/runs/{run['id']}/plan"), 200)["data"]
    assert plan["attributes"]["execution-details"] == {
        "mode": "agent",
        "agent-pool-id": pool["id"],
    }


async def test_a_planner_queues_and_cancels_but_does_not_apply(
    rig: RunsRig, admin: httpx.AsyncClient, any_app: InProcessCairn
) -> None:
    ws = await remote_workspace(admin)
    cv = rig.configuration_version(ws.id)
    planner = await make_user(admin, "planner")
    grant = {"role": "plan", "user": planner.id, "workspaces": ws.name}
    document(await admin.post(f"/api/cairn/v1/organizations/{ws.org}/grants", json=grant), 201)
    async with any_app.client(planner.token) as client:
        run = await create_run(client, ws.id, cv)
        perms = run["attributes"]["permissions"]
        assert perms["can-apply"] is False and perms["can-cancel"] is True
        assert perms["can-force-cancel"] is False
        await rig.start(run["id"])
        await rig.finish(run["id"], CHANGES)
        refused = await client.post(f"/api/v2/runs/{run['id']}/actions/apply", headers=CT)
        assert refused.status_code == 403
        assert await status(admin, run["id"]) == "planned"
        destroy = await client.post(
            "/api/v2/runs",
            json={
                "data": {
                    "type": "runs",
                    "attributes": {"is-destroy": True},
                    "relationships": {"workspace": {"data": {"type": "workspaces", "id": ws.id}}},
                }
            },
            headers=CT,
        )
        assert destroy.status_code == 403
        queued = await create_run(client, ws.id, cv)
        assert queued["attributes"]["status"] == "pending"
        canceled = await client.post(f"/api/v2/runs/{queued['id']}/actions/cancel", headers=CT)
        assert canceled.status_code == 202
        assert await status(admin, queued["id"]) == "canceled"
    # Only the two runs the planner queued exist; the refused destroy left nothing behind.
    listed = document(await admin.get(f"/api/v2/workspaces/{ws.id}/runs"), 200)
    assert listed["meta"]["pagination"]["total-count"] == 2
