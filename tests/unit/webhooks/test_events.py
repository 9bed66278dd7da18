"""Normalising GitLab and GitHub payloads (webhooks/events.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cairn.webhooks.events import ZERO_SHA, PayloadInvalid, parse
from cairn.webhooks.model import DeliveryFailed

SHA = "a" * 40
OLD = "b" * 40


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def gitlab_push(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": OLD,
        "after": SHA,
        "checkout_sha": SHA,
        "user_username": "alice",
        "project": {
            "path_with_namespace": "grp/infra",
            "default_branch": "main",
            "git_http_url": "https://gl.example/grp/infra.git",
            "web_url": "https://gl.example/grp/infra",
        },
        "commits": [
            {"id": OLD, "message": "one", "added": ["a.tf"], "modified": [], "removed": []},
            {
                "id": SHA,
                "message": "two",
                "url": "https://gl.example/c/2",
                "added": [],
                "modified": ["net/b.tf", "a.tf"],
                "removed": ["old.tf"],
            },
        ],
        "total_commits_count": 2,
    }
    payload.update(over)
    return payload


def github_pr(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": "opened",
        "number": 7,
        "pull_request": {
            "html_url": "https://gh.example/o/r/pull/7",
            "title": "Add a bucket",
            "body": "please",
            "head": {"sha": SHA, "ref": "feature", "repo": {"full_name": "o/r"}},
            "base": {
                "ref": "main",
                "repo": {"full_name": "o/r", "default_branch": "main", "clone_url": "u"},
            },
        },
        "sender": {"login": "bob", "avatar_url": "av", "html_url": "hu"},
    }
    payload.update(over)
    return payload


def test_gitlab_push_lists_files_once_in_order() -> None:
    e = parse("gitlab", "Push Hook", _body(gitlab_push()))
    assert e is not None
    assert (e.kind, e.repo, e.branch, e.sha, e.before) == ("push", "grp/infra", "main", SHA, OLD)
    assert e.changed_files == ("a.tf", "net/b.tf", "old.tf")
    assert e.default_branch == "main" and e.sender == "alice" and not e.deleted
    assert e.commit_message == "two" and e.commit_url == "https://gl.example/c/2"
    assert e.compare_url == f"https://gl.example/grp/infra/-/compare/{OLD}...{SHA}"


def test_gitlab_push_over_twenty_commits_has_unknown_files() -> None:
    e = parse("gitlab", "Push Hook", _body(gitlab_push(total_commits_count=21)))
    assert e is not None and e.changed_files is None


def test_gitlab_branch_deletion() -> None:
    e = parse("gitlab", "Push Hook", _body(gitlab_push(after=ZERO_SHA, checkout_sha=None)))
    assert e is not None and e.deleted and e.changed_files is None


def test_gitlab_annotated_tag_uses_the_commit() -> None:
    payload = gitlab_push(ref="refs/tags/v1.2.0", after="c" * 40, commits=[])
    e = parse("gitlab", "Tag Push Hook", _body(payload))
    assert e is not None
    assert (e.kind, e.tag, e.branch, e.sha) == ("tag", "v1.2.0", None, SHA)


def test_gitlab_tag_hook_with_branch_ref_is_invalid() -> None:
    with pytest.raises(PayloadInvalid, match="unexpected ref"):
        parse("gitlab", "Tag Push Hook", _body(gitlab_push()))


def _gitlab_mr(action: str, *, oldrev: str | None = None, fork: bool = False) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "iid": 3,
        "action": action,
        "source_branch": "feature",
        "target_branch": "main",
        "source_project_id": 9 if fork else 1,
        "target_project_id": 1,
        "last_commit": {"id": SHA, "message": "wip", "url": "cu"},
        "url": "https://gl.example/grp/infra/-/merge_requests/3",
        "title": "T",
        "description": "D",
    }
    if oldrev:
        attrs["oldrev"] = oldrev
    return {
        "object_kind": "merge_request",
        "user": {"username": "carol"},
        "project": {"path_with_namespace": "grp/infra", "default_branch": "main"},
        "object_attributes": attrs,
    }


@pytest.mark.parametrize(
    ("action", "oldrev", "expected"),
    [
        ("open", None, "opened"),
        ("reopen", None, "reopened"),
        ("update", OLD, "synchronize"),
        ("update", None, "update"),
        ("close", None, "close"),
    ],
)
def test_gitlab_mr_actions(action: str, oldrev: str | None, expected: str) -> None:
    e = parse("gitlab", "Merge Request Hook", _body(_gitlab_mr(action, oldrev=oldrev)))
    assert e is not None and e.action == expected


def test_gitlab_mr_fields_and_fork() -> None:
    e = parse("gitlab", "Merge Request Hook", _body(_gitlab_mr("open")))
    assert e is not None and e.is_pull_request and not e.is_fork
    assert (e.pr_number, e.branch, e.pr_head_branch, e.sha) == (3, "main", "feature", SHA)
    assert e.changed_files is None and e.sender == "carol" and e.pr_title == "T"
    f = parse("gitlab", "Merge Request Hook", _body(_gitlab_mr("open", fork=True)))
    assert f is not None and f.is_fork


def test_gitlab_mr_without_project_ids_is_invalid() -> None:
    payload = _gitlab_mr("open")
    del payload["object_attributes"]["source_project_id"]
    with pytest.raises(PayloadInvalid, match="source_project_id"):
        parse("gitlab", "Merge Request Hook", _body(payload))


def test_github_push_and_tag() -> None:
    payload = {
        "ref": "refs/heads/dev",
        "before": OLD,
        "after": SHA,
        "repository": {"full_name": "o/r", "default_branch": "main", "clone_url": "cl"},
        "commits": [{"id": SHA, "added": ["x.tf"], "modified": [], "removed": []}],
        "head_commit": {"id": SHA, "message": "m", "url": "hu"},
        "sender": {"login": "bob"},
        "compare": "cmp",
    }
    e = parse("github", "push", _body(payload))
    assert e is not None
    assert (e.kind, e.branch, e.repo, e.default_branch) == ("push", "dev", "o/r", "main")
    assert e.changed_files == ("x.tf",) and e.commit_message == "m" and e.compare_url == "cmp"
    tag = parse("github", "push", _body({**payload, "ref": "refs/tags/v2", "after": "c" * 40}))
    assert tag is not None and (tag.kind, tag.tag, tag.sha) == ("tag", "v2", SHA)


def test_github_push_with_too_many_files_or_partial_commits_is_unknown() -> None:
    many = [{"id": SHA, "added": [f"f{i}.tf" for i in range(300)], "modified": [], "removed": []}]
    base = {"ref": "refs/heads/main", "after": SHA, "repository": {"full_name": "o/r"}}
    e = parse("github", "push", _body({**base, "commits": many}))
    assert e is not None and e.changed_files is None
    partial = [{"id": SHA, "added": ["a"]}]  # a commit without its modified/removed lists
    e = parse("github", "push", _body({**base, "commits": partial}))
    assert e is not None and e.changed_files is None
    deleted = parse("github", "push", _body({**base, "deleted": True, "after": ZERO_SHA}))
    assert deleted is not None and deleted.deleted


def test_github_pull_request_same_repo_and_fork() -> None:
    e = parse("github", "pull_request", _body(github_pr()))
    assert e is not None and e.kind == "pull_request" and not e.is_fork
    assert (e.pr_number, e.action, e.branch, e.sha, e.repo) == (7, "opened", "main", SHA, "o/r")
    assert (e.pr_url, e.pr_title, e.pr_body) == (
        "https://gh.example/o/r/pull/7",
        "Add a bucket",
        "please",
    )
    fork = github_pr()
    fork["pull_request"]["head"]["repo"] = {"full_name": "mallory/r"}
    e = parse("github", "pull_request", _body(fork))
    assert e is not None and e.is_fork
    gone = github_pr()
    gone["pull_request"]["head"]["repo"] = None  # the fork was deleted
    e = parse("github", "pull_request", _body(gone))
    assert e is not None and e.is_fork


def test_github_ping_and_other_events() -> None:
    e = parse("github", "ping", _body({"zen": "z", "repository": {"full_name": "o/r"}}))
    assert e is not None and e.kind == "ping" and e.repo == "o/r"
    assert parse("github", "issues", _body({"action": "opened"})) is None
    assert parse("gitlab", "Note Hook", _body({})) is None


@pytest.mark.parametrize(
    ("provider", "event", "body", "message"),
    [
        ("gitlab", "Push Hook", b"{not json", "not JSON"),
        ("gitlab", "Push Hook", b"[1]", "not a JSON object"),
        ("gitlab", "Push Hook", b"{}", "ref"),
        ("github", "push", _body({"ref": "refs/heads/m", "after": SHA}), "repository"),
        ("github", "pull_request", _body({"action": "opened", "pull_request": {}}), "head"),
        (
            "github",
            "push",
            _body(
                {
                    "ref": "refs/heads/m",
                    "after": SHA,
                    "repository": {"full_name": "o/r"},
                    "commits": [{"added": "x", "modified": [], "removed": []}],
                }
            ),
            "commits",
        ),
    ],
)
def test_malformed_payloads_fail_the_delivery(
    provider: str, event: str, body: bytes, message: str
) -> None:
    with pytest.raises(DeliveryFailed, match=message):
        parse(provider, event, body)
