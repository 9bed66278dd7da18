"""GitHub's REST API (``api_url`` is ``https://api.github.com`` or a GHES ``…/api/v3``).
Repositories are ``owner/repo``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from cairn.errors import Invalid
from cairn.vcs.forges.base import DEFAULT_MAX_ARCHIVE_BYTES, CommitInfo, ForgeHttp, segment
from cairn.vcs.tokens import ForgeCredential, ForgeError

STATES: Final = frozenset({"pending", "success", "failure", "error"})
# GitHub's compare API lists at most 300 files; a pull request's files at most 3000.
COMPARE_LIMIT: Final = 300
PR_FILES_LIMIT: Final = 3000
_PER_PAGE = 100
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")


def repo_path(repo: str) -> str:
    if not _REPO.fullmatch(repo) or repo.split("/")[1] in (".", ".."):
        raise Invalid(f"{repo!r} is not a GitHub repository (owner/name)")
    return f"/repos/{repo}"


class GitHubForge:
    def __init__(
        self,
        credential: ForgeCredential,
        *,
        http: httpx.Client | None = None,
        max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    ) -> None:
        self._api = ForgeHttp(
            credential,
            http=http,
            max_archive_bytes=max_archive_bytes,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )

    def __repr__(self) -> str:
        return f"GitHubForge({self._api!r})"

    def whoami(self) -> tuple[str, datetime | None]:
        """The token's user and, for a token with an expiry, when it expires (GitHub sends it
        in ``github-authentication-token-expiration``)."""
        response = self._api.request("GET", "/user", what="the token's user")
        assert response is not None
        body: Any = response.json() if len(response.content) < 1024 * 1024 else None
        if not isinstance(body, dict) or not isinstance(body.get("login"), str):
            raise ForgeError("GitHub answered /user without a login")
        expires: datetime | None = None
        header = response.headers.get("github-authentication-token-expiration")
        if header:
            try:
                expires = datetime.strptime(header.replace(" UTC", ""), "%Y-%m-%d %H:%M:%S")
                expires = expires.replace(tzinfo=UTC)
            except ValueError:
                expires = None
        return body["login"], expires

    def default_branch(self, repo: str) -> str:
        body = self._api.json("GET", repo_path(repo), what=f"repository {repo}")
        branch = body.get("default_branch") if isinstance(body, dict) else None
        if not isinstance(branch, str) or not branch:
            raise ForgeError(f"GitHub repository {repo} has no default branch")
        return branch

    def archive(self, repo: str, sha: str) -> Iterator[bytes]:
        return self._api.stream(
            f"{repo_path(repo)}/tarball/{segment(sha)}",
            what=f"the archive of {repo}@{sha[:12]}",
        )

    def commit(self, repo: str, sha: str) -> CommitInfo:
        body = self._api.json(
            "GET", f"{repo_path(repo)}/commits/{segment(sha)}", what=f"commit {sha[:12]} of {repo}"
        )
        if not isinstance(body, dict):
            raise ForgeError(f"GitHub answered commit {sha[:12]} of {repo} with no commit")
        commit = _dict(body.get("commit"))
        login = _dict(body.get("author")).get("login")
        if not isinstance(login, str):
            login = _dict(commit.get("author")).get("name")
        html_url = body.get("html_url")
        return CommitInfo(
            message=str(commit.get("message") or ""),
            html_url=html_url if isinstance(html_url, str) else None,
            author=login if isinstance(login, str) else None,
        )

    def compare_files(self, repo: str, base: str, head: str) -> list[str] | None:
        body = self._api.json(
            "GET",
            f"{repo_path(repo)}/compare/{segment(base)}...{segment(head)}",
            what=f"the comparison {base[:12]}...{head[:12]} of {repo}",
        )
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or len(files) >= COMPARE_LIMIT:
            return None  # GitHub truncates at 300 files: the list would be incomplete
        return _paths(files)

    def merge_request_files(self, repo: str, number: int) -> list[str] | None:
        files: list[Any] = []
        for page in range(1, PR_FILES_LIMIT // _PER_PAGE + 1):
            body = self._api.json(
                "GET",
                f"{repo_path(repo)}/pulls/{int(number)}/files",
                params={"per_page": _PER_PAGE, "page": page},
                what=f"the files of pull request #{number} of {repo}",
            )
            if not isinstance(body, list):
                return None
            files.extend(body)
            if len(body) < _PER_PAGE:
                return _paths(files)
        return None  # 3000 files or more: GitHub lists no further

    def set_status(
        self,
        repo: str,
        sha: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None,
    ) -> None:
        if state == "running":
            state = "pending"
        if state not in STATES:
            raise ValueError(f"unknown commit status state {state!r}")
        body: dict[str, Any] = {
            "state": state,
            "context": context,
            "description": description[:140],
        }
        if target_url:
            body["target_url"] = target_url
        self._api.request(
            "POST",
            f"{repo_path(repo)}/statuses/{segment(sha)}",
            body=body,
            what=f"the commit status of {repo}@{sha[:12]}",
        )

    def create_hook(self, repo: str, url: str, secret: str) -> str:
        body = self._api.json(
            "POST",
            f"{repo_path(repo)}/hooks",
            body={
                "name": "web",
                "active": True,
                "events": ["push", "pull_request"],
                "config": {
                    "url": url,
                    "content_type": "json",
                    "secret": secret,
                    "insecure_ssl": "0",
                },
            },
            what=f"a webhook on {repo}",
        )
        if not isinstance(body, dict) or "id" not in body:
            raise ForgeError(f"GitHub answered the new webhook on {repo} without its id")
        return str(body["id"])

    def delete_hook(self, repo: str, hook_id: str) -> None:
        self._api.request(
            "DELETE",
            f"{repo_path(repo)}/hooks/{segment(hook_id)}",
            what=f"webhook {hook_id} of {repo}",
            missing_ok=True,
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _paths(files: list[Any]) -> list[str]:
    """Every path a change touches (a rename counts for its old name too)."""
    paths: set[str] = set()
    for item in files:
        if not isinstance(item, dict):
            continue
        for key in ("filename", "previous_filename"):
            value = item.get(key)
            if isinstance(value, str) and value:
                paths.add(value)
    return sorted(paths)
