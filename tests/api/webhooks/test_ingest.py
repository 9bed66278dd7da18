"""The ingest in-process: a verified delivery becomes a configuration version made from the
commit (with HCP's ingress attributes), a run or a speculative plan, and an aggregated commit
status; HCP's trigger rules decide which workspaces. The forge is a small in-memory stand-in
for the three calls the ingest makes (archive, compare, change-request files) and the status
post; the end-to-end tests (tests/e2e/test_vcs_*.py) use the rig's real-git forge instead."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cairn.configversions.model import ConfigurationVersion
from cairn.runs.model import Run
from cairn.vcs.model import OAuthClient
from cairn.webhooks import ingest, statuses
from cairn.webhooks.ingest import IngestServices
from cairn.webhooks.model import Delivery, DeliveryFailed
from cairn.webhooks.statuses import VcsStatus
from cairn.webhooks.worker import DeliveryWorker, Policy
from cairn.workspaces.model import Workspace as WorkspaceRow
from tests.api.webhooks.conftest import Connection, make_connection, send
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def app(any_app: InProcessCairn) -> InProcessCairn:
    """Every test here on SQLite, then on PostgreSQL (the unique indexes and the status row
    lock are the database's)."""
    return any_app


REPO = "group/infra"
TOKEN = "ot-test"


class MemoryForge:
    """The forge calls the ingest and the status poster make, answered from memory."""

    def __init__(self, files: dict[str, str] | None = None) -> None:
        self.files = files or {"main.tf": 'output "x" { value = 1 }\n'}
        self.archives: list[tuple[str, str]] = []
        self.compares: list[tuple[str, str, str]] = []
        self.mr_files: list[str] | None = None
        self.changed: list[str] | None = None
        self.posted: list[tuple[str, str, str, str, str, str | None]] = []
        self.fail_posts = 0

    def archive(self, repo: str, sha: str) -> Iterator[bytes]:
        self.archives.append((repo, sha))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            top = tarfile.TarInfo(f"infra-{sha}")
            top.type = tarfile.DIRTYPE
            tar.addfile(top)
            for name, text in self.files.items():
                data = text.encode()
                info = tarfile.TarInfo(f"infra-{sha}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        raw = buf.getvalue()
        yield raw[:100]
        yield raw[100:]

    def compare_files(self, repo: str, base: str, head: str) -> list[str] | None:
        self.compares.append((repo, base, head))
        return self.changed

    def merge_request_files(self, repo: str, number: int) -> list[str] | None:
        return self.mr_files

    def set_status(
        self, repo: str, sha: str, state: str, context: str, description: str, url: str | None
    ) -> None:
        if self.fail_posts:
            self.fail_posts -= 1
            raise ConnectionError("forge down")
        self.posted.append((repo, sha, state, context, description, url))


def services(app: InProcessCairn, forge: MemoryForge) -> IngestServices:
    return IngestServices(
        db=app.ctx.db,
        clock=app.clock,
        blobs=app.ctx.blobs,
        configs=app.ctx.configversions,
        runs=app.ctx.runs,
        forge_for=lambda token_id: forge,
        public_url=app.url,
    )


async def vcs_workspace(
    app: InProcessCairn,
    admin: httpx.AsyncClient,
    conn: Connection | None = None,
    org: str | None = None,
    **settings: Any,
) -> tuple[Connection, str, str]:
    """(connection, org, workspace id) of a remote-execution workspace on ``REPO``."""
    org = org or await create_organization(admin)
    conn = conn or make_connection(app, org, "gitlab_token")
    ws = await create_workspace(admin, org, **{"execution-mode": "remote"})
    with app.ctx.db.unit_of_work(write=True) as s:
        row = s.get(WorkspaceRow, ws.id)
        assert row is not None
        row.vcs_oauth_client_id = conn.id
        row.vcs_oauth_token_id = TOKEN
        row.vcs_identifier = REPO
        row.queue_all_runs = True
        for key, value in settings.items():
            setattr(row, key, value)
        s.commit()
    return conn, org, ws.id


def push(
    sha: str | None = None, *, files: tuple[str, ...] = ("main.tf",), **over: Any
) -> dict[str, Any]:
    sha = sha or secrets.token_hex(20)
    payload: dict[str, Any] = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": "b" * 40,
        "after": sha,
        "checkout_sha": sha,
        "user_username": "alice",
        "project": {
            "path_with_namespace": REPO,
            "default_branch": "main",
            "git_http_url": "https://gitlab.example/group/infra.git",
            "web_url": "https://gitlab.example/group/infra",
        },
        "commits": [
            {
                "id": sha,
                "message": "add x",
                "url": "https://gitlab.example/c",
                "added": list(files),
                "modified": [],
                "removed": [],
            }
        ],
        "total_commits_count": 1,
    }
    payload.update(over)
    return payload


def merge_request(sha: str, *, fork: bool = False, action: str = "open") -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "user": {"username": "bob"},
        "project": {"path_with_namespace": REPO, "default_branch": "main"},
        "object_attributes": {
            "iid": 4,
            "action": action,
            "source_branch": "feature",
            "target_branch": "main",
            "source_project_id": 2 if fork else 1,
            "target_project_id": 1,
            "last_commit": {"id": sha, "message": "wip", "url": "u"},
            "url": "https://gitlab.example/group/infra/-/merge_requests/4",
            "title": "Add x",
            "description": "body",
        },
    }


def delivery(conn: Connection, payload: dict[str, Any], event: str = "Push Hook") -> Delivery:
    return Delivery(
        id="vcsd-test",
        oauth_client_id=conn.id,
        organization_id=conn.organization_id,
        provider="gitlab",
        event=event,
        action=None,
        delivery_key=secrets.token_hex(8),
        received_at=datetime.now(UTC),
        attempt=1,
        body=json.dumps(payload).encode(),
    )


def runs_of(app: InProcessCairn, ws_id: str) -> list[Run]:
    with app.ctx.db.unit_of_work() as s:
        return list(
            s.scalars(select(Run).where(Run.workspace_id == ws_id).order_by(Run.created_at))
        )


def status_of(app: InProcessCairn, sha: str) -> VcsStatus | None:
    with app.ctx.db.unit_of_work() as s:
        return s.scalars(select(VcsStatus).where(VcsStatus.sha == sha)).first()


async def test_push_to_the_branch_makes_a_version_from_the_commit_and_a_run(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, org, ws_id = await vcs_workspace(app, admin, auto_apply=True)
    sha = secrets.token_hex(20)
    outcome = ingest.handle(services(app, forge), delivery(conn, push(sha)))
    assert "run" in outcome and sha[:12] in outcome
    (run,) = runs_of(app, ws_id)
    assert (run.status, run.speculative, run.auto_apply, run.created_by_id) == (
        "plan_queued",
        False,
        True,
        None,
    )
    assert run.source == "tfe-configuration-version" and run.message == "add x"
    # the version: uploaded, from gitlab, the repository at its root (top directory stripped)
    async with app.client(app.admin_token) as client:
        cv = document(
            await client.get(f"/api/v2/configuration-versions/{run.configuration_version_id}"), 200
        )
        attrs = cv["data"]["attributes"]
        assert (attrs["source"], attrs["status"], attrs["speculative"]) == (
            "gitlab",
            "uploaded",
            False,
        )
        assert (
            cv["data"]["relationships"]["ingress-attributes"]["data"]["type"]
            == "ingress-attributes"
        )
        ia = document(
            await client.get(
                f"/api/v2/configuration-versions/{run.configuration_version_id}/ingress-attributes"
            ),
            200,
        )["data"]["attributes"]
        assert ia["commit-sha"] == sha and ia["branch"] == "main" and ia["identifier"] == REPO
        assert ia["is-pull-request"] is False and ia["on-default-branch"] is True
        assert ia["sender-username"] == "alice" and ia["commit-message"] == "add x"
        included = document(
            await client.get(
                f"/api/v2/configuration-versions/{run.configuration_version_id}?include=ingress_attributes"
            ),
            200,
        )["included"]
        assert included[0]["attributes"]["commit-sha"] == sha
        download = await client.get(
            f"/api/v2/configuration-versions/{run.configuration_version_id}/download"
        )
        assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        assert tar.getnames() == ["main.tf"]
    # its commit status: pending, context cairn/<org>, link to the run
    row = status_of(app, sha)
    assert row is not None and (row.state, row.context) == ("pending", f"cairn/{org}")
    assert row.target_url is not None and row.target_url.endswith(f"/runs/{run.id}")
    assert statuses.post_pending(app.ctx.db, app.clock, lambda t: forge) == 1
    assert forge.posted[-1][:4] == (REPO, sha, "pending", f"cairn/{org}")
    assert statuses.post_pending(app.ctx.db, app.clock, lambda t: forge) == 0  # nothing new


async def test_a_replayed_delivery_starts_one_run_and_fetches_one_archive(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, org, ws_a = await vcs_workspace(app, admin)
    _, _, ws_b = await vcs_workspace(app, admin, conn=conn, org=org)
    d = delivery(conn, push())
    ingest.handle(services(app, forge), d)
    again = ingest.handle(services(app, forge), d)
    assert "already" in again
    assert len(runs_of(app, ws_a)) == 1 and len(runs_of(app, ws_b)) == 1
    assert len(forge.archives) == 1  # two workspaces, one archive


async def test_status_follows_the_runs_and_is_retried_when_the_forge_fails(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, _, ws_id = await vcs_workspace(app, admin)
    sha = secrets.token_hex(20)
    ingest.handle(services(app, forge), delivery(conn, push(sha)))
    (run,) = runs_of(app, ws_id)
    async with app.client(app.admin_token) as client:
        canceled = await client.post(f"/api/v2/runs/{run.id}/actions/cancel", json={}, headers=CT)
        assert canceled.status_code == 202
    row = status_of(app, sha)
    assert row is not None and row.state == "error" and "canceled" in row.description
    forge.fail_posts = 1
    assert statuses.post_pending(app.ctx.db, app.clock, lambda t: forge) == 0
    row = status_of(app, sha)
    assert row is not None and row.attempts == 1 and "forge down" in (row.error or "")
    assert statuses.post_pending(app.ctx.db, app.clock, lambda t: forge) == 0  # not yet due
    app.advance(statuses.retry_delay(1))
    assert statuses.post_pending(app.ctx.db, app.clock, lambda t: forge) == 1
    assert forge.posted[-1][2] == "error"


async def test_file_triggers_skip_with_a_passing_status(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, _, ws_id = await vcs_workspace(app, admin, working_directory="infra")
    sha = secrets.token_hex(20)
    outcome = ingest.handle(services(app, forge), delivery(conn, push(sha, files=("docs/a.md",))))
    assert "no changed file" in outcome
    assert runs_of(app, ws_id) == [] and forge.archives == []
    row = status_of(app, sha)
    assert row is not None and row.state == "success"
    # a change inside the working directory runs
    ingest.handle(services(app, forge), delivery(conn, push(files=("infra/main.tf",))))
    assert len(runs_of(app, ws_id)) == 1


async def test_too_many_commits_asks_the_forge_for_the_files(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    forge.changed = ["docs/readme.md"]
    conn, _, ws_id = await vcs_workspace(app, admin, working_directory="infra")
    payload = push(total_commits_count=25)
    ingest.handle(services(app, forge), delivery(conn, payload))
    assert forge.compares == [(REPO, "b" * 40, payload["after"])]
    assert runs_of(app, ws_id) == []
    forge.changed = None  # the forge cannot say either: run
    ingest.handle(services(app, forge), delivery(conn, push(total_commits_count=25)))
    assert len(runs_of(app, ws_id)) == 1


async def test_merge_requests_plan_speculatively_and_forks_need_permission(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, _, ws_id = await vcs_workspace(app, admin)
    sha = secrets.token_hex(20)
    ingest.handle(services(app, forge), delivery(conn, merge_request(sha), "Merge Request Hook"))
    (run,) = runs_of(app, ws_id)
    assert run.speculative and run.plan_only and run.status == "plan_queued"
    with app.ctx.db.unit_of_work() as s:
        cv = s.get(ConfigurationVersion, run.configuration_version_id)
        assert cv is not None and cv.speculative
    fork_sha = secrets.token_hex(20)
    fork = merge_request(fork_sha, fork=True)
    outcome = ingest.handle(services(app, forge), delivery(conn, fork, "Merge Request Hook"))
    assert "fork" in outcome and len(runs_of(app, ws_id)) == 1
    with app.ctx.db.unit_of_work(write=True) as s:
        client = s.get(OAuthClient, conn.id)
        assert client is not None
        client.allow_fork_plans = True
        s.commit()
    ingest.handle(services(app, forge), delivery(conn, fork, "Merge Request Hook"))
    assert len(runs_of(app, ws_id)) == 2
    close = merge_request(sha, action="close")
    closed = ingest.handle(services(app, forge), delivery(conn, close, "Merge Request Hook"))
    assert "nothing to plan" in closed


async def test_guards(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    forge = MemoryForge()
    conn, _, ws_id = await vcs_workspace(app, admin, queue_all_runs=False)
    outcome = ingest.handle(services(app, forge), delivery(conn, push()))
    assert "queue-all-runs" in outcome and runs_of(app, ws_id) == []
    other = push()
    other["project"]["path_with_namespace"] = "group/other"
    outcome = ingest.handle(services(app, forge), delivery(conn, other))
    assert "no workspace uses group/other" in outcome
    with pytest.raises(DeliveryFailed, match="no string ref"):
        ingest.handle(services(app, forge), delivery(conn, {"object_kind": "push"}))


async def test_deliveries_through_the_worker_are_listed_as_vcs_events(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    forge = MemoryForge()
    conn, org, ws_id = await vcs_workspace(app, admin)
    async with app.client() as hooks:
        document(await send(hooks, conn, push()), 202)
        document(await send(hooks, conn, b'{"object_kind": "push"}'), 202)
    worker = DeliveryWorker(
        app.ctx.db,
        app.clock,
        lambda d: ingest.handle(services(app, forge), d),
        policy=Policy(round_budget=60.0),
    )
    assert worker.run() == 2
    assert len(runs_of(app, ws_id)) == 1
    events = document(await admin.get(f"/api/v2/organizations/{org}/vcs-events"), 200)
    levels = sorted(e["attributes"]["level"] for e in events["data"])
    assert levels == ["error", "info"]
    errors = document(
        await admin.get(f"/api/v2/organizations/{org}/vcs-events?filter[levels]=error"), 200
    )["data"]
    assert len(errors) == 1 and "ref" in errors[0]["attributes"]["message"]
    assert errors[0]["relationships"]["oauth-client"]["data"]["id"] == conn.id
    bad = await admin.get(f"/api/v2/organizations/{org}/vcs-events?filter[from]=yesterday")
    assert bad.status_code == 422


async def test_two_workers_handling_one_delivery_at_once_start_one_run(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """A lease that lapsed while the first worker was still busy: two replicas handle the same
    delivery at the same moment; the unique (workspace, commit) lets one run exist."""
    forge = MemoryForge()
    conn, _, ws_id = await vcs_workspace(app, admin)
    d = delivery(conn, push())
    barrier = threading.Barrier(2)

    def handle() -> str:
        barrier.wait()
        return ingest.handle(services(app, forge), d)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: handle(), range(2)))
    assert len(runs_of(app, ws_id)) == 1
    assert sum("already" in o for o in outcomes) == 1
