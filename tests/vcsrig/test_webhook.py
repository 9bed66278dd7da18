"""Webhook deliveries match GitLab's and GitHub's shapes and a real repo of the forge."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.vcs import webhook
from tests.support.vcs.forge import Forge, Repo

pytestmark = pytest.mark.e2e

SECRET = "hook-secret-" + secrets.token_hex(4)


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A plain HTTP endpoint that records every POST and answers 202."""
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def _repo(forge: Forge) -> Repo:
    return forge.create_repo(f"acme/app-{secrets.token_hex(4)}", {"main.tf": "# v1\n"})


def _last(receiver: Receiver) -> tuple[dict[str, str], dict[str, Any], bytes]:
    headers, body = receiver.received[-1]
    return headers, json.loads(body), body


def test_github_signature_test_vector() -> None:
    # github/docs "Validating webhook deliveries": the documented secret and payload.
    assert webhook.github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_gitlab_push_lists_twenty_commits(forge: Forge, receiver: Receiver) -> None:
    repo = _repo(forge)
    before = repo.head()
    for i in range(25):
        repo.commit({f"app/{i}.tf": f"{i}\n"}, message=f"commit {i}")
    repo.commit({"main.tf": None, "other.tf": "x\n"}, message="swap")
    hook = webhook.gitlab_push(repo, before=before)
    resp = webhook.send(receiver.url, hook, SECRET)
    assert resp.status_code == 202
    headers, payload, _ = _last(receiver)
    assert headers["x-gitlab-event"] == "Push Hook"
    assert headers["x-gitlab-token"] == SECRET
    assert headers["idempotency-key"] == headers["x-gitlab-event-uuid"] == hook.delivery_id
    assert headers["user-agent"].startswith("GitLab/17.")
    assert payload["total_commits_count"] == 26
    assert [c["id"] for c in payload["commits"]] == repo.log(before, repo.head())[-20:]
    last = payload["commits"][-1]
    assert last["added"] == ["other.tf"] and last["removed"] == ["main.tf"]
    assert payload["after"] == repo.head() and payload["before"] == before
    assert payload["project"]["path_with_namespace"] == repo.path
    assert payload["project"]["id"] == repo.project_id
    webhook.send(receiver.url, hook, SECRET)  # a replay: same delivery id, same body
    assert receiver.received[-1] == receiver.received[-2]
    forged = webhook.send(receiver.url, hook, SECRET, bad_secret=True)
    assert forged.status_code == 202 and receiver.received[-1][0]["x-gitlab-token"] != SECRET


def test_gitlab_tag_and_merge_request_hooks(forge: Forge, receiver: Receiver) -> None:
    repo = _repo(forge)
    commit = repo.tag("v1.2.0", message="release 1.2.0")
    webhook.send(receiver.url, webhook.gitlab_tag_push(repo, "v1.2.0"), SECRET)
    headers, payload, _ = _last(receiver)
    assert headers["x-gitlab-event"] == "Tag Push Hook"
    assert payload["ref"] == "refs/tags/v1.2.0" and payload["checkout_sha"] == commit
    assert payload["after"] != commit  # an annotated tag: the tag object
    fork = repo.fork(f"alice/app-{secrets.token_hex(3)}")
    fork.create_branch("fix")
    first = fork.commit({"fix.tf": "1\n"}, branch="fix")
    mr = forge.open_merge_request(repo, "fix", source_repo=fork)
    webhook.send(receiver.url, webhook.gitlab_merge_request(mr, "open"), SECRET)
    _, opened, _ = _last(receiver)
    attrs = opened["object_attributes"]
    assert attrs["action"] == "open" and attrs["last_commit"]["id"] == first
    assert attrs["source_project_id"] == fork.project_id != attrs["target_project_id"]
    assert "oldrev" not in attrs
    second = fork.commit({"fix.tf": "2\n"}, branch="fix")
    webhook.send(receiver.url, webhook.gitlab_merge_request(mr, "update", oldrev=first), SECRET)
    _, updated, _ = _last(receiver)
    assert updated["object_attributes"]["oldrev"] == first
    assert updated["object_attributes"]["last_commit"]["id"] == second
    forge.close_merge_request(mr, merged=True)
    webhook.send(receiver.url, webhook.gitlab_merge_request(mr, "merge"), SECRET)
    _, merged, _ = _last(receiver)
    assert merged["object_attributes"]["state"] == "merged"
    assert repo.head() == second


def _no_sample_left(body: bytes) -> None:
    text = body.decode()
    assert "Codertocat/Hello-World" not in text
    assert "https://github.com" not in text and "https://api.github.com" not in text


def _verify(headers: dict[str, str], body: bytes) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-hub-signature-256"], expected)


def test_github_push_from_the_examples(forge: Forge, receiver: Receiver) -> None:
    repo = _repo(forge)
    before = repo.head()
    after = repo.commit({"mod/x.tf": "x\n"}, message="add x")
    webhook.send(receiver.url, webhook.github_push(repo, installation_id=42), SECRET)
    headers, payload, body = _last(receiver)
    _verify(headers, body)
    assert headers["x-github-event"] == "push" and headers["x-github-delivery"]
    assert payload["ref"] == f"refs/heads/{repo.default_branch}"
    assert (payload["before"], payload["after"]) == (before, after)
    assert payload["head_commit"]["id"] == after and payload["commits"][0]["added"] == ["mod/x.tf"]
    assert payload["repository"]["full_name"] == repo.path
    assert payload["repository"]["default_branch"] == repo.default_branch
    assert payload["installation"] == {"id": 42}
    _no_sample_left(body)
    repo.tag("v2")
    webhook.send(receiver.url, webhook.github_tag_push(repo, "v2"), SECRET)
    _, tag, tag_body = _last(receiver)
    assert tag["ref"] == "refs/tags/v2" and tag["head_commit"]["id"] == after
    assert "installation" not in tag
    _no_sample_left(tag_body)


def test_github_pull_request_and_ping(forge: Forge, receiver: Receiver) -> None:
    repo = _repo(forge)
    repo.create_branch("feat")
    first = repo.commit({"feat.tf": "1\n"}, branch="feat")
    pr = forge.open_merge_request(repo, "feat")
    webhook.send(receiver.url, webhook.github_pull_request(pr, "opened"), SECRET)
    headers, opened, body = _last(receiver)
    _verify(headers, body)
    assert opened["action"] == "opened" and opened["number"] == pr.number
    assert opened["pull_request"]["head"]["sha"] == first
    assert opened["pull_request"]["head"]["repo"]["full_name"] == repo.path
    assert opened["pull_request"]["changed_files"] == 1
    _no_sample_left(body)
    second = repo.commit({"feat.tf": "2\n"}, branch="feat")
    webhook.send(receiver.url, webhook.github_pull_request(pr, "synchronize", before=first), SECRET)
    _, sync, _ = _last(receiver)
    assert (sync["before"], sync["after"]) == (first, second)
    forge.close_merge_request(pr, merged=True)
    webhook.send(receiver.url, webhook.github_pull_request(pr, "closed", merged=True), SECRET)
    _, closed, _ = _last(receiver)
    assert closed["pull_request"]["merged"] is True and closed["pull_request"]["state"] == "closed"
    webhook.send(receiver.url, webhook.github_ping(repo, hook_id=7), SECRET)
    headers, ping, body = _last(receiver)
    assert headers["x-github-event"] == "ping" and ping["hook_id"] == 7
    assert ping["repository"]["full_name"] == repo.path
