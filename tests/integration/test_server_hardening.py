"""`cairn serve` as an operator and an attacker on the same machine meet it (findings M5, L4,
I1, I2, I6 and I7 of the 2026-11-30 probe), with real processes and raw sockets.

- M5: the data directory and everything in it are private to cairn's account, whatever the
  umask; a directory or database left readable by others is tightened at the next start.
- L4: a second `cairn serve` on one SQLite data directory is refused at start; after a
  kill -9 of the first, a new server starts at once (the kernel released the lock).
- I1: HTML pages refuse framing, sniffing and Referer leaks; API responses say nosniff.
- I2: a client sending headers, or a body, too slowly is cut off (408).
- I6: X-Forwarded-For is believed only from CAIRN_TRUSTED_PROXIES.
- I7: an exception that escapes a handler is a JSON:API 500 with a request id, and the
  keep-alive connection stays usable.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.responses import Response

from cairn.app import build_services, create_app
from cairn.auth.login import s256
from cairn.config import Settings
from cairn.tfeapi.http import Call, route
from tests.support import api as tfe
from tests.support import processes
from tests.support.server import CairnServer
from tests.support.statefile import post_version, state_file, version_body

SOCKET_WAIT = 30.0  # far beyond the 1 s timeouts the servers below are given


@pytest.fixture
def servers(admin_token: str, tmp_path: Path) -> Iterator[Callable[..., CairnServer]]:
    """Make (not start) plain-HTTP servers on SQLite; every one is stopped at teardown."""
    made: list[CairnServer] = []

    def make(data_dir: Path | None = None, **env: str) -> CairnServer:
        srv = CairnServer(
            data_dir=data_dir or tmp_path / f"data-{len(made)}",
            plain_http=True,
            admin_token=admin_token,
            env=env,
        )
        made.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in made:
            srv.stop()


def _modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _exposed(root: Path) -> dict[str, str]:
    """Everything under ``root`` that another account could read or enter."""
    return {name: f"{mode:o}" for name, mode in _modes(root).items() if mode & 0o077}


def _start_with_umask(srv: CairnServer, umask: int) -> None:
    previous = os.umask(umask)  # the server process inherits it
    try:
        srv.start()
    finally:
        os.umask(previous)


# --- M5 -------------------------------------------------------------------------------------


def test_data_dir_database_and_wal_are_private_whatever_the_umask(
    servers: Callable[..., CairnServer], admin_token: str
) -> None:
    srv = servers()
    _start_with_umask(srv, 0o022)
    with srv.client(admin_token) as api:
        created = api.post(
            "/api/v2/organizations",
            json={
                "data": {"type": "organizations", "attributes": {"name": "m5", "email": "a@b.c"}}
            },
        )
        assert created.status_code == 201, created.text
    data = srv.data_dir
    for name in ("cairn.db", "cairn.db-wal", "cairn.db-shm"):
        assert (data / name).exists(), name  # the server runs in WAL mode: all three exist
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "cairn.db").stat().st_mode) == 0o600
    assert _exposed(data) == {}


def test_a_data_dir_left_readable_is_tightened_at_start(
    servers: Callable[..., CairnServer], tmp_path: Path
) -> None:
    data = tmp_path / "loose"
    first = servers(data)
    first.start()
    first.stop()
    for path in (data, data / "blobs"):
        path.chmod(0o755)
    for name in ("cairn.db", "secret.key"):
        (data / name).chmod(0o600 if name == "secret.key" else 0o644)
    assert _exposed(data)  # what an older cairn (or a careless copy) leaves behind

    again = servers(data)
    _start_with_umask(again, 0o022)
    assert _exposed(data) == {}
    assert "access was taken away" in again.output()


# --- L4 -------------------------------------------------------------------------------------


def test_second_server_on_one_sqlite_dir_is_refused_and_kill9_frees_it_at_once(
    servers: Callable[..., CairnServer], tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    first = servers(data)
    first.start()

    second = servers(data)
    second.port = processes.free_port()
    try:
        refused = subprocess.run(
            second.command(),
            env=second.environment(),
            capture_output=True,
            text=True,
            timeout=SOCKET_WAIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a second cairn serve started on the data directory of a running one")
    assert refused.returncode == 2, refused
    assert "another cairn server" in refused.stderr
    assert f"pid {first.pid}" in refused.stderr
    assert str(data) in refused.stderr
    with first.client() as http:  # the first one is untouched
        assert http.get("/readyz").status_code == 200

    first.kill9()
    second.start()  # no stale lock after a crash
    with second.client() as http:
        assert http.get("/readyz").status_code == 200


# --- I1 -------------------------------------------------------------------------------------


def test_login_page_and_api_carry_security_headers(servers: Callable[..., CairnServer]) -> None:
    srv = servers()
    srv.start()
    query = {
        "client_id": "terraform-cli",
        "redirect_uri": "http://localhost:10000/login",
        "response_type": "code",
        "code_challenge": s256(str(uuid.uuid4())),
        "code_challenge_method": "S256",
        "state": "s",
    }
    with srv.client() as http:
        page = http.get("/oauth/authorization", params=query)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-frame-options"] == "DENY"
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"

        refused = http.get("/oauth/authorization", params={**query, "client_id": "x"})
        assert refused.headers["content-type"].startswith("text/html")
        assert refused.headers["x-frame-options"] == "DENY"

        for path in ("/api/v2/ping", "/api/v2/organizations", "/api/v2/nothing-here"):
            response = http.get(path)
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert "x-frame-options" not in response.headers


# --- I2 -------------------------------------------------------------------------------------


def _connect(srv: CairnServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=SOCKET_WAIT)
    sock.settimeout(SOCKET_WAIT)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it keeps the
    connection open for SOCKET_WAIT seconds."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept a stalled connection open ({received[:200]!r})")
    except ConnectionResetError:
        pass
    return received


def test_slow_or_absent_headers_are_cut_off(servers: Callable[..., CairnServer]) -> None:
    srv = servers(CAIRN_HEADER_TIMEOUT="1s")
    srv.start()
    with _connect(srv) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        answer = _read_until_closed(slow)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    with srv.client() as http:  # others are served as before
        assert http.get("/readyz").status_code == 200


def test_a_silent_connection_is_closed(servers: Callable[..., CairnServer]) -> None:
    srv = servers(CAIRN_HEADER_TIMEOUT="1s")
    srv.start()
    with _connect(srv) as silent:
        answer = _read_until_closed(silent)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_body_that_stops_arriving_is_a_408(
    servers: Callable[..., CairnServer], admin_token: str
) -> None:
    srv = servers(CAIRN_BODY_TIMEOUT="1s")
    srv.start()
    body = json.dumps(
        {"data": {"type": "organizations", "attributes": {"name": "slow", "email": "a@b.c"}}}
    ).encode()
    with _connect(srv) as slow:
        slow.sendall(
            b"POST /api/v2/organizations HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer " + admin_token.encode() + b"\r\n"
            b"Content-Type: application/vnd.api+json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
        )
        answer = _read_until_closed(slow)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"connection: close" in head.lower()
    error = json.loads(rest)["errors"][0]
    assert error["status"] == "408" and "stopped arriving" in error["detail"]
    with srv.client(admin_token) as api:  # nothing was created
        assert api.get("/api/v2/organizations/slow").status_code == 404


def test_a_state_upload_that_stops_arriving_is_a_408(
    servers: Callable[..., CairnServer], admin_token: str
) -> None:
    srv = servers(CAIRN_BODY_TIMEOUT="1s")
    srv.start()
    with srv.client(admin_token) as api:
        org = tfe.create_organization(api, "slow-upload")
        workspace_id = tfe.create_workspace(api, org, "ws")
        tfe.workspace_action(api, workspace_id, "lock")
        raw = state_file(1, str(uuid.uuid4()))
        pending = post_version(api, workspace_id, version_body(raw, inline=False)).json()["data"]
        url = httpx.URL(pending["attributes"]["hosted-state-upload-url"])
    with _connect(srv) as slow:
        slow.sendall(
            b"PUT %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % (url.raw_path, len(raw))
            + raw[:10]
        )
        answer = _read_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    with srv.client(admin_token) as api:  # nothing became current
        current = api.get(f"/api/v2/workspaces/{workspace_id}/current-state-version")
        assert current.status_code == 404, current.text


# --- I6 -------------------------------------------------------------------------------------


def _failed_login_source(srv: CairnServer, admin_token: str) -> str:
    form = {
        "client_id": "terraform-cli",
        "redirect_uri": "http://localhost:10000/login",
        "response_type": "code",
        "code_challenge": s256(str(uuid.uuid4())),
        "code_challenge_method": "S256",
        "state": "s",
        "token": "not-a-token",
    }
    with srv.client(admin_token) as http:
        refused = http.post(
            "/oauth/authorization",
            data=form,
            headers={"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https"},
        )
        assert refused.status_code == 401, refused.text
        events = http.get(
            "/api/cairn/v1/audit-events",
            params={"filter[action]": "auth.login.authorize", "filter[outcome]": "failure"},
        )
        assert events.status_code == 200, events.text
        (event,) = events.json()["data"]
        return str(event["attributes"]["source-address"])


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    servers: Callable[..., CairnServer], admin_token: str
) -> None:
    direct = servers()
    direct.start()
    assert _failed_login_source(direct, admin_token) == "127.0.0.1"

    proxied = servers(CAIRN_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1")
    proxied.start()
    assert _failed_login_source(proxied, admin_token) == "203.0.113.66"


# --- I7 -------------------------------------------------------------------------------------


def _exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """One request on an open connection; its response's head and body (by Content-Length)."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection ({received[:200]!r})"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return head, body


def test_an_escaping_exception_is_a_jsonapi_500_and_keeps_the_connection(
    tmp_path: Path, admin_token: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=admin_token).with_defaults()
    services = build_services(settings).services
    app = create_app(services)

    def explode(call: Call) -> Response:
        raise RuntimeError("secret-ish internal detail")

    # A test-only route, through the real pipeline: what any handler's bug looks like.
    app.router.routes.append(route("/explode", explode, ["GET"], auth=None))
    port = processes.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client() as probe:
            for _ in range(300):
                try:
                    probe.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as sock:
            get = b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n"
            head, body = _exchange(sock, get % b"/explode")
            assert head.startswith(b"HTTP/1.1 500"), head
            # The same connection answers the next request.
            next_head, _ = _exchange(sock, get % b"/healthz")
            assert next_head.startswith(b"HTTP/1.1 200"), next_head
        assert b"connection: close" not in head.lower()
        assert b"application/vnd.api+json" in head
        (error,) = json.loads(body)["errors"]
        assert error["status"] == "500" and error["id"] in error["detail"]
        assert f"x-request-id: {error['id']}".encode() in head.lower()
        assert b"secret-ish" not in body and b"Traceback" not in body
    finally:
        server.should_exit = True
        thread.join(SOCKET_WAIT)
        services.audited.close()
        services.db.dispose()
