"""Hook registration: each pending (connection, repository) hook is created on the forge once,
with the connection's webhook URL and secret; a failure is recorded, shown in the API and tried
again later; ``CAIRN_VCS_REGISTER_HOOKS=false`` creates nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cairn import ids
from cairn.config import from_environment
from cairn.errors import ApiError, ConfigError
from cairn.organizations.model import Organization
from cairn.vcs.model import OAuthToken
from cairn.webhooks.model import VcsRepoHook
from cairn.webhooks.registration import HookForge, HookRegistrar, record_repo_hook, webhook_url
from cairn.workspaces.model import Workspace
from tests.api.webhooks.conftest import Connection, make_connection
from tests.support.app import (
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
    organization_and_workspace,
)

pytestmark = pytest.mark.anyio


class ForgeDown(ApiError):
    status = 502


@dataclass
class FakeForge:
    """The forge's hooks API: records each hook; ``failures`` are raised first, in order."""

    hooks: list[tuple[str, str, str, str]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def acting_as(self, token_id: str) -> HookForge:
        self.tokens.append(token_id)
        return self

    def create_hook(self, repo: str, url: str, secret: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        hook_id = str(100 + len(self.hooks))
        self.hooks.append((hook_id, repo, url, secret))
        return hook_id


def pending(
    app: InProcessCairn, conn: Connection, repo: str, token_id: str | None = "ot-1"
) -> None:
    now = app.clock.now()
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            VcsRepoHook(
                oauth_client_id=conn.id,
                identifier=repo,
                organization_id=conn.organization_id,
                oauth_token_id=token_id,
                state="pending",
                attempts=0,
                created_at=now,
                updated_at=now,
            )
        )
        s.commit()


def registrar(app: InProcessCairn, forge: FakeForge, *, enabled: bool = True) -> HookRegistrar:
    return HookRegistrar(
        app.ctx.db, app.ctx.keyring, app.clock, forge.acting_as, app.url, enabled=enabled
    )


def hooks(app: InProcessCairn) -> list[VcsRepoHook]:
    with app.ctx.db.unit_of_work() as s:
        return list(s.scalars(select(VcsRepoHook).order_by(VcsRepoHook.identifier)))


async def test_pending_hooks_are_created_once_with_the_connections_url_and_secret(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = make_connection(app, await create_organization(admin), "gitlab_oauth")
    pending(app, conn, "group/infra")
    pending(app, conn, "group/network", token_id="ot-2")
    forge = FakeForge()
    assert registrar(app, forge).run() == 2
    assert registrar(app, forge).run() == 0
    url = f"{app.url}/api/cairn/v1/vcs-hooks/{conn.id}"
    assert url == webhook_url(app.url, conn.id)
    assert sorted(forge.hooks) == [
        ("100", "group/infra", url, conn.secret),
        ("101", "group/network", url, conn.secret),
    ]
    assert sorted(forge.tokens) == ["ot-1", "ot-2"]
    assert [(h.state, h.forge_hook_id is not None, h.error) for h in hooks(app)] == [
        ("registered", True, None),
        ("registered", True, None),
    ]
    status = document(await admin.get(f"/api/cairn/v1/oauth-clients/{conn.id}/webhook-status"), 200)
    assert status["meta"] == {"webhook-url": url, "register-hooks": True}
    assert [(d["attributes"]["identifier"], d["attributes"]["state"]) for d in status["data"]] == [
        ("group/infra", "registered"),
        ("group/network", "registered"),
    ]


async def test_a_failed_registration_is_shown_and_tried_again_later(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = make_connection(app, await create_organization(admin), "gitlab_token")
    pending(app, conn, "group/infra")
    forge = FakeForge(
        failures=[ForgeDown("GitLab answered 403 to POST /projects/:id/hooks"), RuntimeError("x")]
    )
    assert registrar(app, forge).run() == 0
    [failed] = hooks(app)
    assert failed.state == "failed" and failed.attempts == 1
    assert (
        failed.error
        == "creating the webhook failed: GitLab answered 403 to POST /projects/:id/hooks"
    )
    assert failed.not_before == app.clock.now() + timedelta(minutes=1)
    status = document(await admin.get(f"/api/cairn/v1/oauth-clients/{conn.id}/webhook-status"), 200)
    [shown] = status["data"]
    assert shown["attributes"]["state"] == "failed"
    assert "403" in shown["attributes"]["error"] and shown["attributes"]["next-attempt-at"]
    assert registrar(app, forge).run() == 0  # not before its time
    app.advance(timedelta(minutes=1))
    assert registrar(app, forge).run() == 0  # the second failure: an unexpected error
    [again] = hooks(app)
    assert (
        again.error
        == "creating the webhook failed: RuntimeError (the details are in the server log)"
    )
    assert again.not_before == app.clock.now() + timedelta(minutes=5)
    app.advance(timedelta(minutes=5))
    assert registrar(app, forge).run() == 1
    [done] = hooks(app)
    assert (done.state, done.forge_hook_id, done.error, done.attempts) == (
        "registered",
        "100",
        None,
        3,
    )


async def test_registration_can_be_turned_off(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = make_connection(app, await create_organization(admin), "gitlab_token")
    pending(app, conn, "group/infra")
    forge = FakeForge()
    assert registrar(app, forge, enabled=False).run() == 0
    assert forge.hooks == [] and hooks(app)[0].state == "pending"


async def test_webhook_status_needs_the_vcs_permission(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = make_connection(app, await create_organization(admin), "gitlab_token")
    stranger = await make_user(admin)
    async with app.client(stranger.token) as client:
        response = await client.get(f"/api/cairn/v1/oauth-clients/{conn.id}/webhook-status")
    document(response, 404)
    document(await admin.get("/api/cairn/v1/oauth-clients/oc-nothere/webhook-status"), 404)
    async with app.client() as anonymous:
        document(await anonymous.get(f"/api/cairn/v1/oauth-clients/{conn.id}/webhook-status"), 401)


def workspace_with_repo(
    app: InProcessCairn, ws_id: str, conn: Connection, token_id: str, repo: str, *, fill: bool
) -> None:
    """Give the workspace a repository as the workspace service does (the row changed, then
    the check_settings callbacks in its transaction); ``fill``: cairn.vcs's own check already
    filled ``vcs_oauth_client_id``."""
    check = record_repo_hook(app.clock)
    with app.ctx.db.unit_of_work(write=True) as s:
        ws = s.get(Workspace, ws_id)
        assert ws is not None
        org = s.get(Organization, ws.organization_id)
        assert org is not None
        ws.vcs_identifier = repo
        ws.vcs_oauth_token_id = token_id
        ws.vcs_oauth_client_id = conn.id if fill else None
        check(s, org, ws)
        s.commit()


def oauth_token(app: InProcessCairn, conn: Connection) -> str:
    token_id = ids.new_id("oauth_token")
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            OAuthToken(
                id=token_id,
                oauth_client_id=conn.id,
                organization_id=conn.organization_id,
                access_token_sealed=b"sealed",
                created_at=app.clock.now(),
            )
        )
        s.commit()
    return token_id


@pytest.mark.parametrize("fill", [True, False], ids=["client-filled", "client-from-token"])
async def test_a_workspace_getting_a_repository_asks_for_its_hook_once(
    app: InProcessCairn, admin: httpx.AsyncClient, fill: bool
) -> None:
    ws = await organization_and_workspace(admin)
    other = await create_workspace(admin, ws.org)
    conn = make_connection(app, ws.org, "gitlab_oauth")
    token = oauth_token(app, conn)
    workspace_with_repo(app, ws.id, conn, token, "group/infra", fill=fill)
    workspace_with_repo(app, other.id, conn, token, "group/infra", fill=fill)
    [row] = hooks(app)
    assert (row.oauth_client_id, row.identifier, row.state, row.oauth_token_id) == (
        conn.id,
        "group/infra",
        "pending",
        token,
    )


async def test_a_github_app_repository_needs_no_hook(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    conn = make_connection(app, ws.org, "github_app")
    workspace_with_repo(app, ws.id, conn, oauth_token(app, conn), "octo/infra", fill=True)
    assert hooks(app) == []


async def test_saving_a_workspace_again_retries_a_failed_registration_at_once(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    conn = make_connection(app, ws.org, "gitlab_token")
    first = oauth_token(app, conn)
    workspace_with_repo(app, ws.id, conn, first, "group/infra", fill=True)
    forge = FakeForge(failures=[ForgeDown("GitLab answered 401: the token was revoked")])
    assert registrar(app, forge).run() == 0
    assert hooks(app)[0].not_before is not None
    fixed = oauth_token(app, conn)
    workspace_with_repo(app, ws.id, conn, fixed, "group/infra", fill=True)
    assert registrar(app, forge).run() == 1
    assert forge.tokens == [first, fixed]
    [done] = hooks(app)
    assert (done.state, done.oauth_token_id) == ("registered", fixed)
    # A registered hook is not asked for again.
    workspace_with_repo(app, ws.id, conn, first, "group/infra", fill=True)
    assert registrar(app, forge).run() == 0 and hooks(app)[0].oauth_token_id == fixed


@pytest.mark.parametrize(
    ("value", "enabled"), [(None, True), ("false", False), ("0", False), ("true", True)]
)
def test_cairn_vcs_register_hooks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None, enabled: bool
) -> None:
    for key in list(os.environ):
        if key.startswith("CAIRN_"):
            monkeypatch.delenv(key)
    if value is not None:
        monkeypatch.setenv("CAIRN_VCS_REGISTER_HOOKS", value)
    assert from_environment(data_dir=tmp_path).vcs_register_hooks is enabled


def test_a_misspelt_cairn_vcs_register_hooks_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAIRN_VCS_REGISTER_HOOKS", "flase")
    with pytest.raises(ConfigError, match="CAIRN_VCS_REGISTER_HOOKS must be true or false"):
        from_environment(data_dir=tmp_path)
