"""Webhooks through real ``cairn serve`` processes: deliveries sent to either replica are each
handled once by the replicas' webhook workers (woken by NOTIFY on PostgreSQL, by the receiver in
the same process on SQLite) and end with an outcome; events cairn does not act on are recorded
as ignored and never handled."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select

from cairn import ids
from cairn.crypto import Keyring, load_or_create_secret
from cairn.db.engine import Database, make_engine
from cairn.organizations.model import Organization
from cairn.vcs.model import OAuthClient, webhook_secret_aad
from cairn.webhooks.model import VcsDelivery
from tests.support import api as tfe
from tests.support.server import CairnServer

DELIVERIES = 20


def _database(server: CairnServer) -> tuple[Database, Keyring]:
    url = server.database_url or f"sqlite:///{server.data_dir / 'cairn.db'}"
    secret, _ = load_or_create_secret(
        Path(server.data_dir), server.env.get("CAIRN_SECRET_KEY") if server.env else None
    )
    return Database(make_engine(url, pool_size=2)), Keyring(secret)


def _connection(db: Database, keyring: Keyring, org: str) -> tuple[str, str]:
    """A gitlab_token connection of ``org`` (as cairn.vcs stores one): its ID and secret."""
    client_id, secret = ids.new_id("oauth_client"), secrets.token_urlsafe(24)
    with db.unit_of_work(write=True) as s:
        org_id = s.scalar(select(Organization.id).where(Organization.name == org))
        s.add(
            OAuthClient(
                id=client_id,
                organization_id=org_id,
                service_provider="gitlab_hosted",
                kind="gitlab_token",
                http_url="https://gitlab.example",
                api_url="https://gitlab.example/api/v4",
                webhook_secret_sealed=keyring.seal(
                    secret.encode(), aad=webhook_secret_aad(client_id)
                ),
                organization_scoped=True,
                allow_fork_plans=False,
                created_at=datetime.now(UTC),
            )
        )
        s.commit()
    return client_id, secret


def _send(server: CairnServer, client_id: str, secret: str, event: str) -> httpx.Response:
    sha = secrets.token_hex(20)
    body = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": sha,
        "checkout_sha": sha,
        "user_username": "alice",
        "project": {"path_with_namespace": "nobody/uses-this", "default_branch": "main"},
        "commits": [{"id": sha, "added": ["main.tf"], "modified": [], "removed": []}],
        "total_commits_count": 1,
    }
    with server.client() as client:
        return client.post(
            f"/api/cairn/v1/vcs-hooks/{client_id}",
            content=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Gitlab-Event": event,
                "X-Gitlab-Token": secret,
                "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            },
        )


def test_deliveries_to_either_replica_are_each_handled_once(
    replicas: list[CairnServer], admin_token: str
) -> None:
    with replicas[0].client(admin_token) as api:
        org = tfe.create_organization(api, f"hooks-{secrets.token_hex(4)}")
    db, keyring = _database(replicas[0])
    try:
        client_id, secret = _connection(db, keyring, org)
        sent = [
            _send(replicas[i % 2], client_id, secret, "Push Hook").json()["data"]["id"]
            for i in range(DELIVERIES)
        ]
        ignored = _send(replicas[1], client_id, secret, "Pipeline Hook")
        assert ignored.status_code == 200, ignored.text
        deadline = time.monotonic() + 60
        while True:
            with db.unit_of_work() as s:
                rows = s.execute(
                    select(
                        VcsDelivery.id,
                        VcsDelivery.state,
                        VcsDelivery.attempts,
                        VcsDelivery.outcome,
                    ).where(VcsDelivery.oauth_client_id == client_id)
                ).all()
            pending = [r for r in rows if r.state in ("queued", "processing")]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not pending, f"still waiting after 60 s: {pending}"
        handled = {r.id: r for r in rows if r.state != "ignored"}
        assert set(handled) == set(sent)
        # No workspace uses this repository: the ingest finds nothing to run, at the first try.
        assert {(r.state, r.attempts) for r in handled.values()} == {("done", 1)}
        assert all(r.outcome for r in handled.values())
        [skipped] = [r for r in rows if r.state == "ignored"]
        assert skipped.attempts == 0 and skipped.outcome is None
    finally:
        db.dispose()
