"""GitLab's OAuth token endpoint for the tests: ``tests/support/oidc_op/gitlab.mjs`` run by node.

GitLab rotates refresh tokens, kills the old pair at once and lets one of several concurrent
refreshes win; cairn's single-flight token service (VCS-02..07) is tested against exactly that,
and against oidc-provider's stricter reuse detection (``strict``). The admin calls let a test
mint a starting pair without a browser, count token POSTs, slow or break the endpoint, and ask
whether an access token is still alive (the fake forge does, to answer 401 like GitLab).
Processes are stopped by pid.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.support import processes

OP_DIR = Path(__file__).parent.parent / "oidc_op"
INSTALL_HINT = "npm ci --prefix tests/support/oidc_op"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never served: captured


class GitLabOpUnavailable(RuntimeError):
    """node or the installed npm packages are missing."""


@dataclass(frozen=True)
class OAuthApp:
    """A confidential OAuth application registered at the (fake) forge."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]


@dataclass
class GitLabOp:
    """One running token endpoint."""

    url: str
    strict: bool
    client: OAuthApp
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)
    _apps: list[OAuthApp] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def token_url(self) -> str:
        return self.url + "/oauth/token"

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = httpx.request(method, f"{self.url}/_admin/{path}", json=body, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def add_client(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        redirect_uris: tuple[str, ...] | list[str] = (DEFAULT_REDIRECT_URI,),
    ) -> OAuthApp:
        """Register another confidential application (e.g. with cairn's real callback URL)."""
        app = OAuthApp(
            client_id=client_id or "gl-app-" + secrets.token_hex(6),
            client_secret=client_secret or "gloas-" + secrets.token_urlsafe(24),
            redirect_uris=tuple(redirect_uris),
        )
        self._admin(
            "POST",
            "clients",
            {
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "redirect_uris": list(app.redirect_uris),
            },
        )
        self._apps.append(app)
        return app

    def grant(self, client: OAuthApp | None = None, *, scope: str = "api") -> dict[str, Any]:
        """A fresh access/refresh pair for ``client`` as if the user had just authorised it."""
        app = client or self.client
        pair: dict[str, Any] = self._admin(
            "POST", "grant", {"client_id": app.client_id, "scope": scope}
        )
        return pair

    def _token(self, form: dict[str, str], client: OAuthApp | None) -> httpx.Response:
        app = client or self.client
        data = {**form, "client_id": app.client_id, "client_secret": app.client_secret}
        return httpx.post(self.token_url, data=data, timeout=300)

    def exchange_code(
        self, code: str, client: OAuthApp | None = None, redirect_uri: str | None = None
    ) -> httpx.Response:
        app = client or self.client
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri or app.redirect_uri,
        }
        return self._token(form, app)

    def refresh(
        self, refresh_token: str, client: OAuthApp | None = None, redirect_uri: str | None = None
    ) -> httpx.Response:
        app = client or self.client
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "redirect_uri": redirect_uri or app.redirect_uri,
        }
        return self._token(form, app)

    def authorize(self, url: str, *, max_hops: int = 10) -> dict[str, str]:
        """Play the browser from ``url`` (cairn's connect URL, or an ``/oauth/authorize`` URL on
        the node server or the forge): follow redirects, keeping cookies, through the user's login
        and consent, and return the query of the redirect to a registered redirect URI (of a
        client added through this object) without requesting it."""
        with httpx.Client(follow_redirects=False, timeout=10) as browser:
            resp = browser.get(url)
            for _ in range(max_hops):
                location = resp.headers.get("location")
                if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                    raise AssertionError(
                        f"the authorization server stopped at HTTP {resp.status_code} "
                        f"without redirecting: {resp.text[:500]}"
                    )
                target = str(resp.url.join(location))
                base = target.split("?", 1)[0]
                if base in self.redirect_uris():
                    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
                resp = browser.get(target)
        raise AssertionError(f"no redirect to a registered redirect URI after {max_hops} hops")

    def redirect_uris(self) -> set[str]:
        """Every redirect URI of every client registered through this object."""
        return {uri for app in (self.client, *self._apps) for uri in app.redirect_uris}

    def check(self, access_token: str) -> dict[str, Any]:
        """``{"active": True, "user": ..., ...}`` or ``{"active": False, "reason": ...}``."""
        result: dict[str, Any] = self._admin("POST", "check", {"token": access_token})
        return result

    def stats(self, client: OAuthApp | None = None) -> dict[str, Any]:
        path = "stats" if client is None else f"stats?client_id={client.client_id}"
        result: dict[str, Any] = self._admin("GET", path)
        return result

    def reset_stats(self) -> None:
        self._admin("POST", "stats/reset")

    def revoke_all(self, client: OAuthApp | None = None) -> None:
        self._admin("POST", "revoke", {"client_id": client.client_id} if client else {})

    def fail_next(self, n: int = 1, mode: str = "500") -> None:
        """The next ``n`` token POSTs fail: ``500`` unprocessed, ``hang`` never answered,
        ``lost`` processed (the refresh token is rotated) and then answered 500."""
        self._admin("POST", "fail-next", {"n": n, "mode": mode})

    def set_delay(self, ms: int) -> None:
        self._admin("POST", "config", {"delay_ms": ms})

    def set_access_ttl(self, seconds: int) -> None:
        self._admin("POST", "config", {"access_ttl": seconds})

    def errors(self) -> str:
        return processes.tail(self.log_path)

    def stop(self) -> None:
        processes.stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def check_installed() -> str:
    """The node binary; raises GitLabOpUnavailable with the command that fixes it."""
    node = shutil.which("node")
    if node is None:
        raise GitLabOpUnavailable("node is not installed; the GitLab token endpoint needs node")
    for package in ("oidc-provider", "@octokit/webhooks-examples"):
        if not (OP_DIR / "node_modules" / package / "package.json").is_file():
            raise GitLabOpUnavailable(f"{package} is not installed; run: {INSTALL_HINT}")
    return node


def start_gitlab_op(
    log_dir: Path,
    *,
    strict: bool = False,
    access_ttl: int = 7200,
    delay_ms: int = 0,
    redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,),
    timeout: float = 30.0,
) -> GitLabOp:
    """Start a token endpoint on a free loopback port with one client; wait until it answers."""
    node = check_installed()
    port = processes.free_port()
    client = OAuthApp(
        client_id="gl-app-" + secrets.token_hex(6),
        client_secret="gloas-" + secrets.token_urlsafe(24),
        redirect_uris=redirect_uris,
    )
    clients = [
        {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uris": list(redirect_uris),
        }
    ]
    argv = [node, "gitlab.mjs", "--port", str(port), "--access-ttl", str(access_ttl)]
    argv += ["--delay-ms", str(delay_ms), "--clients", json.dumps(clients)]
    if strict:
        argv.append("--strict")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"gitlab-op-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by GitLabOp.stop
    env = {**os.environ, "NODE_ENV": "test"}
    proc = subprocess.Popen(argv, cwd=OP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    processes.register(proc)
    op = GitLabOp(
        url=f"http://127.0.0.1:{port}",
        strict=strict,
        client=client,
        log_path=log_path,
        proc=proc,
        _log=log,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            op.stop()
            raise RuntimeError(f"the GitLab token endpoint exited at start:\n{op.errors()}")
        try:
            if httpx.get(op.url + "/_admin/stats", timeout=2).is_success:
                return op
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    op.stop()
    raise RuntimeError(f"the GitLab token endpoint did not start in {timeout}s:\n{op.errors()}")
