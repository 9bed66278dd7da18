"""Webhook tests in-process: VCS connections made as rows (the connection API belongs to
``cairn.vcs``; these tests need only what the receiver reads), and forge-like deliveries —
GitLab's ``X-Gitlab-Token`` and GitHub's ``X-Hub-Signature-256`` exactly as the forges send them
(https://docs.gitlab.com/user/project/integrations/webhooks/,
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from cairn import ids
from cairn.organizations.model import Organization
from cairn.vcs.model import OAuthClient, webhook_secret_aad
from tests.api.conftest import admin, any_app, anyio_backend, app
from tests.support.app import InProcessCairn

__all__ = [
    "Connection",
    "admin",
    "any_app",
    "anyio_backend",
    "app",
    "github_headers",
    "github_push",
    "gitlab_headers",
    "gitlab_push",
    "make_connection",
    "send",
    "set_secret",
]

PROVIDERS = {
    "gitlab_oauth": "gitlab_hosted",
    "gitlab_token": "gitlab_hosted",
    "github_app": "github",
    "github_oauth": "github",
    "github_token": "github",
}


@dataclass
class Connection:
    id: str
    kind: str
    secret: str
    organization_id: str

    @property
    def path(self) -> str:
        return f"/api/cairn/v1/vcs-hooks/{self.id}"


def make_connection(app: InProcessCairn, org: str, kind: str = "gitlab_token") -> Connection:
    """A connection of ``kind`` in organization ``org``, its webhook secret sealed as
    ``cairn.vcs`` seals it."""
    client_id = ids.new_id("oauth_client")
    secret = secrets.token_urlsafe(24)
    gitlab = kind.startswith("gitlab")
    with app.ctx.db.unit_of_work(write=True) as s:
        org_id = s.scalar(select(Organization.id).where(Organization.name == org))
        assert org_id is not None
        s.add(
            OAuthClient(
                id=client_id,
                organization_id=org_id,
                name=None,
                service_provider=PROVIDERS[kind],
                kind=kind,
                http_url="https://gitlab.example" if gitlab else "https://github.example",
                api_url="https://gitlab.example/api/v4" if gitlab else "https://api.github.example",
                webhook_secret_sealed=app.ctx.keyring.seal(
                    secret.encode(), aad=webhook_secret_aad(client_id)
                ),
                organization_scoped=True,
                allow_fork_plans=False,
                created_at=app.clock.now(),
            )
        )
        s.commit()
    return Connection(client_id, kind, secret, org_id)


def set_secret(app: InProcessCairn, conn: Connection, secret: str) -> None:
    """Change the connection's webhook secret (as rotating it in cairn.vcs would)."""
    with app.ctx.db.unit_of_work(write=True) as s:
        client = s.get(OAuthClient, conn.id)
        assert client is not None
        client.webhook_secret_sealed = app.ctx.keyring.seal(
            secret.encode(), aad=webhook_secret_aad(conn.id)
        )
        s.commit()
    conn.secret = secret


def gitlab_push(ref: str = "refs/heads/main", sha: str | None = None) -> dict[str, Any]:
    """A GitLab push event body (the fields the ingest reads)."""
    sha = sha or secrets.token_hex(20)
    return {
        "object_kind": "push",
        "ref": ref,
        "before": "0" * 40,
        "after": sha,
        "checkout_sha": sha,
        "user_username": "alice",
        "project": {"path_with_namespace": "group/infra", "default_branch": "main"},
        "commits": [{"id": sha, "added": ["main.tf"], "modified": [], "removed": []}],
        "total_commits_count": 1,
    }


def github_push(ref: str = "refs/heads/main") -> dict[str, Any]:
    sha = secrets.token_hex(20)
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": sha,
        "repository": {"full_name": "octo/infra", "default_branch": "main"},
        "commits": [{"id": sha, "added": ["main.tf"], "modified": [], "removed": []}],
    }


def gitlab_headers(
    conn: Connection, event: str = "Push Hook", *, token: str | None = None, key: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": conn.secret if token is None else token,
        "X-Gitlab-Event-UUID": key or str(uuid.uuid4()),
        "User-Agent": "GitLab/17.5.0",
    }


def github_headers(
    conn: Connection, body: bytes, event: str = "push", *, secret: str | None = None
) -> dict[str, str]:
    key = (conn.secret if secret is None else secret).encode()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        "User-Agent": "GitHub-Hookshot/abc123",
    }


async def send(
    client: httpx.AsyncClient,
    conn: Connection,
    payload: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    event: str | None = None,
) -> httpx.Response:
    """POST one delivery to the connection's URL, signed as its forge signs (``headers``
    given: exactly those)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if headers is None:
        if conn.kind.startswith("gitlab"):
            headers = gitlab_headers(conn, event or "Push Hook")
        else:
            headers = github_headers(conn, body, event or "push")
    return await client.post(conn.path, content=body, headers=headers)
