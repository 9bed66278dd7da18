"""VCS-driven runs end to end (issue 11, Deliver 3 & 5): a real cairn (built-in worker, the
test Terraform with the offline null provider) and the rig's forge (real git repositories, the
GitLab v4 and GitHub REST calls). Connections and workspaces are made through the TFE API, the
webhook cairn registers on the forge gives its secret, deliveries are sent as the forges send
them, and what the forge records (commit statuses, archive downloads) is checked."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.test_remote_runs import (  # noqa: F401 - run_server, site: fixtures
    Site,
    run_server,
    site,
    wait_until,
)
from tests.e2e.test_vcs_race import dump_columns
from tests.support import api as tfe
from tests.support.vcs import webhook
from tests.support.vcs.forge import Forge, Repo
from tests.support.vcs.webhook import Webhook

pytestmark = pytest.mark.e2e

MAIN_TF = """\
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

resource "null_resource" "one" {
  triggers = { generation = "%s" }
}
"""


@dataclass
class Connected:
    site: Site
    client_id: str
    token_id: str

    @property
    def hook_url(self) -> str:
        return f"{self.site.server.url}/api/cairn/v1/vcs-hooks/{self.client_id}"

    def workspace(self, repo: Repo, **attributes: Any) -> str:
        attributes.setdefault("auto-apply", True)
        attributes.setdefault("queue-all-runs", True)
        return self.site.workspace(
            f"ws-{secrets.token_hex(3)}",
            **{"vcs-repo": {"identifier": repo.path, "oauth-token-id": self.token_id}},
            **attributes,
        )

    def send(self, hook: Webhook, secret: str) -> int:
        body = hook.body()
        response = self.site.api.post(
            self.hook_url, content=body, headers=hook.headers(secret, body)
        )
        return response.status_code


def connect(site: Site, forge: Forge, flavor: str) -> Connected:  # noqa: F811
    gitlab = flavor == "gitlab"
    attributes = {
        "service-provider": "gitlab_hosted" if gitlab else "github_enterprise",
        "http-url": forge.url,
        "api-url": forge.gitlab_api_url if gitlab else forge.github_api_url,
        "oauth-token-string": forge.add_pat(flavor),
        "name": f"{flavor} e2e",
    }
    doc = tfe.document(
        site.api.post(
            f"/api/v2/organizations/{site.org}/oauth-clients",
            json={"data": {"type": "oauth-clients", "attributes": attributes}},
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )
    client_id = doc["data"]["id"]
    tokens = doc["data"]["relationships"]["oauth-tokens"]["data"]
    return Connected(site, client_id, tokens[0]["id"])


def hook_secret(forge: Forge, repo: Repo) -> str:
    """The secret of the webhook cairn registered on the forge for ``repo``."""
    found: list[str] = []

    def registered() -> bool:
        found[:] = [h.secret for h in forge.hooks(repo.path) if h.secret]
        return bool(found)

    wait_until(registered, 30.0, lambda: f"cairn registered no webhook on {repo.path}")
    return found[0]


def status_of(forge: Forge, repo: Repo, sha: str, states: set[str]) -> Any:
    last: list[Any] = []

    def reached() -> bool:
        last[:] = forge.statuses(repo.path, sha)[-1:]
        return bool(last) and last[0].state in states

    wait_until(reached, 90.0, lambda: f"the commit status of {sha[:12]} is {last}")
    return last[0]


def one_run(site: Site, ws_id: str) -> dict[str, Any]:  # noqa: F811
    runs: list[dict[str, Any]] = []

    def started() -> bool:
        runs[:] = site.runs(ws_id)
        return bool(runs)

    wait_until(started, 30.0, lambda: f"no run in {ws_id}")
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def repo_factory(forge: Forge) -> Callable[[str], Repo]:
    def make(owner: str) -> Repo:
        return forge.create_repo(f"{owner}/infra-{secrets.token_hex(3)}", {"main.tf": MAIN_TF % 1})

    return make


def test_gitlab_push_applies_and_a_merge_request_plans(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    conn = connect(site, forge, "gitlab")
    repo = repo_factory("acme")
    ws_id = conn.workspace(repo)
    secret = hook_secret(forge, repo)

    sha = repo.commit({"main.tf": MAIN_TF % 2})
    push = webhook.gitlab_push(repo)
    assert conn.send(push, secret) == 202
    assert conn.send(push, secret) == 200  # the forge's redelivery: nothing new
    run = one_run(site, ws_id)
    assert site.wait_status(run["id"], {"applied", "errored"}) == "applied"
    assert status_of(forge, repo, sha, {"success", "failed"}).state == "success"
    assert forge.archive_fetches(repo.path, sha) == 1

    # a merge request from the same repository: a speculative plan of its head commit
    repo.create_branch("feature")
    head = repo.commit({"main.tf": MAIN_TF % 3}, branch="feature")
    mr = forge.open_merge_request(repo, "feature")
    assert conn.send(webhook.gitlab_merge_request(mr, "open"), secret) == 202
    plan: list[dict[str, Any]] = []

    def planned() -> bool:
        plan[:] = [r for r in site.runs(ws_id) if r["id"] != run["id"]]
        return bool(plan)

    wait_until(planned, 30.0, lambda: "no speculative plan")
    assert plan[0]["attributes"]["plan-only"] is True
    status = site.wait_status(plan[0]["id"], {"planned_and_finished", "errored"})
    assert status == "planned_and_finished"
    assert status_of(forge, repo, head, {"success", "failed"}).state == "success"

    # a merge request from a fork is not planned
    fork = repo.fork(f"mallory/fork-{secrets.token_hex(3)}")
    fork.create_branch("evil")
    fork.commit({"main.tf": MAIN_TF % 4}, branch="evil")
    forked = forge.open_merge_request(repo, "evil", source_repo=fork)
    assert conn.send(webhook.gitlab_merge_request(forked, "open"), secret) == 202
    events: list[dict[str, Any]] = []

    def handled() -> bool:
        doc = tfe.document(site.api.get(f"/api/v2/organizations/{site.org}/vcs-events"), 200)
        events[:] = [e for e in doc["data"] if "fork" in (e["attributes"]["message"] or "")]
        return bool(events)

    wait_until(handled, 30.0, lambda: "the fork's merge request was not reported")
    assert len(site.runs(ws_id)) == 2


def test_file_triggers_outside_the_working_directory_post_a_passing_status(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    conn = connect(site, forge, "gitlab")
    repo = repo_factory("acme")
    repo.commit({"infra/main.tf": MAIN_TF % 1})
    ws_id = conn.workspace(repo, **{"working-directory": "infra"})
    secret = hook_secret(forge, repo)
    sha = repo.commit({"docs/readme.md": "docs\n"})
    assert conn.send(webhook.gitlab_push(repo), secret) == 202
    assert status_of(forge, repo, sha, {"success", "failed"}).state == "success"
    assert site.runs(ws_id) == []
    assert forge.archive_fetches(repo.path, sha) == 0


def test_github_pat_push_runs(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    conn = connect(site, forge, "github")
    repo = repo_factory("octo")
    ws_id = conn.workspace(repo)
    secret = hook_secret(forge, repo)
    sha = repo.commit({"main.tf": MAIN_TF % 5})
    assert conn.send(webhook.github_push(repo), secret) == 202
    run = one_run(site, ws_id)
    assert site.wait_status(run["id"], {"applied", "errored"}) == "applied"
    assert status_of(forge, repo, sha, {"success", "failure"}).state == "success"


def test_github_app_push_runs(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    repo = repo_factory("octo")
    app = forge.add_github_app(app_id=str(secrets.randbelow(10**6) + 10**6))
    installation = forge.add_installation(app, account="octo", repos=(repo.path,))
    secret = secrets.token_urlsafe(24)
    attributes = {
        "service-provider": "github_enterprise",
        "http-url": forge.url,
        "api-url": forge.github_api_url,
        "app-id": app.app_id,
        "private-key": app.private_key_pem,
        "webhook-secret": secret,
        "name": "app e2e",
    }
    doc = tfe.document(
        site.api.post(
            f"/api/v2/organizations/{site.org}/oauth-clients",
            json={"data": {"type": "oauth-clients", "attributes": attributes}},
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )
    client_id = doc["data"]["id"]
    listed = tfe.document(site.api.get("/api/v2/github-app/installations"), 200)["data"]
    (ghain,) = [
        i["id"]
        for i in listed
        if i["attributes"]["installation-id"] == installation
        and i["attributes"]["oauth-client-id"] == client_id
    ]
    ws_id = site.workspace(
        f"app-{secrets.token_hex(3)}",
        **{
            "vcs-repo": {"identifier": repo.path, "github-app-installation-id": ghain},
            "auto-apply": True,
            "queue-all-runs": True,
        },
    )
    conn = Connected(site, client_id, "")
    sha = repo.commit({"main.tf": MAIN_TF % 6})
    assert conn.send(webhook.github_push(repo), secret) == 202
    run = one_run(site, ws_id)
    assert site.wait_status(run["id"], {"applied", "errored"}) == "applied"
    assert status_of(forge, repo, sha, {"success", "failure"}).state == "success"
    assert forge.installation_tokens(installation)  # the App minted an installation token


def test_no_secret_in_the_database_or_the_log(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    """After a connection, a webhook and a run: neither the PAT nor the webhook secret is in
    any text or bytes column (sqlite: the whole file's ``.dump``) or the server's log."""
    conn = connect(site, forge, "gitlab")
    repo = repo_factory("acme")
    ws_id = conn.workspace(repo)
    secret = hook_secret(forge, repo)
    repo.commit({"main.tf": MAIN_TF % 7})
    assert conn.send(webhook.gitlab_push(repo), secret) == 202
    run = one_run(site, ws_id)
    site.wait_status(run["id"], {"applied", "errored"})
    pats = {c.token for c in forge.calls(path_contains=repo.path.split("/")[1]) if c.token}
    assert pats
    server = site.server
    if server.database_url:
        text = dump_columns(server.database_url)
    else:
        (db_file,) = [p for p in server.data_dir.rglob("*.db")]
        text = subprocess.run(
            ["sqlite3", str(db_file), ".dump"], capture_output=True, text=True, check=True
        ).stdout
    log = server.log_path.read_text(errors="replace")
    for value in [secret, *pats]:
        assert value not in text
        assert value not in log


def test_merge_request_plan_gets_a_distinct_subject(
    site: Site,  # noqa: F811
    forge: Forge,
    repo_factory: Callable[[str], Repo],
) -> None:
    """With ``speculative-plan-credentials: distinct_subject`` a merge request's plan is given
    a workload-identity token whose subject says ``run_phase:speculative_plan`` (so trust
    policies written for ``run_phase:plan`` refuse it)."""
    conn = connect(site, forge, "gitlab")
    repo = repo_factory("acme")
    ws_id = conn.workspace(repo, **{"speculative-plan-credentials": "distinct_subject"})
    tfe.expect(
        site.api.post(
            f"/api/v2/workspaces/{ws_id}/vars",
            json={
                "data": {
                    "type": "vars",
                    "attributes": {
                        "key": "TFC_WORKLOAD_IDENTITY_AUDIENCE",
                        "value": "cairn.e2e",
                        "category": "env",
                    },
                }
            },
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )
    secret = hook_secret(forge, repo)
    repo.create_branch("feature")
    repo.commit({"main.tf": MAIN_TF % 8}, branch="feature")
    mr = forge.open_merge_request(repo, "feature")
    assert conn.send(webhook.gitlab_merge_request(mr, "open"), secret) == 202
    run = one_run(site, ws_id)
    assert site.wait_status(run["id"], {"planned_and_finished", "errored"}) == (
        "planned_and_finished"
    )
    trail = tfe.document(site.api.get("/api/cairn/v1/audit-events?page[size]=100"), 200)
    mints = [
        e["attributes"]
        for e in trail["data"]
        if e["attributes"]["action"] == "oidc.token.mint" and run["id"] in str(e["attributes"])
    ]
    assert mints, "the speculative plan was given no token"
    assert all(m["subject"].endswith(":run_phase:speculative_plan") for m in mints), mints
