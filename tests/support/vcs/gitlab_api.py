"""GitLab v4 API handlers of the fake forge (``/api/v4``), with GitLab's shapes and errors."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tests.support.vcs.model import (
    GITLAB_CHANGES_LIMIT,
    GITLAB_STATES,
    HookRecord,
    Principal,
    Repo,
    StatusRecord,
    form_or_json,
    gitlab_404,
    iso,
    json_response,
    now,
)
from tests.support.vcs.state import ForgeState


class GitLabApi(ForgeState):
    """``/api/v4``: user, personal access token, projects (archive, commits, compare, merge
    request changes, statuses, hooks)."""

    # ---- GitLab v4 ---------------------------------------------------------------------------
    def _gl_user_json(self, user: str) -> dict[str, Any]:
        return {
            "id": 1,
            "username": user,
            "name": user.title(),
            "state": "active",
            "web_url": f"{self.url}/{user}",
        }

    async def _gl_user(self, request: Request, who: Principal) -> Response:
        return json_response(200, self._gl_user_json(who.user))

    async def _gl_pat_self(self, request: Request, who: Principal) -> Response:
        if who.pat is None:
            return json_response(404, {"message": "404 Not Found"})
        pat = who.pat
        return json_response(
            200,
            {
                "id": abs(hash(pat.token)) % 100000,
                "name": "cairn",
                "revoked": pat.revoked,
                "created_at": iso(pat.created_at),
                "scopes": list(pat.scopes),
                "user_id": 1,
                "active": not pat.revoked and not pat.expired(),
                "expires_at": pat.expires_at.date().isoformat() if pat.expires_at else None,
            },
        )

    def _gl_project_json(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": repo.project_id,
            "name": repo.name,
            "path": repo.name,
            "path_with_namespace": repo.path,
            "namespace": {"full_path": repo.namespace, "path": repo.namespace},
            "default_branch": repo.default_branch,
            "visibility": "private" if repo.private else "public",
            "http_url_to_repo": repo.clone_url,
            "web_url": repo.web_url,
            "forked_from_project": (
                {"id": repo.forked_from.project_id, "path_with_namespace": repo.forked_from.path}
                if repo.forked_from
                else None
            ),
        }

    def _gl_commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        info = repo.git.commit_info(sha)
        message = str(info["message"])
        return {
            "id": sha,
            "short_id": sha[:8],
            "title": message.splitlines()[0] if message else "",
            "message": message,
            "author_name": info["author_name"],
            "author_email": info["author_email"],
            "authored_date": info["authored_date"],
            "committed_date": info["committed_date"],
            "parent_ids": info["parents"],
            "web_url": f"{repo.web_url}/-/commit/{sha}",
        }

    @staticmethod
    def _gl_diffs(changes: list[tuple[str, str, str | None]]) -> list[dict[str, Any]]:
        return [
            {
                "old_path": old or path,
                "new_path": path,
                "new_file": status == "A",
                "renamed_file": status == "R",
                "deleted_file": status == "D",
                "diff": "",
            }
            for status, path, old in changes
        ]

    async def _gl_projects(self, request: Request, who: Principal) -> Response:
        # The project id is URL-encoded ("group%2Fproject"): split the raw path, not the decoded.
        raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        rest = raw.split("/api/v4/projects/", 1)[1]
        ident, _, sub = rest.partition("/")
        repo = self._find_repo(unquote(ident))
        if repo is None:
            return gitlab_404()
        sub = "/" + sub if sub else ""
        method = request.method
        writing = method != "GET"
        if writing and "api" not in who.scopes:
            return json_response(
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": "The request requires higher privileges than "
                    "provided by the access token.",
                    "scope": "api",
                },
            )
        if sub == "" and method == "GET":
            return json_response(200, self._gl_project_json(repo))
        if sub == "/repository/archive.tar.gz" and method == "GET":
            return await self._gl_archive(request, who, repo)
        match = re.fullmatch(r"/repository/commits/([^/]+)", sub)
        if match and method == "GET":
            sha = repo.git.resolve(unquote(match[1]))
            if sha is None:
                return gitlab_404("Commit")
            return json_response(200, self._gl_commit_json(repo, sha))
        match = re.fullmatch(r"/repository/commits/([^/]+)/statuses", sub)
        if match and method == "GET":
            sha = unquote(match[1])
            return json_response(200, [self._gl_status_json(s) for s in self.statuses(repo, sha)])
        if sub == "/repository/compare" and method == "GET":
            return await self._gl_compare(request, repo)
        match = re.fullmatch(r"/merge_requests/(\d+)/changes", sub)
        if match and method == "GET":
            return await self._gl_mr_changes(repo, int(match[1]))
        match = re.fullmatch(r"/statuses/([0-9a-f]{40})", sub)
        if match and method == "POST":
            return await self._gl_post_status(request, who, repo, match[1])
        if sub == "/hooks" and method == "GET":
            return json_response(200, [self._gl_hook_json(h, repo) for h in self.hooks(repo)])
        if sub == "/hooks" and method == "POST":
            return await self._gl_create_hook(request, repo)
        match = re.fullmatch(r"/hooks/(\d+)", sub)
        if match and method == "DELETE":
            return self._delete_hook(repo, int(match[1]), "gitlab")
        return json_response(404, {"error": "404 Not Found"})

    async def _gl_archive(self, request: Request, who: Principal, repo: Repo) -> Response:
        with self._lock:
            if self._archive_limit is not None:
                now = time.monotonic()
                hits = [t for t in self._archive_hits.get(who.user, []) if now - t < 60]
                if len(hits) >= self._archive_limit:
                    self._archive_hits[who.user] = hits
                    return json_response(
                        429,
                        {
                            "message": "This endpoint has been requested too many times. "
                            "Try again later."
                        },
                        {"Retry-After": "60"},
                    )
                self._archive_hits[who.user] = [*hits, now]
        sha = repo.git.resolve(request.query_params.get("sha"))
        if sha is None:
            return gitlab_404("File")
        data = await run_in_threadpool(repo.git.archive, sha, f"{repo.name}-{sha}")
        with self._lock:
            self._archives.append((repo.path, sha))
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{repo.name}-{sha}.tar.gz"'},
        )

    async def _gl_compare(self, request: Request, repo: Repo) -> Response:
        base = repo.git.resolve(request.query_params.get("from"))
        head = repo.git.resolve(request.query_params.get("to"))
        if base is None or head is None:
            return gitlab_404("Ref")
        changes = await run_in_threadpool(repo.git.diff, base, head, merge_base=True)
        commits = repo.git.log(repo.git.merge_base(base, head), head)
        return json_response(
            200,
            {
                "commit": self._gl_commit_json(repo, head) if commits else None,
                "commits": [self._gl_commit_json(repo, c) for c in commits],
                "diffs": self._gl_diffs(changes),
                "compare_timeout": False,
                "compare_same_ref": base == head,
                "web_url": f"{repo.web_url}/-/compare/{base}...{head}",
            },
        )

    async def _gl_mr_changes(self, repo: Repo, iid: int) -> Response:
        mr = self._mrs.get((repo.path, iid))
        if mr is None:
            return gitlab_404()
        base, head = mr.base_sha, mr.head_sha
        changes = await run_in_threadpool(repo.git.diff, base, head)
        overflow = len(changes) > GITLAB_CHANGES_LIMIT
        return json_response(
            200,
            {
                "id": repo.project_id * 1000 + iid,
                "iid": iid,
                "project_id": repo.project_id,
                "title": mr.title,
                "state": mr.state,
                "source_branch": mr.source_branch,
                "target_branch": mr.target_branch,
                "source_project_id": mr.source_repo.project_id,
                "target_project_id": repo.project_id,
                "sha": head,
                "merge_commit_sha": mr.merge_sha,
                "diff_refs": {"base_sha": base, "head_sha": head, "start_sha": base},
                "changes_count": f"{GITLAB_CHANGES_LIMIT}+" if overflow else str(len(changes)),
                "overflow": overflow,
                "changes": self._gl_diffs(changes[:GITLAB_CHANGES_LIMIT]),
                "web_url": f"{repo.web_url}/-/merge_requests/{iid}",
            },
        )

    def _gl_status_json(self, s: StatusRecord) -> dict[str, Any]:
        return {
            "id": abs(hash((s.repo, s.sha, s.context, s.at))) % 10**9,
            "sha": s.sha,
            "status": s.state,
            "name": s.context,
            "description": s.description,
            "target_url": s.target_url,
            "created_at": iso(s.at),
            "author": self._gl_user_json(s.user),
        }

    async def _gl_post_status(
        self, request: Request, who: Principal, repo: Repo, sha: str
    ) -> Response:
        params = await form_or_json(request)
        state = str(params.get("state", ""))
        if state not in GITLAB_STATES:
            return json_response(400, {"error": "state does not have a valid value"})
        if repo.git.resolve(sha) != sha:
            return gitlab_404("Commit")
        context = str(params.get("name") or params.get("context") or "default")
        previous = [s for s in self.statuses(repo, sha) if s.context == context]
        if previous and previous[-1].state == state and state in ("pending", "running"):
            verb = "enqueue" if state == "pending" else "run"
            return json_response(
                400,
                {
                    "message": f"Cannot transition status via :{verb} from :{state} "
                    f'(Reason(s): Status cannot transition via "{verb}")'
                },
            )
        record = StatusRecord(
            "gitlab",
            repo.path,
            sha,
            state,
            context,
            params.get("description"),
            params.get("target_url"),
            who.user,
            now(),
        )
        with self._lock:
            self._statuses.append(record)
        return json_response(201, self._gl_status_json(record))

    def _gl_hook_json(self, hook: HookRecord, repo: Repo) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "project_id": repo.project_id,
            "push_events": "push_events" in hook.events,
            "tag_push_events": "tag_push_events" in hook.events,
            "merge_requests_events": "merge_requests_events" in hook.events,
            "enable_ssl_verification": True,
        }

    async def _gl_create_hook(self, request: Request, repo: Repo) -> Response:
        params = await form_or_json(request)
        url = str(params.get("url", ""))
        if not url.startswith(("http://", "https://")):
            return json_response(
                400,
                {"error": "url is missing"}
                if not url
                else {"message": {"url": ["is blocked: Only allowed schemes are http, https"]}},
            )
        events = tuple(
            name
            for name, default in (
                ("push_events", True),
                ("tag_push_events", False),
                ("merge_requests_events", False),
            )
            if str(params.get(name, default)).lower() in ("true", "1")
        )
        hook = HookRecord(
            next(self._ids),
            "gitlab",
            repo.path,
            url,
            str(params["token"]) if params.get("token") else None,
            events,
        )
        with self._lock:
            self._hooks.append(hook)
        return json_response(201, self._gl_hook_json(hook, repo))
