"""GitHub REST handlers of the fake forge (``/api/v3``), with GitHub's shapes and errors."""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tests.support.vcs.model import (
    GITHUB_COMPARE_FILES,
    GITHUB_DOCS,
    GITHUB_PR_FILES,
    GITHUB_STATES,
    INSTALLATION_TOKEN_TTL,
    HookRecord,
    IssuedToken,
    Principal,
    Repo,
    StatusRecord,
    form_or_json,
    github_404,
    iso,
    json_response,
    now,
)
from tests.support.vcs.state import ForgeState


class GitHubApi(ForgeState):
    """``/api/v3``: user, GitHub App installations and tokens, repos (tarball, commits, compare,
    pull request files, statuses, hooks)."""

    # ---- GitHub REST -------------------------------------------------------------------------
    async def _gh_user(self, request: Request, who: Principal) -> Response:
        if who.kind == "installation":
            return json_response(
                403,
                {
                    "message": "Resource not accessible by integration",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        return json_response(200, {"login": who.user, "id": 1, "type": "User"})

    async def _gh_installations(self, request: Request, who: Principal) -> Response:
        assert who.app is not None
        return json_response(
            200,
            [
                {
                    "id": i.id,
                    "app_id": int(i.app.app_id) if i.app.app_id.isdigit() else i.app.app_id,
                    "account": {"login": i.account},
                    "repository_selection": "selected",
                }
                for i in self._installations.values()
                if i.app.app_id == who.app.app_id
            ],
        )

    async def _gh_access_token(self, request: Request, who: Principal) -> Response:
        inst = self._installations.get(int(request.path_params["id"]))
        if inst is None or who.app is None or inst.app.app_id != who.app.app_id:
            return github_404()
        expires = now().replace(microsecond=0) + INSTALLATION_TOKEN_TTL
        token = "ghs_" + secrets.token_urlsafe(27)
        with self._lock:
            self._tokens[token] = IssuedToken(
                token,
                "installation",
                f"{inst.app.slug}[bot]",
                ("contents", "statuses"),
                expires,
                installation_id=inst.id,
            )
        return json_response(
            201,
            {
                "token": token,
                "expires_at": iso(expires),
                "permissions": {
                    "contents": "read",
                    "statuses": "write",
                    "metadata": "read",
                    "pull_requests": "read",
                },
                "repository_selection": "selected",
            },
        )

    def _gh_repo_json(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": repo.github_id,
            "name": repo.name,
            "full_name": repo.path,
            "private": repo.private,
            "default_branch": repo.default_branch,
            "html_url": repo.web_url,
            "clone_url": repo.clone_url,
            "owner": {"login": repo.namespace},
            "fork": repo.forked_from is not None,
        }

    def _gh_commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        info = repo.git.commit_info(sha)
        return {
            "sha": sha,
            "html_url": f"{repo.web_url}/commit/{sha}",
            "commit": {
                "message": info["message"],
                "author": {
                    "name": info["author_name"],
                    "email": info["author_email"],
                    "date": info["authored_date"],
                },
            },
            "author": {"login": info["author_name"]},
            "parents": [{"sha": p} for p in info["parents"]],
        }

    @staticmethod
    def _gh_files(changes: list[tuple[str, str, str | None]]) -> list[dict[str, Any]]:
        names = {"A": "added", "M": "modified", "D": "removed", "R": "renamed"}
        files = []
        for status, path, old in changes:
            item: dict[str, Any] = {"filename": path, "status": names.get(status, "changed")}
            if old:
                item["previous_filename"] = old
            files.append(item)
        return files

    async def _gh_repos(self, request: Request, who: Principal) -> Response:
        path = f"{request.path_params['owner']}/{request.path_params['name']}"
        repo = self._repos.get(path)
        if repo is None:
            return github_404()
        if who.installation is not None and path not in who.installation.repos:
            return github_404()
        sub: str = request.path_params["rest"]
        method = request.method
        if sub == "" and method == "GET":
            return json_response(200, self._gh_repo_json(repo))
        match = re.fullmatch(r"/tarball(?:/(.+))?", sub)
        if match and method == "GET":
            sha = repo.git.resolve(match[1])
            if sha is None:
                return github_404()
            one_time = secrets.token_urlsafe(16)
            with self._lock:
                self._codeload[one_time] = (repo.path, sha)
            target = f"{self.url}/_codeload/{repo.path}/legacy.tar.gz/{sha}?token={one_time}"
            return RedirectResponse(target, status_code=302)
        match = re.fullmatch(r"/commits/([^/]+)", sub)
        if match and method == "GET":
            sha = repo.git.resolve(match[1])
            if sha is None:
                return json_response(422, {"message": f"No commit found for SHA: {match[1]}"})
            body = self._gh_commit_json(repo, sha)
            body["files"] = self._gh_files(repo.git.commit_files(sha))
            return json_response(200, body)
        match = re.fullmatch(r"/commits/([^/]+)/statuses", sub)
        if match and method == "GET":
            return json_response(
                200, [self._gh_status_json(s) for s in self.statuses(repo, match[1])]
            )
        match = re.fullmatch(r"/compare/(.+)\.\.\.(.+)", sub)
        if match and method == "GET":
            base, head = repo.git.resolve(match[1]), repo.git.resolve(match[2])
            if base is None or head is None:
                return github_404()
            changes = await run_in_threadpool(repo.git.diff, base, head, merge_base=True)
            commits = repo.git.log(repo.git.merge_base(base, head), head)
            return json_response(
                200,
                {
                    "status": "identical" if base == head else "ahead",
                    "ahead_by": len(commits),
                    "behind_by": 0,
                    "total_commits": len(commits),
                    "commits": [self._gh_commit_json(repo, c) for c in commits[-250:]],
                    "files": self._gh_files(changes[:GITHUB_COMPARE_FILES]),
                },
            )
        match = re.fullmatch(r"/pulls/(\d+)/files", sub)
        if match and method == "GET":
            return await self._gh_pull_files(request, repo, int(match[1]))
        match = re.fullmatch(r"/statuses/([0-9a-f]{40})", sub)
        if match and method == "POST":
            return await self._gh_post_status(request, who, repo, match[1])
        if sub == "/hooks" and method == "GET":
            return json_response(200, [self._gh_hook_json(h) for h in self.hooks(repo)])
        if sub == "/hooks" and method == "POST":
            return await self._gh_create_hook(request, repo)
        match = re.fullmatch(r"/hooks/(\d+)", sub)
        if match and method == "DELETE":
            return self._delete_hook(repo, int(match[1]), "github")
        return github_404()

    async def _gh_pull_files(self, request: Request, repo: Repo, number: int) -> Response:
        mr = self._mrs.get((repo.path, number))
        if mr is None:
            return github_404()
        try:
            per_page = min(max(int(request.query_params.get("per_page", "30")), 1), 100)
            page = max(int(request.query_params.get("page", "1")), 1)
        except ValueError:
            return json_response(422, {"message": "Validation Failed"})
        changes = await run_in_threadpool(mr.changed_files_detailed)
        files = self._gh_files(changes[:GITHUB_PR_FILES])
        last = max(1, -(-len(files) // per_page))
        chunk = files[(page - 1) * per_page : page * per_page]
        links = []
        base = f"{self.github_api_url}/repos/{repo.path}/pulls/{number}/files?per_page={per_page}"
        if page < last:
            links.append(f'<{base}&page={page + 1}>; rel="next"')
            links.append(f'<{base}&page={last}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else None
        return json_response(200, chunk, headers)

    def _gh_status_json(self, s: StatusRecord) -> dict[str, Any]:
        return {
            "state": s.state,
            "context": s.context,
            "description": s.description,
            "target_url": s.target_url,
            "created_at": iso(s.at),
            "creator": {"login": s.user},
        }

    async def _gh_post_status(
        self, request: Request, who: Principal, repo: Repo, sha: str
    ) -> Response:
        params = await form_or_json(request)
        state = str(params.get("state", ""))
        description = params.get("description")
        errors = []
        if state not in GITHUB_STATES:
            errors.append(
                {
                    "resource": "Status",
                    "field": "state",
                    "code": "custom",
                    "message": f"state is not included in the list: {GITHUB_STATES}",
                }
            )
        if description is not None and len(str(description)) > 140:
            errors.append(
                {
                    "resource": "Status",
                    "field": "description",
                    "code": "custom",
                    "message": "description is too long (maximum is 140 characters)",
                }
            )
        if errors:
            return json_response(
                422,
                {
                    "message": "Validation Failed",
                    "errors": errors,
                    "documentation_url": GITHUB_DOCS,
                },
            )
        if repo.git.resolve(sha) != sha:
            return json_response(
                422,
                {"message": f"No commit found for SHA: {sha}", "documentation_url": GITHUB_DOCS},
            )
        record = StatusRecord(
            "github",
            repo.path,
            sha,
            state,
            str(params.get("context") or "default"),
            description,
            params.get("target_url"),
            who.user,
            now(),
        )
        with self._lock:
            self._statuses.append(record)
        return json_response(201, self._gh_status_json(record))

    def _gh_hook_json(self, hook: HookRecord) -> dict[str, Any]:
        return {
            "id": hook.id,
            "name": "web",
            "active": True,
            "events": list(hook.events),
            "config": {
                "url": hook.url,
                "content_type": "json",
                "insecure_ssl": "0",
                **({"secret": "********"} if hook.secret else {}),
            },
        }

    async def _gh_create_hook(self, request: Request, repo: Repo) -> Response:
        params = await form_or_json(request)
        config = params.get("config")
        if not isinstance(config, dict) or not str(config.get("url", "")).startswith(
            ("http://", "https://")
        ):
            return json_response(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {"resource": "Hook", "code": "custom", "message": "Config must contain URL"}
                    ],
                    "documentation_url": GITHUB_DOCS,
                },
            )
        events = params.get("events") or ["push"]
        hook = HookRecord(
            next(self._ids),
            "github",
            repo.path,
            str(config["url"]),
            str(config["secret"]) if config.get("secret") else None,
            tuple(str(e) for e in events),
        )
        with self._lock:
            self._hooks.append(hook)
        return json_response(201, self._gh_hook_json(hook))
