"""A fake forge: the GitLab v4 and GitHub REST calls cairn makes, over real git repositories.

No GitLab or GitHub can run here (runs-agents-vcs.md §3.1), so this Starlette app answers the
calls cairn's forge clients make, with the real services' shapes and failure modes: GitLab
OAuth bearers are checked against the GitLab token endpoint (``GitLabOp``; a rotated token is
401 ``invalid_token`` at once), PATs / GitHub App installation tokens / GitHub OAuth tokens come
from its own registry with expiry, the app JWT is verified (RS256, PyJWT) against the app's
public key, archives are ``git archive`` of the commit, clone URLs are ``git http-backend``.
It records statuses, hooks, archive downloads and calls for the tests' assertions. It runs in
a thread of the test process (uvicorn), on 127.0.0.1 and a port of its own. API in README.md.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tests.support.vcs.github_api import GitHubApi
from tests.support.vcs.gitlab_api import GitLabApi
from tests.support.vcs.gitlab_op import GitLabOp
from tests.support.vcs.model import (
    CallRecord,
    GitHubApp,
    HookRecord,
    IssuedToken,
    MergeRequest,
    Repo,
    StatusRecord,
    form_or_json,
    http_backend,
    json_response,
)


class Forge(GitLabApi, GitHubApi):
    """The fake forge. Start with ``Forge(root, gitlab_op).start()``; ``stop()`` at the end."""

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Forge:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            lifespan="on",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-forge"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake forge did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    # ---- the ASGI app ------------------------------------------------------------------------
    def app(self) -> Starlette:
        gl, gh = "gitlab", "github"
        routes = [
            Route("/oauth/{rest:path}", self._proxy_oauth, methods=["GET", "POST"]),
            Route("/interaction/{rest:path}", self._proxy_oauth, methods=["GET", "POST"]),
            Route("/login/oauth/authorize", self._github_oauth_authorize, methods=["GET"]),
            Route("/login/oauth/access_token", self._github_oauth_token, methods=["POST"]),
            Route("/api/v4/user", self._endpoint(gl, self._gl_user)),
            Route("/api/v4/personal_access_tokens/self", self._endpoint(gl, self._gl_pat_self)),
            Route(
                "/api/v4/projects/{rest:path}",
                self._endpoint(gl, self._gl_projects),
                methods=["GET", "POST", "PUT", "DELETE"],
            ),
            Route("/api/v3/user", self._endpoint(gh, self._gh_user)),
            Route("/api/v3/app/installations", self._endpoint(gh, self._gh_installations, "app")),
            Route(
                "/api/v3/app/installations/{id:int}/access_tokens",
                self._endpoint(gh, self._gh_access_token, "app"),
                methods=["POST"],
            ),
            Route(
                "/api/v3/repos/{owner}/{name}{rest:path}",
                self._endpoint(gh, self._gh_repos),
                methods=["GET", "POST", "PATCH", "DELETE"],
            ),
            Route("/_codeload/{owner}/{name}/legacy.tar.gz/{sha}", self._codeload_get),
            Route("/{repo:path}.git/{rest:path}", self._git_http, methods=["GET", "POST"]),
        ]

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            async with httpx.AsyncClient(timeout=300) as client:
                self._http = client
                yield
            self._http = None

        return Starlette(routes=routes, lifespan=lifespan)

    # ---- OAuth: GitLab proxied to the token endpoint, GitHub OAuth App here --------------------
    async def _proxy_oauth(self, request: Request) -> Response:
        assert self._http is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "authorization", "cookie", "accept")
        }
        resp = await self._http.request(
            request.method,
            f"{self.gitlab_op.url}{request.url.path}",
            params=request.url.query,
            content=await request.body(),
            headers=headers,
        )
        out = Response(resp.content, status_code=resp.status_code)
        for key in ("content-type", "location", "cache-control"):
            if key in resp.headers:
                out.headers[key] = resp.headers[key]
        for cookie in resp.headers.get_list("set-cookie"):
            out.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))
        return out

    async def _github_oauth_authorize(self, request: Request) -> Response:
        client_id = request.query_params.get("client_id", "")
        app = self._oauth_apps.get(client_id)
        if app is None:
            return json_response(404, {"message": "Not Found"})
        redirect_uri = request.query_params.get("redirect_uri") or app.redirect_uri
        if redirect_uri not in app.redirect_uris:
            return Response("The redirect_uri MUST match the registered callback URL", 400)
        code = secrets.token_hex(10)
        with self._lock:
            self._oauth_codes[code] = (client_id, redirect_uri)
        query = {"code": code}
        if "state" in request.query_params:
            query["state"] = request.query_params["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    async def _github_oauth_token(self, request: Request) -> Response:
        params = await form_or_json(request)
        app = self._oauth_apps.get(str(params.get("client_id", "")))
        result: dict[str, Any]
        if app is None or not secrets.compare_digest(
            str(params.get("client_secret", "")), app.client_secret
        ):
            result = {
                "error": "incorrect_client_credentials",
                "error_description": "The client_id and/or client_secret passed are incorrect.",
            }
        else:
            with self._lock:
                issued = self._oauth_codes.pop(str(params.get("code", "")), None)
            if issued is None or issued[0] != app.client_id:
                result = {
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                }
            else:
                token = "gho_" + secrets.token_urlsafe(27)
                with self._lock:
                    self._tokens[token] = IssuedToken(
                        token, "github_oauth", "alice", ("repo",), None
                    )
                result = {"access_token": token, "token_type": "bearer", "scope": "repo"}
        # GitHub answers 200 even for errors; JSON only when asked for.
        if "application/json" in request.headers.get("accept", ""):
            return json_response(200, result)
        return Response(urlencode(result), 200, media_type="application/x-www-form-urlencoded")

    async def _codeload_get(self, request: Request) -> Response:
        with self._lock:
            entry = self._codeload.pop(request.query_params.get("token", ""), None)
        owner, name, sha = (request.path_params[k] for k in ("owner", "name", "sha"))
        if entry is None or entry != (f"{owner}/{name}", sha):
            return Response("Not Found", 404)
        repo = self._repos[entry[0]]
        data = await run_in_threadpool(repo.git.archive, sha, f"{owner}-{name}-{sha[:7]}")
        with self._lock:
            self._archives.append((repo.path, sha))
        return Response(
            data,
            media_type="application/x-gzip",
            headers={
                "Content-Disposition": f"attachment; filename={owner}-{name}-{sha[:7]}.tar.gz"
            },
        )

    # ---- git smart HTTP (read-only) ----------------------------------------------------------
    async def _git_http(self, request: Request) -> Response:
        repo = self._repos.get(request.path_params["repo"])
        if repo is None:
            return Response("Repository not found\n", 404)
        body = await request.body()
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo.path}.git/{request.path_params['rest']}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_GIT_PROTOCOL": request.headers.get("git-protocol", ""),
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": "/usr/bin:/bin",
        }
        if request.headers.get("content-encoding") == "gzip":
            env["HTTP_CONTENT_ENCODING"] = "gzip"

        def run() -> bytes:
            return subprocess.run(
                [str(http_backend())], input=body, env=env, capture_output=True, check=False
            ).stdout

        out = await run_in_threadpool(run)
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return Response(payload, status_code=status, headers=headers)


def start_forge(root: Path, gitlab_op: GitLabOp) -> Forge:
    """A started forge whose repositories live under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return Forge(root, gitlab_op).start()


__all__ = [
    "CallRecord",
    "Forge",
    "GitHubApp",
    "HookRecord",
    "IssuedToken",
    "MergeRequest",
    "Repo",
    "StatusRecord",
    "start_forge",
]
