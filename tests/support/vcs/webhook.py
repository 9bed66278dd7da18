"""Webhook deliveries as GitLab and GitHub send them, built from a real repo of the fake forge.

GitLab payloads follow GitLab's documented push / tag push / merge request hook fields and
headers (``X-Gitlab-Token``, ``X-Gitlab-Event``, ``X-Gitlab-Event-UUID``,
``X-Gitlab-Webhook-UUID``, ``Idempotency-Key``). GitHub payloads start from the examples GitHub
publishes (npm ``@octokit/webhooks-examples``, read from node_modules) and are patched to the
forge's repository, shas, refs and files, then signed (``X-Hub-Signature-256``). Building and
sending are separate so that a test can replay a delivery or tamper with it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.support.vcs.forge import MergeRequest, Repo
from tests.support.vcs.gitlab_op import OP_DIR
from tests.support.vcs.gitrepo import ZERO_SHA

EXAMPLES = OP_DIR / "node_modules" / "@octokit" / "webhooks-examples" / "api.github.com"
GITLAB_USER_AGENT = "GitLab/17.5.0"
GITHUB_USER_AGENT = "GitHub-Hookshot/4b3f4a1"
GITLAB_PUSH_COMMITS = 20  # GitLab lists at most 20 commits; total_commits_count has them all
GITHUB_PUSH_COMMITS = 2048

__all__ = [
    "ZERO_SHA",
    "Webhook",
    "github_ping",
    "github_pull_request",
    "github_push",
    "github_signature",
    "github_tag_push",
    "gitlab_merge_request",
    "gitlab_push",
    "gitlab_tag_push",
    "send",
]


@dataclass
class Webhook:
    """One delivery: the event name, the JSON payload and its delivery id."""

    provider: str  # gitlab | github
    event: str  # X-Gitlab-Event ("Push Hook", ...) or X-GitHub-Event ("push", ...)
    payload: dict[str, Any] = field(repr=False)
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    hook_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    instance: str = ""  # GitLab's X-Gitlab-Instance (the forge's URL)

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def headers(self, secret: str, body: bytes) -> dict[str, str]:
        if self.provider == "gitlab":
            return {
                "Content-Type": "application/json",
                "User-Agent": GITLAB_USER_AGENT,
                "X-Gitlab-Event": self.event,
                "X-Gitlab-Token": secret,
                "X-Gitlab-Event-UUID": self.delivery_id,
                "X-Gitlab-Webhook-UUID": self.hook_id,
                "X-Gitlab-Instance": self.instance,
                "Idempotency-Key": self.delivery_id,
            }
        sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        return {
            "Content-Type": "application/json",
            "User-Agent": GITHUB_USER_AGENT,
            "X-GitHub-Event": self.event,
            "X-GitHub-Delivery": self.delivery_id,
            "X-GitHub-Hook-ID": str(abs(hash(self.hook_id)) % 10**9),
            "X-Hub-Signature": f"sha1={sha1}",
            "X-Hub-Signature-256": github_signature(secret, body),
        }


def github_signature(secret: str, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256``: HMAC-SHA256 of the raw body, hex, ``sha256=`` prefix."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(
    url: str,
    hook: Webhook,
    secret: str,
    *,
    bad_secret: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """POST the delivery like the forge does (``bad_secret``: token/signature of another secret).
    Sending the same ``Webhook`` again is a replay: same body, same delivery id."""
    body = hook.body()
    used = secret + "-forged" if bad_secret else secret
    all_headers = {**hook.headers(used, body), **(headers or {})}
    return httpx.post(url, content=body, headers=all_headers, timeout=timeout)


# ---- GitLab ------------------------------------------------------------------------------------
def _gl_project(repo: Repo) -> dict[str, Any]:
    return {
        "id": repo.project_id,
        "name": repo.name,
        "description": None,
        "web_url": repo.web_url,
        "avatar_url": None,
        "git_ssh_url": f"git@{repo.forge.url.split('//', 1)[1]}:{repo.path}.git",
        "git_http_url": repo.clone_url,
        "namespace": repo.namespace,
        "visibility_level": 0 if repo.private else 20,
        "path_with_namespace": repo.path,
        "default_branch": repo.default_branch,
        "homepage": repo.web_url,
        "url": repo.clone_url,
        "ssh_url": f"git@{repo.forge.url.split('//', 1)[1]}:{repo.path}.git",
        "http_url": repo.clone_url,
    }


def _gl_repository(repo: Repo) -> dict[str, Any]:
    return {
        "name": repo.name,
        "url": repo.clone_url,
        "description": None,
        "homepage": repo.web_url,
        "git_http_url": repo.clone_url,
        "git_ssh_url": _gl_project(repo)["git_ssh_url"],
        "visibility_level": 0 if repo.private else 20,
    }


def _gl_commit(repo: Repo, sha: str) -> dict[str, Any]:
    info = repo.git.commit_info(sha)
    message = str(info["message"])
    changes = repo.git.commit_files(sha)
    return {
        "id": sha,
        "message": message + "\n",
        "title": message.splitlines()[0] if message else "",
        "timestamp": info["authored_date"],
        "url": f"{repo.web_url}/-/commit/{sha}",
        "author": {"name": info["author_name"], "email": info["author_email"]},
        "added": [p for s, p, _ in changes if s in ("A", "R")],
        "modified": [p for s, p, _ in changes if s == "M"],
        "removed": [p for s, p, _ in changes if s == "D"]
        + [old for s, _, old in changes if s == "R" and old],
    }


def _gl_user(user: str) -> dict[str, Any]:
    return {
        "user_id": 1,
        "user_name": user.title(),
        "user_username": user,
        "user_email": "",
        "user_avatar": None,
    }


def _push_range(
    repo: Repo, ref: str, before: str | None, after: str | None
) -> tuple[str, str, list[str]]:
    after = after or repo.head(ref)
    if after == ZERO_SHA:  # the branch was deleted
        return before or ZERO_SHA, after, []
    if before is None:
        parents = repo.git.commit_info(after)["parents"]
        before = parents[0] if parents else ZERO_SHA
    return before, after, repo.log(None if before == ZERO_SHA else before, after)


def gitlab_push(
    repo: Repo,
    *,
    branch: str | None = None,
    before: str | None = None,
    after: str | None = None,
    user: str = "alice",
) -> Webhook:
    """A Push Hook for ``before..after`` on ``branch`` (newest commits last, ≤ 20 listed)."""
    branch = branch or repo.default_branch
    before, after, shas = _push_range(repo, branch, before, after)
    listed = shas[-GITLAB_PUSH_COMMITS:]
    payload = {
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": f"refs/heads/{branch}",
        "ref_protected": branch == repo.default_branch,
        "checkout_sha": None if after == ZERO_SHA else after,
        "message": None,
        **_gl_user(user),
        "project_id": repo.project_id,
        "project": _gl_project(repo),
        "commits": [_gl_commit(repo, sha) for sha in listed],
        "total_commits_count": len(shas),
        "push_options": {},
        "repository": _gl_repository(repo),
    }
    return Webhook("gitlab", "Push Hook", payload, instance=repo.forge.url)


def gitlab_tag_push(
    repo: Repo, tag: str, *, before: str = ZERO_SHA, user: str = "alice"
) -> Webhook:
    """A Tag Push Hook for a new tag (``after`` is the tag object for annotated tags)."""
    tag_ref = f"refs/tags/{tag}"
    after = repo.git.run("rev-parse", tag_ref).decode().strip()
    checkout = repo.head(tag_ref)
    payload = {
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": before,
        "after": after,
        "ref": tag_ref,
        "ref_protected": False,
        "checkout_sha": checkout,
        "message": None,
        **_gl_user(user),
        "project_id": repo.project_id,
        "project": _gl_project(repo),
        "commits": [_gl_commit(repo, checkout)],
        "total_commits_count": 1,
        "push_options": {},
        "repository": _gl_repository(repo),
    }
    return Webhook("gitlab", "Tag Push Hook", payload, instance=repo.forge.url)


def gitlab_merge_request(
    mr: MergeRequest, action: str = "open", *, oldrev: str | None = None, user: str = "alice"
) -> Webhook:
    """A Merge Request Hook. ``action``: open | reopen | update | close | merge; an ``update``
    with new commits carries ``oldrev`` (the previous head)."""
    if action not in ("open", "reopen", "update", "close", "merge"):
        raise ValueError(f"unknown merge request action {action}")
    state = {"close": "closed", "merge": "merged"}.get(action, "opened")
    head = mr.head_sha
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    attributes: dict[str, Any] = {
        "id": mr.repo.project_id * 1000 + mr.number,
        "iid": mr.number,
        "title": mr.title,
        "description": "",
        "state": state,
        "action": action,
        "merge_status": "can_be_merged",
        "detailed_merge_status": "mergeable",
        "source_branch": mr.source_branch,
        "target_branch": mr.target_branch,
        "source_project_id": mr.source_repo.project_id,
        "target_project_id": mr.repo.project_id,
        "source": _gl_project(mr.source_repo),
        "target": _gl_project(mr.repo),
        "last_commit": _gl_commit(mr.source_repo, head),
        "url": f"{mr.repo.web_url}/-/merge_requests/{mr.number}",
        "merge_commit_sha": mr.merge_sha if action == "merge" else None,
        "work_in_progress": False,
        "draft": False,
        "created_at": now,
        "updated_at": now,
    }
    if oldrev is not None:
        attributes["oldrev"] = oldrev
    payload = {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": user.title(), "username": user, "email": "[REDACTED]"},
        "project": _gl_project(mr.repo),
        "object_attributes": attributes,
        "labels": [],
        "changes": {"updated_at": {"previous": now, "current": now}},
        "repository": _gl_repository(mr.repo),
    }
    return Webhook("gitlab", "Merge Request Hook", payload, instance=mr.repo.forge.url)


# ---- GitHub ------------------------------------------------------------------------------------
@functools.cache
def _examples() -> dict[str, list[dict[str, Any]]]:
    with open(EXAMPLES / "index.json", encoding="utf-8") as fh:
        index = json.load(fh)
    return {entry["name"]: entry["examples"] for entry in index}


def _example(event: str, match: dict[str, Any]) -> dict[str, Any]:
    for example in _examples()[event]:
        if all(example.get(k) == v for k, v in match.items()):
            return copy.deepcopy(example)
    raise KeyError(f"no {event} example matching {match}")


def _rewrite(value: Any, repo: Repo, sample: str) -> Any:
    """Point every GitHub URL and the sample repo's name at the forge's repository."""
    if isinstance(value, dict):
        return {k: _rewrite(v, repo, sample) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, repo, sample) for v in value]
    if isinstance(value, str):
        value = value.replace("https://api.github.com", repo.forge.github_api_url)
        value = value.replace("https://github.com", repo.forge.url)
        return value.replace(sample, repo.path)
    return value


def _gh_repository(repo: Repo, template: dict[str, Any]) -> dict[str, Any]:
    sample = template["full_name"]
    out: dict[str, Any] = _rewrite(template, repo, sample)
    out.update(
        id=repo.github_id,
        name=repo.name,
        full_name=repo.path,
        private=repo.private,
        default_branch=repo.default_branch,
        html_url=repo.web_url,
        clone_url=repo.clone_url,
        fork=repo.forked_from is not None,
    )
    if "master_branch" in out:
        out["master_branch"] = repo.default_branch
    out["owner"] = {**out.get("owner", {}), "login": repo.namespace, "name": repo.namespace}
    return out


def _gh_common(
    payload: dict[str, Any], repo: Repo, installation_id: int | None, user: str
) -> dict[str, Any]:
    payload = _rewrite(payload, repo, payload["repository"]["full_name"])
    payload["repository"] = _gh_repository(repo, payload["repository"])
    payload["sender"] = {**payload.get("sender", {}), "login": user, "type": "User"}
    if installation_id is None:
        payload.pop("installation", None)
    else:
        payload["installation"] = {"id": installation_id}
    return payload


def _gh_commit(repo: Repo, sha: str) -> dict[str, Any]:
    info = repo.git.commit_info(sha)
    changes = repo.git.commit_files(sha)
    who = {"name": info["author_name"], "email": info["author_email"]}
    return {
        "id": sha,
        "tree_id": repo.git.run("rev-parse", f"{sha}^{{tree}}").decode().strip(),
        "distinct": True,
        "message": info["message"],
        "timestamp": info["authored_date"],
        "url": f"{repo.web_url}/commit/{sha}",
        "author": {**who, "username": info["author_name"]},
        "committer": who,
        "added": [p for s, p, _ in changes if s in ("A", "R")],
        "removed": [p for s, p, _ in changes if s == "D"]
        + [old for s, _, old in changes if s == "R" and old],
        "modified": [p for s, p, _ in changes if s == "M"],
    }


def github_push(
    repo: Repo,
    *,
    branch: str | None = None,
    before: str | None = None,
    after: str | None = None,
    installation_id: int | None = None,
    user: str = "alice",
) -> Webhook:
    """A ``push`` to ``branch`` for ``before..after``."""
    branch = branch or repo.default_branch
    before, after, shas = _push_range(repo, branch, before, after)
    payload = _gh_common(
        _example("push", {"ref": "refs/heads/master", "created": True}), repo, installation_id, user
    )
    commits = [_gh_commit(repo, sha) for sha in shas[-GITHUB_PUSH_COMMITS:]]
    payload.update(
        ref=f"refs/heads/{branch}",
        before=before,
        after=after,
        created=before == ZERO_SHA,
        deleted=after == ZERO_SHA,
        forced=False,
        base_ref=None,
        compare=f"{repo.web_url}/compare/{before[:12]}...{after[:12]}",
        commits=commits,
        head_commit=commits[-1] if commits else None,
        pusher={"name": user, "email": f"{user}@example.test"},
    )
    return Webhook("github", "push", payload)


def github_tag_push(
    repo: Repo, tag: str, *, installation_id: int | None = None, user: str = "alice"
) -> Webhook:
    """A ``push`` creating ``refs/tags/<tag>``."""
    tag_ref = f"refs/tags/{tag}"
    after = repo.git.run("rev-parse", tag_ref).decode().strip()
    commit = _gh_commit(repo, repo.head(tag_ref))
    payload = _gh_common(
        _example("push", {"ref": "refs/tags/simple-tag", "created": True}),
        repo,
        installation_id,
        user,
    )
    payload.update(
        ref=tag_ref,
        before=ZERO_SHA,
        after=after,
        created=True,
        deleted=False,
        base_ref=f"refs/heads/{repo.default_branch}",
        compare=f"{repo.web_url}/compare/{tag}",
        commits=[],
        head_commit=commit,
        pusher={"name": user, "email": f"{user}@example.test"},
    )
    return Webhook("github", "push", payload)


def github_pull_request(
    mr: MergeRequest,
    action: str = "opened",
    *,
    merged: bool = False,
    before: str | None = None,
    installation_id: int | None = None,
    user: str = "alice",
) -> Webhook:
    """A ``pull_request`` event (opened | reopened | synchronize | closed, ``merged`` for a
    merge); ``synchronize`` carries ``before`` (the previous head) and ``after``."""
    if action not in ("opened", "reopened", "synchronize", "closed"):
        raise ValueError(f"unsupported pull_request action {action}")
    template = _example("pull_request", {"action": action})
    payload = _gh_common(copy.deepcopy(template), mr.repo, installation_id, user)
    head = mr.head_sha
    pr: dict[str, Any] = payload["pull_request"]
    changed = mr.changed_files()
    pr.update(
        number=mr.number,
        state="closed" if action == "closed" else "open",
        title=mr.title,
        html_url=f"{mr.repo.web_url}/pull/{mr.number}",
        url=f"{mr.repo.forge.github_api_url}/repos/{mr.repo.path}/pulls/{mr.number}",
        merged=merged,
        merge_commit_sha=mr.merge_sha if merged else None,
        changed_files=len(changed),
        commits=len(mr.repo.git.log(mr.base_sha, head)),
        user={**pr.get("user", {}), "login": user},
    )
    pr["head"] = {
        "label": f"{mr.source_repo.namespace}:{mr.source_branch}",
        "ref": mr.source_branch,
        "sha": head,
        "user": {"login": mr.source_repo.namespace},
        "repo": _gh_repository(mr.source_repo, template["pull_request"]["head"]["repo"]),
    }
    pr["base"] = {
        "label": f"{mr.repo.namespace}:{mr.target_branch}",
        "ref": mr.target_branch,
        "sha": mr.repo.head(mr.target_branch) if not merged else mr.base_sha,
        "user": {"login": mr.repo.namespace},
        "repo": _gh_repository(mr.repo, template["pull_request"]["base"]["repo"]),
    }
    payload["pull_request"] = pr
    payload["number"] = mr.number
    if action == "synchronize":
        payload["before"] = before or mr.base_sha
        payload["after"] = head
    else:
        payload.pop("before", None)
        payload.pop("after", None)
    return Webhook("github", "pull_request", payload)


def github_ping(
    repo: Repo, *, hook_id: int = 1, installation_id: int | None = None, user: str = "alice"
) -> Webhook:
    """The ``ping`` GitHub sends when a hook is created."""
    template = next(e for e in _examples()["ping"] if "repository" in e)
    payload = _gh_common(copy.deepcopy(template), repo, installation_id, user)
    payload["hook_id"] = hook_id
    payload["hook"] = {**payload.get("hook", {}), "id": hook_id}
    return Webhook("github", "ping", payload)
