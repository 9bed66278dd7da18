"""GitLab's REST API v4 (``api_url`` ends in ``/api/v4``). Projects are addressed by their
URL-encoded full path (``group/sub/project`` → ``group%2Fsub%2Fproject``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from cairn.vcs.forges.base import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    CommitInfo,
    ForgeHttp,
    ForgeUnauthorized,
    segment,
)
from cairn.vcs.tokens import ForgeCredential, ForgeError

# cairn's commit-status states → GitLab's (GitLab has no "error": a failed pipeline).
STATES: Final = {
    "pending": "pending",
    "running": "running",
    "success": "success",
    "failure": "failed",
    "error": "failed",
}


class GitLabForge:
    def __init__(
        self,
        credential: ForgeCredential,
        *,
        http: httpx.Client | None = None,
        max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    ) -> None:
        self._api = ForgeHttp(
            credential, http=http, max_archive_bytes=max_archive_bytes, headers={}
        )

    def __repr__(self) -> str:
        return f"GitLabForge({self._api!r})"

    def whoami(self) -> tuple[str, datetime | None]:
        """The token's user and, for a personal/group/project access token, its expiry."""
        user = self._api.json("GET", "/user", what="the token's user")
        if not isinstance(user, dict) or not isinstance(user.get("username"), str):
            raise ForgeError("GitLab answered /user without a username")
        expires: datetime | None = None
        try:
            me = self._api.json(
                "GET", "/personal_access_tokens/self", what="the token's expiry", missing_ok=True
            )
        except ForgeUnauthorized:
            me = None  # an OAuth token is not an access token: no expiry to read here
        except ForgeError as exc:
            if exc.forge_status not in (401, 403):
                raise
            me = None
        if isinstance(me, dict) and isinstance(me.get("expires_at"), str):
            try:
                day = datetime.fromisoformat(me["expires_at"][:10])
            except ValueError:
                day = None
            if day is not None:
                # GitLab access tokens expire at the start of their expiry date (UTC).
                expires = day.replace(tzinfo=UTC)
        return user["username"], expires

    def default_branch(self, repo: str) -> str:
        project = self._project(repo)
        branch = project.get("default_branch")
        if not isinstance(branch, str) or not branch:
            raise ForgeError(f"GitLab project {repo} has no default branch (an empty repository?)")
        return branch

    def archive(self, repo: str, sha: str) -> Iterator[bytes]:
        return self._api.stream(
            f"/projects/{segment(repo)}/repository/archive.tar.gz",
            params={"sha": sha},
            what=f"the archive of {repo}@{sha[:12]}",
        )

    def commit(self, repo: str, sha: str) -> CommitInfo:
        body = self._api.json(
            "GET",
            f"/projects/{segment(repo)}/repository/commits/{segment(sha)}",
            what=f"commit {sha[:12]} of {repo}",
        )
        if not isinstance(body, dict):
            raise ForgeError(f"GitLab answered commit {sha[:12]} of {repo} with no commit")
        return CommitInfo(
            message=str(body.get("message") or body.get("title") or ""),
            html_url=_str(body.get("web_url")),
            author=_str(body.get("author_name")),
        )

    def compare_files(self, repo: str, base: str, head: str) -> list[str] | None:
        body = self._api.json(
            "GET",
            f"/projects/{segment(repo)}/repository/compare",
            params={"from": base, "to": head},
            what=f"the comparison {base[:12]}..{head[:12]} of {repo}",
        )
        if not isinstance(body, dict) or body.get("compare_timeout"):
            return None
        return _paths(body.get("diffs"))

    def merge_request_files(self, repo: str, number: int) -> list[str] | None:
        body = self._api.json(
            "GET",
            f"/projects/{segment(repo)}/merge_requests/{int(number)}/changes",
            what=f"the changes of merge request !{number} of {repo}",
        )
        if not isinstance(body, dict) or body.get("overflow"):
            return None
        return _paths(body.get("changes"))

    def set_status(
        self,
        repo: str,
        sha: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None,
    ) -> None:
        if state not in STATES:
            raise ValueError(f"unknown commit status state {state!r}")
        body: dict[str, Any] = {
            "state": STATES[state],
            "name": context,
            "description": description[:255],
        }
        if target_url:
            body["target_url"] = target_url
        try:
            self._api.request(
                "POST",
                f"/projects/{segment(repo)}/statuses/{segment(sha)}",
                body=body,
                what=f"the commit status of {repo}@{sha[:12]}",
            )
        except ForgeError as exc:
            # GitLab refuses a transition to the state the status already has.
            if exc.forge_status == 400 and "Cannot transition status" in exc.detail:
                return
            raise

    def create_hook(self, repo: str, url: str, secret: str) -> str:
        body = self._api.json(
            "POST",
            f"/projects/{segment(repo)}/hooks",
            body={
                "url": url,
                "token": secret,
                "push_events": True,
                "tag_push_events": True,
                "merge_requests_events": True,
                "enable_ssl_verification": True,
            },
            what=f"a webhook on {repo}",
        )
        if not isinstance(body, dict) or "id" not in body:
            raise ForgeError(f"GitLab answered the new webhook on {repo} without its id")
        return str(body["id"])

    def delete_hook(self, repo: str, hook_id: str) -> None:
        self._api.request(
            "DELETE",
            f"/projects/{segment(repo)}/hooks/{segment(hook_id)}",
            what=f"webhook {hook_id} of {repo}",
            missing_ok=True,
        )

    def _project(self, repo: str) -> dict[str, Any]:
        body = self._api.json("GET", f"/projects/{segment(repo)}", what=f"project {repo}")
        if not isinstance(body, dict):
            raise ForgeError(f"GitLab answered project {repo} with no project")
        return body


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _paths(items: Any) -> list[str] | None:
    """Every path a change touches (old and new: a rename counts for both)."""
    if not isinstance(items, list):
        return None
    paths: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("old_path", "new_path"):
            path = item.get(key)
            if isinstance(path, str) and path:
                paths.append(path)
    return sorted(set(paths))
