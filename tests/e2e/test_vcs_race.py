"""THE race (issue 11): 50 push webhooks at once, spread over two cairn replicas on one
PostgreSQL, on a GitLab OAuth connection whose access token has just expired. Every delivery
needs a fresh token; exactly one replica may spend the refresh token (GitLab rotates it), the
others must wait for the new pair. Outcome: one token POST at the GitLab token endpoint, 50 runs
(CAIRN_WORKERS=0: they stay queued), the connection still ``ok``. Then no secret — the OAuth
client secret, the access and refresh tokens, the webhook secret — appears in any text or bytes
column of the database, nor in either server's log."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cairn import ids
from cairn.crypto import Keyring
from cairn.vcs.model import OAuthClient, OAuthToken, access_aad, refresh_aad, webhook_secret_aad
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.test_remote_runs import wait_until
from tests.support import api as tfe
from tests.support.postgres import PostgresCluster
from tests.support.server import CairnServer
from tests.support.vcs import webhook
from tests.support.vcs.forge import Forge
from tests.support.vcs.gitlab_op import GitLabOp

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

PUSHES = 50


@pytest.fixture(scope="module")
def replicas(
    pg: PostgresCluster, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CairnServer, CairnServer, str]]:
    url = pg.create_database()
    env = {
        "CAIRN_SECRET_KEY": TEST_SECRET_KEY,
        "CAIRN_WORKERS": "0",
        "CAIRN_VCS_REGISTER_HOOKS": "false",
    }
    servers: list[CairnServer] = []
    try:
        for name in ("a", "b"):
            srv = CairnServer(
                data_dir=tmp_path_factory.mktemp(f"replica-{name}"),
                database_url=url,
                plain_http=True,
                admin_token=admin_token,
                env=env,
            )
            servers.append(srv.start())
        yield servers[0], servers[1], url
    finally:
        for srv in servers:
            srv.stop()


def expired_oauth_token(
    database_url: str, client_id: str, org_id: str, pair: dict[str, Any]
) -> tuple[str, str]:
    """A token row as the OAuth flow leaves it, whose access token expired a second ago
    (sealed as cairn.vcs seals it); (token ID, the connection's webhook secret)."""
    keys = Keyring(TEST_SECRET_KEY)
    token_id = ids.new_id("oauth_token")
    now = datetime.now(UTC)
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(OAuthToken).values(
                    id=token_id,
                    oauth_client_id=client_id,
                    organization_id=org_id,
                    service_provider_user="alice",
                    access_token_sealed=keys.seal(
                        pair["access_token"].encode(), aad=access_aad(token_id, 0)
                    ),
                    refresh_token_sealed=keys.seal(
                        pair["refresh_token"].encode(), aad=refresh_aad(token_id, 0)
                    ),
                    expires_at=now - timedelta(seconds=1),
                    generation=0,
                    status="ok",
                    created_at=now - timedelta(hours=2),
                )
            )
            sealed = conn.execute(
                sa.select(OAuthClient.webhook_secret_sealed).where(OAuthClient.id == client_id)
            ).scalar_one()
    finally:
        engine.dispose()
    return token_id, keys.open(sealed, aad=webhook_secret_aad(client_id)).decode()


def test_fifty_pushes_on_two_replicas_refresh_the_expired_token_once(
    replicas: tuple[CairnServer, CairnServer, str],
    forge: Forge,
    gitlab_op: GitLabOp,
    admin_token: str,
) -> None:
    a, b, database_url = replicas
    app = gitlab_op.add_client()
    repo = forge.create_repo(f"race/infra-{secrets.token_hex(3)}", {"main.tf": "# start\n"})
    with a.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("race"))
        org_id = tfe.document(api.get(f"/api/v2/organizations/{org}"), 200)["data"]["id"]
        attributes = {
            "service-provider": "gitlab_hosted",
            "http-url": forge.url,
            "api-url": forge.gitlab_api_url,
            "key": app.client_id,
            "secret": app.client_secret,
        }
        created = tfe.document(
            api.post(
                f"/api/v2/organizations/{org}/oauth-clients",
                json={"data": {"type": "oauth-clients", "attributes": attributes}},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )
        client_id = created["data"]["id"]
        pair = gitlab_op.grant(app)
        token_id, hook_secret = expired_oauth_token(database_url, client_id, org_id, pair)
        ws_id = tfe.create_workspace(
            api,
            org,
            "race",
            **{
                "execution-mode": "remote",
                "queue-all-runs": True,
                "vcs-repo": {"identifier": repo.path, "oauth-token-id": token_id},
            },
        )
    initial = repo.head()
    shas = [repo.commit({"main.tf": f"# {i}\n"}) for i in range(PUSHES)]
    hooks = [
        webhook.gitlab_push(repo, before=before, after=after)
        for before, after in zip([initial, *shas[:-1]], shas, strict=True)
    ]
    gitlab_op.reset_stats()

    def deliver(i: int) -> int:
        srv = (a, b)[i % 2]
        url = f"{srv.url}/api/cairn/v1/vcs-hooks/{client_id}"
        return webhook.send(url, hooks[i], hook_secret).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(deliver, range(PUSHES))) == {202}

    with a.client(admin_token) as api:
        seen: dict[str, Any] = {}

        def all_handled() -> bool:
            doc = tfe.document(
                api.get(f"/api/v2/organizations/{org}/vcs-events?page[size]=100"), 200
            )
            seen["states"] = sorted({e["attributes"]["state"] for e in doc["data"]})
            seen["messages"] = [e["attributes"]["message"] for e in doc["data"]][:3]
            return len(doc["data"]) == PUSHES and seen["states"] == ["done"]

        wait_until(all_handled, 120.0, lambda: f"deliveries not all done: {seen}")
        runs = tfe.document(api.get(f"/api/v2/workspaces/{ws_id}/runs?page[size]=100"), 200)["data"]
        assert len(runs) == PUSHES
        token = tfe.document(api.get(f"/api/v2/oauth-tokens/{token_id}"), 200)["data"]
    stats = gitlab_op.stats(app)
    assert stats["token_posts"] == 1, stats
    assert stats["invalid_grant"] == 0, stats
    assert token["id"] == token_id
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(OAuthToken.status, OAuthToken.generation).where(OAuthToken.id == token_id)
            ).one()
    finally:
        engine.dispose()
    assert (row.status, row.generation) == ("ok", 1)  # refreshed once, connection fine

    # No secret at rest or in a log.
    leaks = [app.client_secret, pair["access_token"], pair["refresh_token"], hook_secret]
    # ... and the access token the refresh gave (what cairn then showed the forge)
    leaks += sorted(
        {c.token for c in forge.calls(path_contains=repo.path.split("/")[0]) if c.token}
    )
    assert len(leaks) > 4
    text = dump_columns(database_url)
    for secret in leaks:
        assert secret not in text
    for srv in (a, b):
        log = Path(srv.log_path).read_text(errors="replace")
        for secret in leaks:
            assert secret not in log


def dump_columns(database_url: str) -> str:
    """Every text and bytes value of every table, as one string (bytes decoded leniently)."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    parts: list[str] = []
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            for table in meta.sorted_tables:
                cols = [
                    c
                    for c in table.columns
                    if isinstance(c.type, (sa.String, sa.Text, sa.LargeBinary, sa.JSON))
                ]
                if not cols:
                    continue
                for row in conn.execute(sa.select(*cols)):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            parts.append(bytes(value).decode("latin-1"))
                        elif value is not None:
                            parts.append(str(value))
    finally:
        engine.dispose()
    return "\n".join(parts)
