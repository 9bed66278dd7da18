"""The webhook receiver: verified before parsing, recorded once, acknowledged without forge or
token work; forged, unsigned, oversized or malformed deliveries leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from cairn import ids
from cairn.vcs.model import OAuthToken, webhook_secret_aad
from cairn.webhooks.model import VcsDelivery
from cairn.webhooks.receiver import MAX_BODY
from tests.api.webhooks.conftest import (
    Connection,
    github_headers,
    github_push,
    gitlab_headers,
    gitlab_push,
    make_connection,
    send,
    set_secret,
)
from tests.support.app import InProcessCairn, create_organization, document

pytestmark = pytest.mark.anyio


def rows(app: InProcessCairn, conn: Connection | None = None) -> list[Any]:
    with app.ctx.db.unit_of_work() as s:
        q = select(VcsDelivery).order_by(VcsDelivery.received_at, VcsDelivery.id)
        if conn is not None:
            q = q.where(VcsDelivery.oauth_client_id == conn.id)
        return list(s.scalars(q))


async def connection(app: InProcessCairn, admin: httpx.AsyncClient, kind: str) -> Connection:
    return make_connection(app, await create_organization(admin), kind)


async def test_a_gitlab_push_is_queued_with_its_raw_body(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    body = json.dumps(gitlab_push()).encode()
    async with app.client() as forge:
        response = await send(forge, conn, body)
    doc = document(response, 202)
    assert doc["data"]["id"].startswith("vcsd-")
    assert doc["data"]["attributes"] == {"event": "Push Hook", "state": "queued"}
    [row] = rows(app, conn)
    assert row.id == doc["data"]["id"]
    assert (row.state, row.event, row.provider, row.attempts) == (
        "queued",
        "Push Hook",
        "gitlab",
        0,
    )
    assert row.body == body and row.organization_id == conn.organization_id


async def test_a_merge_request_hook_keeps_its_action(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_oauth")
    payload = {"object_kind": "merge_request", "object_attributes": {"iid": 3, "action": "open"}}
    async with app.client() as forge:
        document(await send(forge, conn, payload, event="Merge Request Hook"), 202)
    [row] = rows(app, conn)
    assert (row.event, row.action, row.state) == ("Merge Request Hook", "open", "queued")


async def test_a_gitlab_replay_is_one_delivery(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    body = json.dumps(gitlab_push()).encode()
    headers = gitlab_headers(conn)
    async with app.client() as forge:
        first = document(await forge.post(conn.path, content=body, headers=headers), 202)
        again = await forge.post(conn.path, content=body, headers=headers)
        # GitLab 17+ also sends Idempotency-Key, which wins over the event UUID.
        keyed = {**headers, "Idempotency-Key": "idem-1", "X-Gitlab-Event-UUID": "other"}
        third = document(await forge.post(conn.path, content=body, headers=keyed), 202)
        fourth = document(await forge.post(conn.path, content=body, headers=keyed), 200)
    replay = document(again, 200)
    assert replay["data"]["id"] == first["data"]["id"]
    assert "already received" in replay["meta"]["detail"]
    assert fourth["data"]["id"] == third["data"]["id"]
    assert len(rows(app, conn)) == 2


async def test_a_delivery_without_a_key_is_keyed_by_its_body(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    headers = gitlab_headers(conn)
    del headers["X-Gitlab-Event-UUID"]
    async with app.client() as forge:
        one = document(await send(forge, conn, gitlab_push(sha="a" * 40), headers), 202)
        same = document(await send(forge, conn, gitlab_push(sha="a" * 40), headers), 200)
        document(await send(forge, conn, gitlab_push(sha="b" * 40), headers), 202)
    assert same["data"]["id"] == one["data"]["id"]
    assert [r.delivery_key.startswith("sha256:") for r in rows(app, conn)] == [True, True]


@pytest.mark.parametrize(
    "token", [None, "", "wrong-secret", "x" * 200], ids=["missing", "empty", "wrong", "long"]
)
async def test_a_forged_gitlab_token_is_refused_and_nothing_is_written(
    app: InProcessCairn, admin: httpx.AsyncClient, token: str | None
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    headers = gitlab_headers(conn, token=token or "")
    if token is None:
        del headers["X-Gitlab-Token"]
    async with app.client() as forge:
        response = await send(forge, conn, gitlab_push(), headers)
    error = document(response, 401)["errors"][0]
    assert "X-Gitlab-Token" in error["detail"] and conn.secret not in response.text
    assert rows(app) == []


async def test_the_gitlab_secret_of_another_connection_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    mine = await connection(app, admin, "gitlab_token")
    other = await connection(app, admin, "gitlab_token")
    async with app.client() as forge:
        headers = gitlab_headers(mine, token=other.secret)
        document(await send(forge, mine, gitlab_push(), headers), 401)
    assert rows(app) == []


async def test_a_github_push_with_a_valid_signature_is_queued(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "github_app")
    async with app.client() as forge:
        doc = document(await send(forge, conn, github_push()), 202)
    [row] = rows(app, conn)
    assert (row.id, row.provider, row.event, row.state) == (
        doc["data"]["id"],
        "github",
        "push",
        "queued",
    )


@pytest.mark.parametrize("case", ["missing", "wrong-secret", "other-body", "not-hex", "no-prefix"])
async def test_a_forged_github_signature_is_refused_and_nothing_is_written(
    app: InProcessCairn, admin: httpx.AsyncClient, case: str
) -> None:
    conn = await connection(app, admin, "github_token")
    body = json.dumps(github_push()).encode()
    headers = github_headers(conn, body)
    if case == "missing":
        del headers["X-Hub-Signature-256"]
    elif case == "wrong-secret":
        headers = github_headers(conn, body, secret="It's a Secret to Everybody")
    elif case == "other-body":
        headers = github_headers(conn, body + b" ")
    elif case == "not-hex":
        headers["X-Hub-Signature-256"] = "sha256=" + "zz" * 32
    else:
        headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].removeprefix("sha256=")
    async with app.client() as forge:
        response = await forge.post(conn.path, content=body, headers=headers)
    assert "X-Hub-Signature-256" in document(response, 401)["errors"][0]["detail"]
    assert rows(app) == []


async def test_githubs_documented_test_vector_verifies(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The example of GitHub's "Validating webhook deliveries" page: the secret
    "It's a Secret to Everybody" and the payload "Hello, World!" give 757107ea…; the body is
    then refused as not JSON (400, nothing stored) — after the signature was accepted."""
    conn = await connection(app, admin, "github_token")
    secret = "It's a Secret to Everybody"
    with app.ctx.db.unit_of_work(write=True) as s:
        s.execute(
            update(
                VcsDelivery.metadata.tables[
                    "oauth_clients"
                ]  # the connection, as cairn.vcs keeps it
            )
            .where(VcsDelivery.metadata.tables["oauth_clients"].c.id == conn.id)
            .values(
                webhook_secret_sealed=app.ctx.keyring.seal(
                    secret.encode(), aad=webhook_secret_aad(conn.id)
                )
            )
        )
        s.commit()
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert (
        signature
        == "sha256=" + hmac.new(secret.encode(), b"Hello, World!", hashlib.sha256).hexdigest()
    )
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": signature,
    }
    async with app.client() as forge:
        response = await forge.post(conn.path, content=b"Hello, World!", headers=headers)
    assert "not JSON" in document(response, 400)["errors"][0]["detail"]
    assert rows(app) == []


async def test_a_changed_secret_takes_effect_at_once(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    async with app.client() as forge:
        document(await send(forge, conn, gitlab_push()), 202)  # the old secret is cached now
        old = conn.secret
        set_secret(app, conn, "new-secret")
        document(await send(forge, conn, gitlab_push(), gitlab_headers(conn, token=old)), 401)
        document(await send(forge, conn, gitlab_push()), 202)
    assert len(rows(app, conn)) == 2


@pytest.mark.parametrize(
    ("kind", "event"),
    [("github_token", "ping"), ("github_app", "issues"), ("gitlab_token", "Issue Hook")],
)
async def test_other_events_are_recorded_as_ignored_without_their_body(
    app: InProcessCairn, admin: httpx.AsyncClient, kind: str, event: str
) -> None:
    conn = await connection(app, admin, kind)
    async with app.client() as forge:
        doc = document(
            await send(forge, conn, {"zen": "Keep it logically awesome."}, event=event), 200
        )
    assert doc["data"]["attributes"]["state"] == "ignored"
    assert f"does not act on {event}" in doc["meta"]["detail"]
    [row] = rows(app, conn)
    assert (row.state, row.event, row.body) == ("ignored", event, b"")


async def test_an_unknown_connection_is_not_found(app: InProcessCairn) -> None:
    async with app.client() as forge:
        response = await forge.post(
            "/api/cairn/v1/vcs-hooks/oc-doesnotexist0000",
            content=b"{}",
            headers={"X-Gitlab-Token": "x", "X-Gitlab-Event": "Push Hook"},
        )
    assert "not found" in document(response, 404)["errors"][0]["detail"]


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""], ids=["broken", "array", "binary", "empty"]
)
async def test_a_body_that_is_not_a_json_object_is_refused_after_verification(
    app: InProcessCairn, admin: httpx.AsyncClient, body: bytes
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    async with app.client() as forge:
        document(await send(forge, conn, body), 400)
        # The same body with a forged token: the signature is checked first.
        document(await send(forge, conn, body, gitlab_headers(conn, token="forged")), 401)
    assert rows(app) == []


async def test_a_missing_event_header_is_a_bad_request(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    conn = await connection(app, admin, "gitlab_token")
    headers = gitlab_headers(conn)
    del headers["X-Gitlab-Event"]
    async with app.client() as forge:
        assert (
            "X-Gitlab-Event"
            in document(await send(forge, conn, gitlab_push(), headers), 400)["errors"][0]["detail"]
        )
    assert rows(app) == []


async def test_a_body_over_25_mib_is_refused(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    conn = await connection(app, admin, "gitlab_token")
    body = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    async with app.client() as forge:
        response = await send(forge, conn, body)
        assert response.status_code == 413, response.text

        # Unknown length (chunked): cut off while streaming.
        async def chunks() -> Any:
            for i in range(0, len(body), 1 << 20):
                yield body[i : i + (1 << 20)]

        streamed = await forge.post(conn.path, content=chunks(), headers=gitlab_headers(conn))
        assert streamed.status_code == 413, streamed.text
    assert rows(app) == []


async def test_a_burst_from_20_clients_is_200_deliveries(
    any_app: InProcessCairn,
) -> None:
    """200 deliveries over 20 connections from 20 concurrent clients: 200 rows, each queued
    once, and each connection's sealed secret opened once for the whole burst."""
    app = any_app
    async with app.client(app.admin_token) as admin:
        org = await create_organization(admin)
    conns = [
        make_connection(app, org, "gitlab_token" if i % 2 else "github_token") for i in range(20)
    ]
    opened = app.ctx.webhooks.secrets.opened

    async def client(conn: Connection) -> list[str]:
        got = []
        async with app.client() as forge:
            for _ in range(10):
                response = await send(
                    forge, conn, gitlab_push() if conn.kind.startswith("gitlab") else github_push()
                )
                got.append(document(response, 202)["data"]["id"])
        return got

    answered = [i for ids in await asyncio.gather(*(client(c) for c in conns)) for i in ids]
    assert len(set(answered)) == 200
    with app.ctx.db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(VcsDelivery)) == 200
        assert set(s.scalars(select(VcsDelivery.state))) == {"queued"}
    assert app.ctx.webhooks.secrets.opened - opened == 20


async def test_a_connection_needing_reauthorisation_still_receives(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The receiver never looks at tokens: a connection whose grant is gone still records its
    deliveries (the ingest fails them, saying the connection needs re-authorising)."""
    conn = await connection(app, admin, "gitlab_oauth")
    with app.ctx.db.unit_of_work(write=True) as s:
        s.add(
            OAuthToken(
                id=ids.new_id("oauth_token"),
                oauth_client_id=conn.id,
                organization_id=conn.organization_id,
                access_token_sealed=b"sealed",
                status="needs_reauth",
                status_reason="the grant was revoked",
                created_at=app.clock.now(),
            )
        )
        s.commit()
    async with app.client() as forge:
        document(await send(forge, conn, gitlab_push()), 202)
    assert [r.state for r in rows(app, conn)] == ["queued"]
