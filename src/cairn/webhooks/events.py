"""One shape for what GitLab and GitHub tell cairn: :class:`VcsEvent`, parsed from a verified
delivery's raw body.

What the forges send differs in names, not in meaning (reference runs-agents-vcs.md §4.1-4.2):

=================  ===============================  ======================================
                   GitLab                           GitHub
=================  ===============================  ======================================
push               ``Push Hook`` (``object_kind``   ``push`` with ``refs/heads/…``
                   ``push``)
tag                ``Tag Push Hook`` (``tag_push``)  ``push`` with ``refs/tags/…``
change request     ``Merge Request Hook``           ``pull_request``
repository         ``project.path_with_namespace``  ``repository.full_name``
changed files      ``commits[].added/modified/      ``commits[].added/modified/removed``
                   removed``; only the first 20     (≤ 2048 commits; the list may be partial,
                   commits: ``total_commits_count`` so a full list is trusted only below
                   > 20 → unknown                   ``MAX_GITHUB_FILES``)
fork               ``source_project_id !=           ``head.repo.full_name !=
                   target_project_id``              base.repo.full_name`` or no ``head.repo``
new commits on a   ``action: update`` with          ``action: synchronize``
change request     ``oldrev``
=================  ===============================  ======================================

``changed_files`` is ``None`` whenever the payload cannot say which files changed (too many
commits, a new branch whose commits were already known, a change request — whose hook carries no
files): the ingest then asks the forge's compare / changes API, and if that cannot say either,
every matching workspace runs (HCP's rule: no list → run).

A payload that lacks a field cairn needs raises :class:`PayloadInvalid`, a
:class:`~cairn.webhooks.model.DeliveryFailed`: the delivery fails once with an outcome naming the
field, never a 500 and never a retry (a malformed body does not heal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cairn.webhooks.model import DeliveryFailed

ZERO_SHA: Final = "0" * 40
GITLAB_MAX_COMMITS: Final = 20  # GitLab's push hook lists only the first 20 commits
# GitHub lists at most 2048 commits in a push; HCP runs every workspace when a change has 300
# files or more (GitHub's limit on listed files), so a list that long is treated as unknown.
GITHUB_MAX_COMMITS: Final = 2048
MAX_GITHUB_FILES: Final = 300
MAX_TEXT: Final = 4096  # characters of a title/body/message kept (ingress attributes)

# Normalised change-request actions (``VcsEvent.action`` for kind ``pull_request``).
OPENED: Final = "opened"
REOPENED: Final = "reopened"
SYNCHRONIZE: Final = "synchronize"  # new commits pushed to the change request


class PayloadInvalid(DeliveryFailed):
    """Raised when a delivery's body is not the JSON the forge documents for its event (a
    missing or mistyped field): the delivery fails at once with this message."""


@dataclass(frozen=True)
class VcsEvent:
    """A push, tag or change request, whatever the forge. ``branch`` is the pushed branch or,
    for a change request, its *target* branch; ``sha`` is the commit to plan (the pushed head,
    the tag's commit, the change request's head)."""

    provider: str  # gitlab | github
    kind: str  # push | tag | pull_request | ping
    repo: str  # group/project (GitLab) or owner/repo (GitHub)
    default_branch: str | None
    sha: str
    branch: str | None = None
    tag: str | None = None
    before: str | None = None
    changed_files: tuple[str, ...] | None = None
    deleted: bool = False
    action: str | None = None  # pull_request: opened | reopened | synchronize | the forge's own
    pr_number: int | None = None
    pr_url: str | None = None
    pr_title: str | None = None
    pr_body: str | None = None
    pr_head_branch: str | None = None
    is_fork: bool = False
    sender: str | None = None
    sender_avatar_url: str | None = None
    sender_html_url: str | None = None
    commit_message: str | None = None
    commit_url: str | None = None
    clone_url: str | None = None
    compare_url: str | None = None

    @property
    def is_pull_request(self) -> bool:
        return self.kind == "pull_request"


def parse(provider: str, event: str, body: bytes) -> VcsEvent | None:
    """The normalised event of a delivery, or ``None`` for an event cairn does not act on."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadInvalid("the delivery's body is not JSON") from None
    if not isinstance(payload, dict):
        raise PayloadInvalid("the delivery's body is not a JSON object")
    if provider == "gitlab":
        return _gitlab(event, payload)
    if provider == "github":
        return _github(event, payload)
    raise PayloadInvalid(f"unknown provider {provider!r}")


# --- GitLab ------------------------------------------------------------------------------------


def _gitlab(event: str, p: Mapping[str, Any]) -> VcsEvent | None:
    if event in ("Push Hook", "Tag Push Hook"):
        return _gitlab_push(p, tag=event == "Tag Push Hook")
    if event == "Merge Request Hook":
        return _gitlab_mr(p)
    return None


def _gitlab_push(p: Mapping[str, Any], *, tag: bool) -> VcsEvent:
    ref = _str(p, "ref")
    project = _obj(p, "project")
    after = _str(p, "after")
    deleted = after == ZERO_SHA
    # For an annotated tag ``after`` is the tag object; ``checkout_sha`` is its commit.
    sha = _opt_str(p, "checkout_sha") or after
    branch, tag_name = _split_ref(ref, tag)
    commits = _list(p, "commits")
    total = p.get("total_commits_count")
    files: tuple[str, ...] | None
    if deleted or not commits or (isinstance(total, int) and total > GITLAB_MAX_COMMITS):
        files = None
    else:
        files = _commit_files(commits)
    head = _head_commit(commits, sha)
    return VcsEvent(
        provider="gitlab",
        kind="tag" if tag_name is not None else "push",
        repo=_str(project, "path_with_namespace"),
        default_branch=_opt_str(project, "default_branch"),
        sha=sha,
        branch=branch,
        tag=tag_name,
        before=_opt_str(p, "before"),
        changed_files=files,
        deleted=deleted,
        sender=_opt_str(p, "user_username"),
        sender_avatar_url=_opt_str(p, "user_avatar"),
        commit_message=_clip(_opt_str(head, "message")) if head else None,
        commit_url=_opt_str(head, "url") if head else None,
        clone_url=_opt_str(project, "git_http_url"),
        compare_url=_gitlab_compare(project, p),
    )


def _gitlab_compare(project: Mapping[str, Any], p: Mapping[str, Any]) -> str | None:
    web = _opt_str(project, "web_url")
    before, after = _opt_str(p, "before"), _opt_str(p, "after")
    if not web or not before or not after or ZERO_SHA in (before, after):
        return None
    return f"{web}/-/compare/{before}...{after}"


def _gitlab_mr(p: Mapping[str, Any]) -> VcsEvent:
    attrs = _obj(p, "object_attributes")
    project = _obj(p, "project")
    last = _obj(attrs, "last_commit")
    raw = _opt_str(attrs, "action")
    action = {"open": OPENED, "reopen": REOPENED}.get(raw or "", raw)
    if raw == "update" and attrs.get("oldrev"):
        action = SYNCHRONIZE  # GitLab sends oldrev only when the update pushed code
    source_id, target_id = attrs.get("source_project_id"), attrs.get("target_project_id")
    if not isinstance(source_id, int) or not isinstance(target_id, int):
        raise PayloadInvalid("object_attributes.source_project_id/target_project_id missing")
    user = p.get("user")
    return VcsEvent(
        provider="gitlab",
        kind="pull_request",
        repo=_str(project, "path_with_namespace"),
        default_branch=_opt_str(project, "default_branch"),
        sha=_str(last, "id", "object_attributes.last_commit"),
        branch=_str(attrs, "target_branch", "object_attributes"),
        action=action,
        pr_number=_int(attrs, "iid", "object_attributes"),
        pr_url=_opt_str(attrs, "url"),
        pr_title=_clip(_opt_str(attrs, "title")),
        pr_body=_clip(_opt_str(attrs, "description")),
        pr_head_branch=_opt_str(attrs, "source_branch"),
        is_fork=source_id != target_id,
        sender=_opt_str(user, "username") if isinstance(user, dict) else None,
        sender_avatar_url=_opt_str(user, "avatar_url") if isinstance(user, dict) else None,
        commit_message=_clip(_opt_str(last, "message")),
        commit_url=_opt_str(last, "url"),
        clone_url=_opt_str(project, "git_http_url"),
    )


# --- GitHub ------------------------------------------------------------------------------------


def _github(event: str, p: Mapping[str, Any]) -> VcsEvent | None:
    if event == "push":
        return _github_push(p)
    if event == "pull_request":
        return _github_pr(p)
    if event == "ping":
        repo = p.get("repository")
        return VcsEvent(
            provider="github",
            kind="ping",
            repo=_opt_str(repo, "full_name") or "" if isinstance(repo, dict) else "",
            default_branch=None,
            sha="",
        )
    return None


def _github_push(p: Mapping[str, Any]) -> VcsEvent:
    ref = _str(p, "ref")
    repo = _obj(p, "repository")
    after = _str(p, "after")
    deleted = bool(p.get("deleted")) or after == ZERO_SHA
    head = p.get("head_commit")
    head = head if isinstance(head, dict) else None
    # For an annotated tag ``after`` is the tag object; ``head_commit`` is its commit.
    sha = (_opt_str(head, "id") if head else None) or after
    branch, tag_name = _split_ref(ref, ref.startswith("refs/tags/"))
    commits = _list(p, "commits")
    files: tuple[str, ...] | None = None
    if not deleted and commits and len(commits) < GITHUB_MAX_COMMITS:
        files = _commit_files(commits)
        if files is not None and len(files) >= MAX_GITHUB_FILES:
            files = None
    sender = p.get("sender")
    sender = sender if isinstance(sender, dict) else {}
    return VcsEvent(
        provider="github",
        kind="tag" if tag_name is not None else "push",
        repo=_str(repo, "full_name", "repository"),
        default_branch=_opt_str(repo, "default_branch"),
        sha=sha,
        branch=branch,
        tag=tag_name,
        before=_opt_str(p, "before"),
        changed_files=files,
        deleted=deleted,
        sender=_opt_str(sender, "login"),
        sender_avatar_url=_opt_str(sender, "avatar_url"),
        sender_html_url=_opt_str(sender, "html_url"),
        commit_message=_clip(_opt_str(head, "message")) if head else None,
        commit_url=_opt_str(head, "url") if head else None,
        clone_url=_opt_str(repo, "clone_url"),
        compare_url=_opt_str(p, "compare"),
    )


def _github_pr(p: Mapping[str, Any]) -> VcsEvent:
    pr = _obj(p, "pull_request")
    head = _obj(pr, "head", "pull_request")
    base = _obj(pr, "base", "pull_request")
    base_repo = _obj(base, "repo", "pull_request.base")
    head_repo = head.get("repo")
    base_name = _str(base_repo, "full_name", "pull_request.base.repo")
    fork = not isinstance(head_repo, dict) or head_repo.get("full_name") != base_name
    sender = p.get("sender")
    sender = sender if isinstance(sender, dict) else {}
    number = p.get("number", pr.get("number"))
    if not isinstance(number, int) or isinstance(number, bool):
        raise PayloadInvalid("the pull_request delivery has no number")
    return VcsEvent(
        provider="github",
        kind="pull_request",
        repo=base_name,
        default_branch=_opt_str(base_repo, "default_branch"),
        sha=_str(head, "sha", "pull_request.head"),
        branch=_str(base, "ref", "pull_request.base"),
        action=_opt_str(p, "action"),
        pr_number=number,
        pr_url=_opt_str(pr, "html_url"),
        pr_title=_clip(_opt_str(pr, "title")),
        pr_body=_clip(_opt_str(pr, "body")),
        pr_head_branch=_opt_str(head, "ref"),
        is_fork=fork,
        sender=_opt_str(sender, "login"),
        sender_avatar_url=_opt_str(sender, "avatar_url"),
        sender_html_url=_opt_str(sender, "html_url"),
        clone_url=_opt_str(base_repo, "clone_url"),
    )


# --- shapes ------------------------------------------------------------------------------------


def _split_ref(ref: str, tag: bool) -> tuple[str | None, str | None]:
    """(branch, tag) of a full ref; a tag hook with a branch ref (or the reverse) is invalid."""
    if ref.startswith("refs/tags/") and tag:
        return None, ref.removeprefix("refs/tags/")
    if ref.startswith("refs/heads/") and not tag:
        return ref.removeprefix("refs/heads/"), None
    raise PayloadInvalid(f"unexpected ref {ref[:200]!r} for a {'tag' if tag else 'push'} event")


def _commit_files(commits: list[Any]) -> tuple[str, ...] | None:
    """Every path added, modified or removed by the listed commits, or ``None`` when a commit
    does not list them (then nothing can be said)."""
    seen: dict[str, None] = {}
    for commit in commits:
        if not isinstance(commit, dict):
            raise PayloadInvalid("commits[] holds a value that is not an object")
        for key in ("added", "modified", "removed"):
            paths = commit.get(key)
            if paths is None:
                return None
            if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
                raise PayloadInvalid(f"commits[].{key} is not a list of paths")
            seen.update(dict.fromkeys(paths))
    return tuple(seen)


def _head_commit(commits: list[Any], sha: str) -> Mapping[str, Any] | None:
    for commit in reversed(commits):
        if isinstance(commit, dict) and commit.get("id") == sha:
            return commit
    return None


def _obj(p: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value = p.get(key)
    if not isinstance(value, dict):
        raise PayloadInvalid(f"the delivery has no object {_name(where, key)}")
    return value


def _list(p: Mapping[str, Any], key: str) -> list[Any]:
    value = p.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadInvalid(f"the delivery's {key} is not a list")
    return value


def _str(p: Mapping[str, Any], key: str, where: str = "") -> str:
    value = p.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadInvalid(f"the delivery has no string {_name(where, key)}")
    return value


def _opt_str(p: Mapping[str, Any] | None, key: str) -> str | None:
    value = p.get(key) if p is not None else None
    return value if isinstance(value, str) and value else None


def _int(p: Mapping[str, Any], key: str, where: str = "") -> int:
    value = p.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PayloadInvalid(f"the delivery has no number {_name(where, key)}")
    return value


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _clip(text: str | None) -> str | None:
    return text[:MAX_TEXT] if text is not None else None
