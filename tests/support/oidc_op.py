"""A real OpenID Provider for the tests: panva's ``oidc-provider`` (npm) run by node.

The provider lives in ``tests/support/oidc_op/`` (``server.mjs``, ``package.json`` and
``package-lock.json``); ``npm ci --prefix tests/support/oidc_op`` installs it (``make test``
does). It listens on 127.0.0.1 over plain http (a loopback issuer, which cairn allows), has one
confidential client, logs user ``alice`` in without a form, requires PKCE and signs ID tokens
with RS256. Its test-only admin endpoints rotate the signing key, make the JWKS endpoint fail,
and count JWKS requests.

``oidc_op`` is a session fixture (import it into a conftest). ``start_oidc_op`` starts another
one, e.g. with cairn's real callback URL as a redirect URI. Processes are stopped by pid.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.support import processes

OP_DIR = Path(__file__).parent / "oidc_op"
INSTALL_HINT = "npm ci --prefix tests/support/oidc_op"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:9/auth/oidc/callback"  # never served: captured


class OidcOpUnavailable(RuntimeError):
    """node or the installed oidc-provider package is missing."""


@dataclass
class OidcOp:
    """One running provider and its static client and user."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    user_sub: str
    user_email: str
    user_groups: tuple[str, ...]
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _admin(self, method: str, path: str, **params: str) -> dict[str, Any]:
        resp = httpx.request(method, self.issuer + path, params=params, timeout=10)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def rotate(self) -> str:
        """Sign with a fresh key from now on (the old one stays published); its kid."""
        kid: str = self._admin("POST", "/admin/rotate")["signing_kid"]
        return kid

    def fail_jwks(self, failing: bool) -> None:
        """Make the JWKS endpoint answer 500 (True) or work again (False)."""
        self._admin("POST", "/admin/jwks", fail="1" if failing else "0")

    def stats(self) -> dict[str, Any]:
        """``{"jwks_requests": n, "signing_kid": ..., "kids": [...]}``."""
        return self._admin("GET", "/admin/stats")

    def jwks_requests(self) -> int:
        return int(self.stats()["jwks_requests"])

    def signing_kid(self) -> str:
        return str(self.stats()["signing_kid"])

    def authorize(self, url: str, *, max_hops: int = 10) -> dict[str, str]:
        """Play the browser: follow the IdP's redirects (keeping its cookies) from the
        authorization URL until one points at a registered redirect URI, and return that
        callback's query parameters without requesting it."""
        with httpx.Client(follow_redirects=False, timeout=10) as browser:
            resp = browser.get(url)
            for _ in range(max_hops):
                location = resp.headers.get("location")
                if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                    raise AssertionError(
                        f"the IdP stopped at HTTP {resp.status_code} without redirecting: "
                        f"{resp.text[:500]}"
                    )
                target = str(resp.url.join(location))
                if any(target.startswith(uri + "?") for uri in self.redirect_uris):
                    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
                resp = browser.get(target)
        raise AssertionError(f"no redirect to {self.redirect_uris} after {max_hops} hops")

    def errors(self) -> str:
        return processes.tail(self.log_path)

    def stop(self) -> None:
        processes.stop(self.proc)
        if self._log is not None:
            self._log.close()


def check_installed() -> str:
    """The node binary; raises OidcOpUnavailable with the command that fixes it."""
    node = shutil.which("node")
    if node is None:
        raise OidcOpUnavailable("node is not installed; the test OpenID Provider needs node ≥ 20")
    if not (OP_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        raise OidcOpUnavailable(f"the test OpenID Provider is not installed; run: {INSTALL_HINT}")
    return node


def start_oidc_op(
    log_dir: Path,
    *,
    redirect_uris: Sequence[str] = (DEFAULT_REDIRECT_URI,),
    client_id: str = "cairn-test",
    user_sub: str = "alice",
    user_email: str = "alice@example.test",
    user_groups: Sequence[str] = ("platform", "readers"),
    timeout: float = 30.0,
) -> OidcOp:
    """Start a provider on a free loopback port and wait until its discovery answers."""
    node = check_installed()
    port = processes.free_port()
    secret = "op-secret-" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "OP_PORT": str(port),
        "OP_CLIENT_ID": client_id,
        "OP_CLIENT_SECRET": secret,
        "OP_REDIRECT_URI": ",".join(redirect_uris),
        "OP_USER_SUB": user_sub,
        "OP_USER_EMAIL": user_email,
        "OP_USER_GROUPS": ",".join(user_groups),
        "NODE_ENV": "test",
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"oidc-op-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by OidcOp.stop
    proc = subprocess.Popen(
        [node, "server.mjs"], cwd=OP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    processes.register(proc)
    op = OidcOp(
        issuer=f"http://127.0.0.1:{port}",
        client_id=client_id,
        client_secret=secret,
        redirect_uris=tuple(redirect_uris),
        user_sub=user_sub,
        user_email=user_email,
        user_groups=tuple(user_groups),
        log_path=log_path,
        proc=proc,
        _log=log,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            op.stop()
            raise RuntimeError(f"the test OpenID Provider exited at start:\n{op.errors()}")
        try:
            if httpx.get(op.issuer + "/.well-known/openid-configuration", timeout=2).is_success:
                return op
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    op.stop()
    raise RuntimeError(f"the test OpenID Provider did not start in {timeout}s:\n{op.errors()}")


@pytest.fixture(scope="session")
def oidc_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcOp]:
    """The session's OpenID Provider. Skipped when node or the npm package is missing,
    except in CI (env CI set), where that is a failure: ``make test`` installs it."""
    try:
        check_installed()
    except OidcOpUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    op = start_oidc_op(tmp_path_factory.mktemp("oidc-op"))
    try:
        yield op
    finally:
        op.stop()
