"""The ingest against the rig's forge (real git repositories, the GitLab v4 and GitHub REST
calls) through cairn's own forge clients: the archive of a real commit re-packed at the
repository's root, GitLab's compare and merge-request changes, GitHub's tarball redirect and
pull-request files, and the commit status as each forge records it."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select

from cairn.runs.model import Run
from cairn.vcs.forges import forge_for
from cairn.vcs.tokens import ForgeCredential
from cairn.webhooks import ingest, statuses
from cairn.webhooks.ingest import IngestServices
from cairn.webhooks.model import Delivery
from cairn.workspaces.model import Workspace as WorkspaceRow
from tests.api.webhooks.conftest import make_connection
from tests.support.app import InProcessCairn, create_organization, create_workspace
from tests.support.vcs.forge import Forge, Repo
from tests.support.vcs.gitlab_op import GitLabOp

pytestmark = pytest.mark.anyio

MAIN_TF = 'output "greeting" { value = "hello" }\n'


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Forge]:
    """A forge of its own; PATs only, so no GitLab OAuth server is needed."""
    forge = Forge(tmp_path / "forge", cast(GitLabOp, None)).start()
    try:
        yield forge
    finally:
        forge.stop()


def credential(rig: Forge, flavor: str) -> ForgeCredential:
    gitlab = flavor == "gitlab"
    return ForgeCredential(
        token_id="ot-rig",
        kind="gitlab_token" if gitlab else "github_token",
        service_provider="gitlab_hosted" if gitlab else "github",
        api_url=rig.gitlab_api_url if gitlab else rig.github_api_url,
        http_url=rig.url,
        token=rig.add_pat(flavor),
    )


def services(app: InProcessCairn, rig: Forge, flavor: str) -> IngestServices:
    cred = credential(rig, flavor)
    return IngestServices(
        db=app.ctx.db,
        clock=app.clock,
        blobs=app.ctx.blobs,
        configs=app.ctx.configversions,
        runs=app.ctx.runs,
        forge_for=lambda token_id: forge_for(cred),
        public_url=app.url,
    )


async def workspace(
    app: InProcessCairn, admin: httpx.AsyncClient, kind: str, repo: str, **settings: Any
) -> tuple[str, str, str]:
    """(connection id, organization id, workspace id)."""
    org = await create_organization(admin)
    conn = make_connection(app, org, kind)
    ws = await create_workspace(admin, org, **{"execution-mode": "remote"})
    with app.ctx.db.unit_of_work(write=True) as s:
        row = s.get(WorkspaceRow, ws.id)
        assert row is not None
        row.vcs_oauth_client_id = conn.id
        row.vcs_oauth_token_id = "ot-rig"
        row.vcs_identifier = repo
        row.queue_all_runs = True
        for key, value in settings.items():
            setattr(row, key, value)
        s.commit()
    return conn.id, conn.organization_id, ws.id


def delivery(client_id: str, org_id: str, provider: str, event: str, payload: Any) -> Delivery:
    return Delivery(
        id="vcsd-rig",
        oauth_client_id=client_id,
        organization_id=org_id,
        provider=provider,
        event=event,
        action=None,
        delivery_key=secrets.token_hex(8),
        received_at=datetime.now(UTC),
        attempt=1,
        body=json.dumps(payload).encode(),
    )


def gitlab_push(repo: Repo, before: str, after: str, total: int = 1) -> dict[str, Any]:
    return {
        "object_kind": "push",
        "ref": f"refs/heads/{repo.default_branch}",
        "before": before,
        "after": after,
        "checkout_sha": after,
        "user_username": "alice",
        "project": {"path_with_namespace": repo.path, "default_branch": repo.default_branch},
        "commits": [],  # nothing listed: the ingest must ask the compare API
        "total_commits_count": total,
    }


def only_run(app: InProcessCairn, ws_id: str) -> Run:
    with app.ctx.db.unit_of_work() as s:
        (run,) = s.scalars(select(Run).where(Run.workspace_id == ws_id)).all()
        return run


async def download(app: InProcessCairn, cv_id: str) -> dict[str, bytes]:
    async with app.client(app.admin_token) as client:
        response = await client.get(f"/api/v2/configuration-versions/{cv_id}/download")
    document_ok = response.status_code == 200
    assert document_ok, response.text
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                out[member.name] = data.read()
    return out


async def test_gitlab_push_uses_compare_and_the_real_archive(
    app: InProcessCairn, admin: httpx.AsyncClient, rig: Forge
) -> None:
    repo = rig.create_repo(f"acme/infra-{secrets.token_hex(3)}", {"infra/main.tf": MAIN_TF})
    base = repo.head()
    client_id, org_id, ws_id = await workspace(
        app, admin, "gitlab_token", repo.path, working_directory="infra"
    )
    svc = services(app, rig, "gitlab")
    docs = repo.commit({"README.md": "docs only\n"})
    outcome = ingest.handle(
        svc, delivery(client_id, org_id, "gitlab", "Push Hook", gitlab_push(repo, base, docs))
    )
    assert "no changed file" in outcome and rig.archive_fetches(repo.path) == 0
    change = repo.commit({"infra/extra.tf": "# more\n"})
    ingest.handle(
        svc, delivery(client_id, org_id, "gitlab", "Push Hook", gitlab_push(repo, docs, change))
    )
    run = only_run(app, ws_id)
    files = await download(app, run.configuration_version_id)
    assert files == {
        "infra/main.tf": MAIN_TF.encode(),
        "infra/extra.tf": b"# more\n",
        "README.md": b"docs only\n",
    }
    assert rig.archive_fetches(repo.path) == 1
    assert statuses.post_pending(app.ctx.db, app.clock, svc.forge_for) == 2
    by_sha = {s.sha: s for s in rig.statuses(repo.path)}
    assert by_sha[docs].state == "success" and by_sha[change].state == "pending"
    assert by_sha[change].context.startswith("cairn/")


async def test_gitlab_merge_request_files_decide(
    app: InProcessCairn, admin: httpx.AsyncClient, rig: Forge
) -> None:
    repo = rig.create_repo(f"acme/mr-{secrets.token_hex(3)}", {"infra/main.tf": MAIN_TF})
    client_id, org_id, ws_id = await workspace(
        app, admin, "gitlab_token", repo.path, working_directory="infra"
    )
    repo.create_branch("feature")
    repo.commit({"infra/main.tf": MAIN_TF + "# changed\n"}, branch="feature")
    mr = rig.open_merge_request(repo, "feature")
    payload = {
        "object_kind": "merge_request",
        "user": {"username": "alice"},
        "project": {"path_with_namespace": repo.path, "default_branch": "main"},
        "object_attributes": {
            "iid": mr.number,
            "action": "open",
            "source_branch": "feature",
            "target_branch": "main",
            "source_project_id": repo.project_id,
            "target_project_id": repo.project_id,
            "last_commit": {"id": mr.head_sha, "message": "change", "url": "u"},
            "url": "mr-url",
            "title": "Change",
        },
    }
    svc = services(app, rig, "gitlab")
    ingest.handle(svc, delivery(client_id, org_id, "gitlab", "Merge Request Hook", payload))
    run = only_run(app, ws_id)
    assert run.speculative
    files = await download(app, run.configuration_version_id)
    assert files["infra/main.tf"].endswith(b"# changed\n")


async def test_github_push_through_the_tarball_redirect(
    app: InProcessCairn, admin: httpx.AsyncClient, rig: Forge
) -> None:
    repo = rig.create_repo(f"octo/infra-{secrets.token_hex(3)}", {"main.tf": MAIN_TF})
    before = repo.head()
    client_id, org_id, ws_id = await workspace(app, admin, "github_token", repo.path)
    sha = repo.commit({"main.tf": MAIN_TF + "# two\n", ".hidden/x": "y"})
    payload = {
        "ref": "refs/heads/main",
        "before": before,
        "after": sha,
        "repository": {"full_name": repo.path, "default_branch": "main"},
        "commits": [
            {
                "id": sha,
                "message": "two",
                "added": [".hidden/x"],
                "modified": ["main.tf"],
                "removed": [],
            }
        ],
        "head_commit": {"id": sha, "message": "two", "url": "u"},
        "sender": {"login": "alice"},
    }
    svc = services(app, rig, "github")
    ingest.handle(svc, delivery(client_id, org_id, "github", "push", payload))
    run = only_run(app, ws_id)
    files = await download(app, run.configuration_version_id)
    assert files == {"main.tf": (MAIN_TF + "# two\n").encode(), ".hidden/x": b"y"}
    assert statuses.post_pending(app.ctx.db, app.clock, svc.forge_for) == 1
    (status,) = rig.statuses(repo.path, sha)
    assert status.state == "pending" and status.target_url is not None
    assert status.target_url.endswith(f"/runs/{run.id}")


async def test_a_compare_the_forge_cannot_answer_runs_the_workspace(
    app: InProcessCairn, admin: httpx.AsyncClient, rig: Forge
) -> None:
    """A force push whose old head the forge no longer has: compare answers 404, so nothing
    can say which files changed and the workspace runs (HCP: no list → run)."""
    repo = rig.create_repo(f"acme/force-{secrets.token_hex(3)}", {"infra/main.tf": MAIN_TF})
    client_id, org_id, ws_id = await workspace(
        app, admin, "gitlab_token", repo.path, working_directory="infra"
    )
    sha = repo.commit({"README.md": "x\n"})
    gone = secrets.token_hex(20)
    payload = gitlab_push(repo, gone, sha)
    ingest.handle(
        services(app, rig, "gitlab"), delivery(client_id, org_id, "gitlab", "Push Hook", payload)
    )
    assert only_run(app, ws_id).status == "plan_queued"
