"""Rows for the token service's tests: an organization, a connection and a token row, sealed
as ``cairn.vcs`` seals them, and a ``VcsTokens`` over an in-process cairn's database."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from cairn import ids
from cairn.organizations.model import Organization
from cairn.vcs.model import (
    OAuthClient,
    OAuthToken,
    access_aad,
    app_key_aad,
    refresh_aad,
    secret_aad,
    webhook_secret_aad,
)
from cairn.vcs.tokens import VcsTokens
from tests.support.app import InProcessCairn, create_organization

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"


def new_org(app: InProcessCairn) -> str:
    """A new organization's id."""

    async def make() -> str:
        async with app.client(app.admin_token) as admin:
            return await create_organization(admin)

    name = asyncio.run(make())
    with app.ctx.db.unit_of_work() as s:
        org_id = s.scalar(select(Organization.id).where(Organization.name == name))
    assert org_id is not None
    return org_id


def connection(
    app: InProcessCairn,
    org_id: str,
    *,
    kind: str,
    http_url: str,
    api_url: str,
    key: str | None = None,
    secret: str | None = None,
    app_id: str | None = None,
    app_key: str | None = None,
) -> str:
    """A connection row; its id."""
    cid = ids.new_id("oauth_client")
    keys = app.ctx.keyring
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            OAuthClient(
                id=cid,
                organization_id=org_id,
                name=None,
                service_provider="gitlab_hosted" if kind.startswith("gitlab") else "github",
                kind=kind,
                http_url=http_url,
                api_url=api_url,
                key=key,
                secret_sealed=keys.seal(secret.encode(), aad=secret_aad(cid)) if secret else None,
                app_id=app_id,
                app_key_sealed=keys.seal(app_key.encode(), aad=app_key_aad(cid))
                if app_key
                else None,
                webhook_secret_sealed=keys.seal(
                    secrets.token_bytes(16), aad=webhook_secret_aad(cid)
                ),
                organization_scoped=True,
                allow_fork_plans=False,
                created_at=app.clock.now(),
            )
        )
        s.commit()
    return cid


def token(
    app: InProcessCairn,
    client_id: str,
    org_id: str,
    *,
    access: str,
    refresh: str | None,
    expires_at: datetime | None,
    installation_id: int | None = None,
) -> str:
    """A token row at generation 0; its id."""
    tid = ids.new_id("oauth_token")
    keys = app.ctx.keyring
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            OAuthToken(
                id=tid,
                oauth_client_id=client_id,
                organization_id=org_id,
                service_provider_user="alice",
                access_token_sealed=keys.seal(access.encode(), aad=access_aad(tid, 0)),
                refresh_token_sealed=keys.seal(refresh.encode(), aad=refresh_aad(tid, 0))
                if refresh
                else None,
                expires_at=expires_at,
                generation=0,
                status="ok",
                github_installation_id=installation_id,
                ghain_id=ids.new_id("github_app_installation") if installation_id else None,
                created_at=app.clock.now(),
            )
        )
        s.commit()
    return tid


def row(app: InProcessCairn, token_id: str) -> OAuthToken:
    with app.ctx.db.unit_of_work() as s:
        found = s.get(OAuthToken, token_id)
        assert found is not None
        s.expunge(found)
        return found


def gitlab_oauth_token(
    app: InProcessCairn, op: Any, *, expires_in: timedelta = timedelta(minutes=-1)
) -> tuple[str, str, dict[str, Any], Any]:
    """A gitlab_oauth connection on its own client of ``op`` and a token holding a fresh grant
    that expires ``expires_in`` from the clock's now: (token id, client id, grant, op client)."""
    client = op.add_client(redirect_uris=(REDIRECT_URI,))
    grant = op.grant(client)
    org_id = new_org(app)
    cid = connection(
        app,
        org_id,
        kind="gitlab_oauth",
        http_url=op.url,
        api_url=op.url + "/api/v4",
        key=client.client_id,
        secret=client.client_secret,
    )
    tid = token(
        app,
        cid,
        org_id,
        access=grant["access_token"],
        refresh=grant["refresh_token"],
        expires_at=app.clock.now() + expires_in,
    )
    return tid, cid, grant, client


def vcs_tokens(app: InProcessCairn, **kwargs: Any) -> VcsTokens:
    return VcsTokens(app.ctx.db, app.ctx.keyring, app.clock, lambda _cid: REDIRECT_URI, **kwargs)
