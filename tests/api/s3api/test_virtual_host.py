"""Virtual-host-style buckets (CAIRN_S3_DOMAIN): <organization>.<domain>/<key>, signed by
botocore for that host and path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.api.s3api.test_objects import state
from tests.support.app import CT, InProcessCairn, build


@pytest.fixture
def vhost_app(
    tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessCairn]:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    app = build(tmp_path / "data", admin_token, s3_domain="s3.test")
    app.advance(datetime.now(UTC).replace(microsecond=0) - app.clock.now())
    try:
        yield app
    finally:
        app.close()


def _send(
    app: InProcessCairn, creds: dict[str, str], method: str, url: str, body: bytes
) -> httpx.Response:
    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(
        Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        "s3",
        "us-east-1",
    ).add_auth(request)
    transport = httpx.ASGITransport(app=app.app)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(
                method, url, content=body, headers={k: str(v) for k, v in request.headers.items()}
            )

    return asyncio.run(go())


def test_virtual_host_buckets(vhost_app: InProcessCairn) -> None:
    async def setup() -> dict[str, str]:
        async with vhost_app.client(vhost_app.admin_token) as admin:
            body = {
                "data": {"type": "organizations", "attributes": {"name": "acme", "email": "a@b.c"}}
            }
            assert (
                await admin.post("/api/v2/organizations", json=body, headers=CT)
            ).status_code == 201
            made = await admin.post("/api/cairn/v1/s3-credentials", json={})
            creds: dict[str, str] = made.json()
            return creds

    creds = asyncio.run(setup())
    put = _send(vhost_app, creds, "PUT", "http://acme.s3.test/env%3A/dev/app.tfstate", state(1))
    assert put.status_code == 200, put.text
    got = _send(vhost_app, creds, "GET", "http://acme.s3.test/env%3A/dev/app.tfstate", b"")
    assert got.status_code == 200 and got.content == state(1)
    listed = _send(vhost_app, creds, "GET", "http://acme.s3.test/?list-type=2", b"")
    assert "<Key>env:/dev/app.tfstate</Key>" in listed.text
    # Another host is not a bucket.
    other = _send(vhost_app, creds, "GET", "http://acme.example.com/app.tfstate", b"")
    assert other.status_code == 404
