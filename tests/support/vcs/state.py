"""The fake forge's state: repositories, credentials, knobs, records and authentication.

``ForgeState`` holds everything the GitLab and GitHub handlers (``gitlab_api`` / ``github_api``)
read and write, behind one lock (handlers run on uvicorn's loop, tests call from their thread).
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import Response

from tests.support.vcs.gitlab_op import GitLabOp, OAuthApp
from tests.support.vcs.gitrepo import GitRepo
from tests.support.vcs.model import (
    GITHUB_DOCS,
    GITLAB_EXPIRED,
    GITLAB_REVOKED,
    CallRecord,
    GitHubApp,
    Handler,
    HookRecord,
    Installation,
    IssuedToken,
    MergeRequest,
    Principal,
    Repo,
    StatusRecord,
    github_404,
    gitlab_404,
    json_response,
    now,
    presented_token,
)


class ForgeState:
    """Registry, records and authentication shared by the forge's handlers."""

    def __init__(self, root: Path, gitlab_op: GitLabOp) -> None:
        self.root = root
        self.gitlab_op = gitlab_op
        self.url = ""
        self._lock = threading.Lock()
        self._ids = itertools.count(1000)
        self._repos: dict[str, Repo] = {}
        self._by_id: dict[int, Repo] = {}
        self._mrs: dict[tuple[str, int], MergeRequest] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self._apps: dict[str, GitHubApp] = {}
        self._installations: dict[int, Installation] = {}
        self._oauth_apps: dict[str, OAuthApp] = {}
        self._oauth_codes: dict[str, tuple[str, str]] = {}  # code -> (client_id, redirect_uri)
        self._codeload: dict[str, tuple[str, str]] = {}  # one-time token -> (repo, sha)
        self._statuses: list[StatusRecord] = []
        self._hooks: list[HookRecord] = []
        self._archives: list[tuple[str, str]] = []
        self._calls: list[CallRecord] = []
        self._archive_limit: int | None = None
        self._archive_hits: dict[str, list[float]] = {}
        self._fail: tuple[int, int, str] = (0, 500, "")
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"Forge({self.url!r})"

    # ---- URLs --------------------------------------------------------------------------------
    @property
    def gitlab_http_url(self) -> str:
        return self.url

    @property
    def gitlab_api_url(self) -> str:
        return self.url + "/api/v4"

    @property
    def github_http_url(self) -> str:
        return self.url

    @property
    def github_api_url(self) -> str:
        return self.url + "/api/v3"

    # ---- repositories ------------------------------------------------------------------------
    def create_repo(
        self,
        path: str,
        files: dict[str, str | bytes | None] | None = None,
        *,
        default_branch: str = "main",
        private: bool = True,
    ) -> Repo:
        if path.count("/") < 1 or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", path):
            raise ValueError(f"repository paths are group/project: {path!r}")
        with self._lock:
            if path in self._repos:
                raise ValueError(f"repository {path} exists")
            git_repo = GitRepo.init(self.root / f"{path}.git", default_branch)
            repo = Repo(self, path, git_repo, next(self._ids), private)
            self._repos[path] = repo
            self._by_id[repo.project_id] = repo
        if files:
            repo.commit(files, "initial commit")
        return repo

    def fork_repo(self, source: Repo, path: str) -> Repo:
        with self._lock:
            if path in self._repos:
                raise ValueError(f"repository {path} exists")
            git_repo = GitRepo.clone_bare(source.git, self.root / f"{path}.git")
            repo = Repo(self, path, git_repo, next(self._ids), source.private)
            repo.forked_from = source
            self._repos[path] = repo
            self._by_id[repo.project_id] = repo
        return repo

    def repo(self, path: str) -> Repo:
        return self._repos[path]

    def _find_repo(self, ident: str) -> Repo | None:
        if ident.isdigit():
            return self._by_id.get(int(ident))
        return self._repos.get(ident)

    def open_merge_request(
        self,
        repo: Repo,
        source_branch: str,
        target_branch: str | None = None,
        source_repo: Repo | None = None,
        title: str = "change",
    ) -> MergeRequest:
        with self._lock:
            number = 1 + sum(1 for key in self._mrs if key[0] == repo.path)
            mr = MergeRequest(
                number=number,
                repo=repo,
                source_repo=source_repo or repo,
                source_branch=source_branch,
                target_branch=target_branch or repo.default_branch,
                title=title,
            )
            self._mrs[(repo.path, number)] = mr
        return mr

    def close_merge_request(self, mr: MergeRequest, merged: bool = False) -> None:
        if merged:
            head = mr.head_sha
            if mr.is_fork:
                mr.repo.git.copy_objects_from(mr.source_repo.git, f"refs/heads/{mr.source_branch}")
            target = mr.repo.head(mr.target_branch)
            mr.repo.git.run("update-ref", f"refs/heads/{mr.target_branch}", head, target)
            mr.merge_sha = head
        mr.state = "merged" if merged else "closed"

    # ---- credentials -------------------------------------------------------------------------
    def add_pat(
        self,
        flavor: str = "gitlab",
        *,
        user: str = "alice",
        expires_at: datetime | None = None,
        scopes: tuple[str, ...] = ("api",),
    ) -> str:
        if flavor not in ("gitlab", "github"):
            raise ValueError("flavor is gitlab or github")
        prefix = "glpat-" if flavor == "gitlab" else "ghp_"
        token = prefix + secrets.token_urlsafe(24)
        kind = f"{flavor}_pat"
        with self._lock:
            self._tokens[token] = IssuedToken(token, kind, user, scopes, expires_at)
        return token

    def add_github_app(self, *, app_id: str | None = None, slug: str = "cairn-test") -> GitHubApp:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        app = GitHubApp(
            app_id=app_id or str(next(self._ids)),
            client_id="Iv1." + secrets.token_hex(8),
            slug=slug,
            private_key_pem=private_pem,
            public_key_pem=public_pem,
        )
        with self._lock:
            self._apps[app.app_id] = app
        return app

    def add_installation(
        self, app: GitHubApp, account: str = "acme", repos: tuple[str, ...] | list[str] = ()
    ) -> int:
        with self._lock:
            inst = Installation(next(self._ids), app, account, tuple(repos))
            self._installations[inst.id] = inst
        return inst.id

    def installation_tokens(self, installation_id: int) -> list[IssuedToken]:
        with self._lock:
            return [t for t in self._tokens.values() if t.installation_id == installation_id]

    def add_github_oauth_app(
        self, redirect_uris: tuple[str, ...] | list[str] = ("http://127.0.0.1:9/oauth/callback",)
    ) -> OAuthApp:
        app = OAuthApp(
            client_id="Ov23" + secrets.token_hex(8),
            client_secret=secrets.token_hex(20),
            redirect_uris=tuple(redirect_uris),
        )
        with self._lock:
            self._oauth_apps[app.client_id] = app
        return app

    def github_authorize(self, url: str) -> dict[str, str]:
        """Play the browser at ``/login/oauth/authorize``: the callback's query parameters."""
        resp = httpx.get(url, follow_redirects=False, timeout=10)
        location = resp.headers.get("location")
        if resp.status_code != 302 or not location:
            raise AssertionError(f"authorize answered {resp.status_code}: {resp.text[:300]}")
        return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))

    def expire_token(self, token: str) -> None:
        with self._lock:
            self._tokens[token].expires_at = now() - timedelta(seconds=1)

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens[token].revoked = True

    # ---- knobs -------------------------------------------------------------------------------
    def set_archive_rate_limit(self, per_minute: int | None) -> None:
        with self._lock:
            self._archive_limit = per_minute
            self._archive_hits.clear()

    def fail_next(self, n: int = 1, status: int = 500, path_contains: str = "") -> None:
        with self._lock:
            self._fail = (n, status, path_contains)

    # ---- records -----------------------------------------------------------------------------
    def statuses(
        self, repo: Repo | str | None = None, sha: str | None = None
    ) -> list[StatusRecord]:
        path = repo.path if isinstance(repo, Repo) else repo
        with self._lock:
            return [
                s
                for s in self._statuses
                if (path is None or s.repo == path) and (sha is None or s.sha == sha)
            ]

    def hooks(
        self, repo: Repo | str | None = None, include_deleted: bool = False
    ) -> list[HookRecord]:
        path = repo.path if isinstance(repo, Repo) else repo
        with self._lock:
            return [
                h
                for h in self._hooks
                if (path is None or h.repo == path) and (include_deleted or not h.deleted)
            ]

    def archive_fetches(self, repo: Repo | str | None = None, sha: str | None = None) -> int:
        path = repo.path if isinstance(repo, Repo) else repo
        with self._lock:
            return sum(
                1
                for r, s in self._archives
                if (path is None or r == path) and (sha is None or s == sha)
            )

    def calls(self, token: str | None = None, path_contains: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (token is None or c.token == token)
                and (path_contains is None or path_contains in c.path)
            ]

    def reset_records(self) -> None:
        with self._lock:
            self._statuses.clear()
            self._hooks.clear()
            self._archives.clear()
            self._calls.clear()

    # ---- authentication ----------------------------------------------------------------------
    def _issued(self, token: str) -> IssuedToken | None:
        with self._lock:
            return self._tokens.get(token)

    async def _gitlab_principal(self, request: Request) -> Principal | Response:
        token = request.headers.get("private-token")
        auth = request.headers.get("authorization", "")
        if token is None and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not token:
            return json_response(401, {"message": "401 Unauthorized"})
        issued = self._issued(token)
        if issued is not None and issued.kind == "gitlab_pat":
            if issued.revoked:
                return json_response(
                    401, {"error": "invalid_token", "error_description": GITLAB_REVOKED}
                )
            if issued.expired():
                return json_response(
                    401, {"error": "invalid_token", "error_description": GITLAB_EXPIRED}
                )
            return Principal(issued.user, "gitlab_pat", token, issued.scopes, pat=issued)
        if issued is not None:
            return json_response(401, {"message": "401 Unauthorized"})
        assert self._http is not None
        resp = await self._http.post(
            f"{self.gitlab_op.url}/_admin/check", json={"token": token}, timeout=30
        )
        info = resp.json()
        if not info.get("active"):
            text = GITLAB_EXPIRED if info.get("reason") == "expired" else GITLAB_REVOKED
            return json_response(401, {"error": "invalid_token", "error_description": text})
        return Principal(
            str(info["user"]), "gitlab_oauth", token, tuple(str(info.get("scope", "")).split())
        )

    async def _github_principal(self, request: Request) -> Principal | Response:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        bad = json_response(401, {"message": "Bad credentials", "documentation_url": GITHUB_DOCS})
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            return json_response(
                401, {"message": "Requires authentication", "documentation_url": GITHUB_DOCS}
            )
        token = token.strip()
        issued = self._issued(token)
        if issued is None or issued.kind == "gitlab_pat" or issued.revoked or issued.expired():
            return bad
        inst = self._installations.get(issued.installation_id or -1)
        return Principal(issued.user, issued.kind, token, issued.scopes, installation=inst)

    def _github_app_principal(self, request: Request) -> Principal | Response:
        """The GitHub App behind an app JWT (RS256, iss = app id or client id, exp ≤ 10 min)."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return json_response(
                401,
                {
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        token = auth[7:].strip()
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return json_response(
                401,
                {
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        iss = str(unverified.get("iss", ""))
        app = self._apps.get(iss) or next(
            (a for a in self._apps.values() if a.client_id == iss), None
        )
        if app is None:
            return json_response(
                401,
                {
                    "message": f"'Issuer' claim ('iss') must be an Integer or the "
                    f"Client ID: no app {iss!r}",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        try:
            claims = jwt.decode(
                token,
                app.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            return json_response(
                401,
                {
                    "message": "'Expiration time' claim ('exp') must be a numeric value "
                    "representing the future time at which the assertion expires.",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        except jwt.ImmatureSignatureError:
            return json_response(
                401,
                {
                    "message": "'Issued at' claim ('iat') must be an Integer "
                    "representing the time that the assertion was issued.",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        except jwt.PyJWTError:
            return json_response(
                401,
                {
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        if int(claims["exp"]) - time.time() > 600 + 30:
            return json_response(
                401,
                {
                    "message": "'Expiration time' claim ('exp') is too far in the future",
                    "documentation_url": GITHUB_DOCS,
                },
            )
        return Principal(f"{app.slug}[bot]", "app", token, app=app)

    def _endpoint(
        self, flavor: str, handler: Handler, auth: str = "user"
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: injected failures, authentication, the call record."""

        async def endpoint(request: Request) -> Response:
            path = request.url.path
            with self._lock:
                n, status, needle = self._fail
                failing = n > 0 and needle in path
                if failing:
                    self._fail = (n - 1, status, needle)
            principal: Principal | Response
            if failing:
                principal = json_response(status, {"message": f"{status} injected failure"})
            elif auth == "app":
                principal = self._github_app_principal(request)
            elif flavor == "gitlab":
                principal = await self._gitlab_principal(request)
            else:
                principal = await self._github_principal(request)
            user: str | None = None
            token = presented_token(request)
            if isinstance(principal, Response):
                response = principal
            else:
                response = await handler(request, principal)
                user = principal.user
            with self._lock:
                self._calls.append(
                    CallRecord(request.method, path, flavor, response.status_code, user, token)
                )
            return response

        return endpoint

    def _delete_hook(self, repo: Repo, hook_id: int, flavor: str) -> Response:
        with self._lock:
            for hook in self._hooks:
                if hook.id == hook_id and hook.repo == repo.path and not hook.deleted:
                    hook.deleted = True
                    return Response(status_code=204)
        return gitlab_404("Hook") if flavor == "gitlab" else github_404()
