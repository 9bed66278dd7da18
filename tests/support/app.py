"""cairn in-process: the real application (`create_app`) driven through `httpx.ASGITransport`.

No server process, no socket, no TLS and no waiting: each test gets a fresh SQLite data dir in
`tmp_path` and a `FrozenClock` it moves (`app.advance(...)`) to reach an expiry or a rotation
window at once. The requests go through the whole ASGI stack (middleware, routing, the request
pipeline, the services and the database), as they do on a real server.

Without a lifespan run the background loops do not start: a test that needs what one of them
does calls its step by name (`refresh_keys`, `rotate_when_due`). At teardown the audited lane
(id-token mints) is closed and the database disposed.

Fixtures (registered by `tests/api/conftest.py`): `anyio_backend` (asyncio, for anyio's pytest
plugin: mark tests `@pytest.mark.anyio`), `app` (an `InProcessCairn`) and `admin` (an
`httpx.AsyncClient` holding the site admin's token).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette

from cairn.app import Services, build_services, create_app
from cairn.clock import FrozenClock
from cairn.config import Settings, from_environment

if TYPE_CHECKING:
    from cairn.identity.plan import Plan

JSONAPI = "application/vnd.api+json"
CT = {"Content-Type": JSONAPI}
# Where the clock starts: a whole second, so timestamps in documents compare exactly.
START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class Workspace:
    """A workspace made for one test, with its organization."""

    org: str
    name: str
    id: str


@dataclass
class InProcessCairn:
    """One cairn application, its services (`ctx`) and the clock every service reads."""

    app: Starlette
    ctx: Services
    clock: FrozenClock
    admin_token: str

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def url(self) -> str:
        """The public URL (also the OIDC issuer); the clients' base URL."""
        return self.settings.public_url

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An async client for the app, with JSON:API headers and `token` as bearer."""
        headers = {"Accept": JSONAPI}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=self.url, headers=headers
        )

    def advance(self, delta: timedelta) -> None:
        """Move time for every service at once."""
        self.clock.advance(delta)

    def refresh_keys(self) -> None:
        """One step of the JWKS refresher loop (`app._keep_keys_fresh`): rebuild the served
        discovery/JWKS documents when they are stale at the clock's time."""
        if self.ctx.issuer.needs_refresh():
            self.ctx.issuer.refresh()

    def rotate_when_due(self) -> Plan | None:
        """One step of the rotation scheduler loop (`app._rotation_scheduler`): the plan it
        applied, or None when no rotation is due at the clock's time."""
        return self.ctx.issuer.tick()

    def close(self) -> None:
        self.ctx.audited.close()
        self.ctx.db.dispose()


def build(data_dir: Path, admin_token: str, **settings: Any) -> InProcessCairn:
    """A cairn application on a fresh SQLite database in `data_dir`, its clock at `START`.

    `settings` override fields of `Settings` (e.g. `upload_url_ttl_seconds=60`). The caller
    must `close()` it. CAIRN_* variables of the environment must already be cleared
    (`from_environment` reads them): the `app` fixture does that.
    """
    config = dataclasses.replace(
        from_environment(data_dir=data_dir).with_defaults(), admin_token=admin_token, **settings
    )
    clock = FrozenClock(START)
    ctx = build_services(config, clock=clock).services
    return InProcessCairn(create_app(ctx), ctx, clock, admin_token)


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    """anyio's pytest plugin runs `@pytest.mark.anyio` tests on this backend."""
    return "asyncio"


@pytest.fixture
def app(
    tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessCairn]:
    """A fresh in-process cairn for this test, free of the machine's CAIRN_* settings."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    instance = build(tmp_path / "data", admin_token)
    try:
        yield instance
    finally:
        instance.close()


SECRET_KEY = "cairn-test-secret-key-0123456789abcdef"
"""The sealing key of `any_app` on PostgreSQL (a database shared by no other server)."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_app(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InProcessCairn]:
    """An in-process cairn on SQLite, then on a fresh PostgreSQL database."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    settings: dict[str, Any] = {}
    if request.param == "postgres":
        pg = request.getfixturevalue("pg")
        settings = {"database_url": pg.create_database(), "secret_key": SECRET_KEY}
    instance = build(tmp_path / "data", admin_token, **settings)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
async def admin(app: InProcessCairn, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async client authenticated as the site admin."""
    async with app.client(app.admin_token) as client:
        yield client


# ---- API helpers --------------------------------------------------------------------------------


def document(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The JSON body of a response whose status is one of `statuses` (else: an assertion
    error showing what the app answered)."""
    assert response.status_code in statuses, (
        f"{response.request.method} {response.request.url} answered {response.status_code} "
        f"(expected {statuses}):\n{response.text[:4000]}"
    )
    doc: dict[str, Any] = response.json()
    return doc


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def create_organization(
    client: httpx.AsyncClient, name: str | None = None, email: str = "a@example.com"
) -> str:
    """POST /organizations; returns the organization's name."""
    name = name or unique_name("org")
    body = {"data": {"type": "organizations", "attributes": {"name": name, "email": email}}}
    document(await client.post("/api/v2/organizations", json=body, headers=CT), 201)
    return name


async def create_workspace(
    client: httpx.AsyncClient, org: str, name: str | None = None, **attributes: Any
) -> Workspace:
    """POST /organizations/{org}/workspaces (attributes in wire names)."""
    name = name or unique_name("ws")
    body = {"data": {"type": "workspaces", "attributes": {"name": name, **attributes}}}
    doc = document(
        await client.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT), 201
    )
    return Workspace(org, name, doc["data"]["id"])


async def organization_and_workspace(client: httpx.AsyncClient) -> Workspace:
    """A new organization holding one new workspace."""
    return await create_workspace(client, await create_organization(client))


@dataclass
class Person:
    """A user who is not a site admin, with an API token of theirs."""

    id: str
    username: str
    token: str


async def make_user(admin: httpx.AsyncClient, prefix: str = "user") -> Person:
    """A person made by the admin (`/api/cairn/v1/admin/users`), with a token made for them."""
    username = unique_name(prefix)
    response = await admin.post(
        "/api/cairn/v1/admin/users", json={"username": username, "email": f"{prefix}@example.com"}
    )
    user_id: str = document(response, 201)["data"]["id"]
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "test"}}}
    created = await admin.post(
        f"/api/v2/users/{user_id}/authentication-tokens", json=body, headers=CT
    )
    value: str = document(created, 201)["data"]["attributes"]["token"]
    return Person(user_id, username, value)


async def grant(admin: httpx.AsyncClient, ws: Workspace, person: Person, role: str) -> str:
    """Give ``person`` the workspace role ``role`` (read, plan, write, admin) on ``ws``; the
    grant's ID."""
    body = {"role": role, "user": person.username, "workspaces": ws.name}
    doc = document(await admin.post(f"/api/cairn/v1/organizations/{ws.org}/grants", json=body), 201)
    grant_id: str = doc["data"]["id"]
    return grant_id
