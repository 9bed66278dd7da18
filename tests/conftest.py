"""Fixtures shared by every test layer: PostgreSQL, real cairn servers, API clients.

`server` is parametrised over the two metadata backends, ids `sqlite` and `postgres` (the
latter marked `postgres`). It is module-scoped: one server per backend per test module, so
tests isolate themselves by creating their own organization (`org` / `make_org`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import httpx
import pytest
from pytfe import TFEClient

from tests.support import api as tfe_api
from tests.support.postgres import PostgresCluster, PostgresUnavailable, find_bindir
from tests.support.server import CairnServer, running_servers

# The VCS rig's fixtures (gitlab_op, forge, ...: tests/support/vcs/README.md), for every test dir.
pytest_plugins = ["tests.support.vcs.fixtures"]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

# With PostgreSQL cairn requires CAIRN_SECRET_KEY (≥ 32 characters); any fixed value will do.
TEST_SECRET_KEY = "cairn-test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def admin_token() -> str:
    """The site admin's API token, handed to every server as CAIRN_ADMIN_TOKEN."""
    return f"cairn-test-admin-{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    """A throw-away PostgreSQL cluster for the session.

    Skipped only when the machine has no PostgreSQL binaries at all, and never in CI (env CI
    set): there a missing PostgreSQL is a failure, because `make test` installs it first.
    """
    try:
        bindir = find_bindir()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but PostgreSQL is unavailable: {exc}", pytrace=False)
        pytest.skip(str(exc))
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def start_server(
    request: pytest.FixtureRequest,
    data_dir: Path,
    backend: str,
    admin_token: str,
    *,
    plain_http: bool = False,
    env: dict[str, str] | None = None,
) -> CairnServer:
    """Start a cairn server on `backend` (a fresh PostgreSQL database when `postgres`)."""
    database_url = None
    server_env = dict(env or {})
    if backend == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg")
        database_url = cluster.create_database()
        server_env.setdefault("CAIRN_SECRET_KEY", TEST_SECRET_KEY)
    server = CairnServer(
        data_dir=data_dir,
        database_url=database_url,
        plain_http=plain_http,
        admin_token=admin_token,
        env=server_env,
    )
    return server.start()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """`sqlite` or `postgres`: the metadata database of the module's servers."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CairnServer]:
    """One HTTPS cairn server (dev CA) per backend per module."""
    srv = start_server(request, tmp_path_factory.mktemp(f"cairn-{backend}"), backend, admin_token)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def plain_server(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CairnServer]:
    """One plain-HTTP cairn server per backend per module (its own data dir and database)."""
    data_dir = tmp_path_factory.mktemp(f"cairn-{backend}-http")
    srv = start_server(request, data_dir, backend, admin_token, plain_http=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(
    request: pytest.FixtureRequest, admin_token: str, tmp_path: Path
) -> Iterator[Callable[..., CairnServer]]:
    """Start extra servers inside one test (restarts, crashes); all stopped at teardown."""
    started: list[CairnServer] = []

    def make(
        backend: str = "sqlite", *, plain_http: bool = False, env: dict[str, str] | None = None
    ) -> CairnServer:
        data_dir = tmp_path / f"cairn-{len(started)}"
        srv = start_server(request, data_dir, backend, admin_token, plain_http=plain_http, env=env)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def api(server: CairnServer, admin_token: str) -> Iterator[httpx.Client]:
    """An httpx client for `server` authenticated as the site admin."""
    with server.client(admin_token) as client:
        yield client


@pytest.fixture
def make_org(api: httpx.Client) -> Callable[..., str]:
    """Create a fresh organization on `server` (admin token); returns its name."""

    def make(prefix: str = "org", email: str = "a@example.com") -> str:
        return tfe_api.create_organization(api, tfe_api.unique_name(prefix), email)

    return make


@pytest.fixture
def org(make_org: Callable[..., str]) -> str:
    """The name of an organization created for this test alone."""
    return make_org()


@pytest.fixture
def tfe(server: CairnServer, admin_token: str) -> Iterator[TFEClient]:
    """pytfe's client for `server`, authenticated as the site admin."""
    client = tfe_api.pytfe_client(server, admin_token)
    try:
        yield client
    finally:
        client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the error log of every running cairn server to the report."""
    report = yield
    if report.failed:
        for srv in running_servers():
            errors = srv.errors()
            if errors:
                report.sections.append((f"cairn {srv.url} (pid {srv.pid}) errors", errors))
    return report
