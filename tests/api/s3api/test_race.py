"""Two client processes put the same state key with ``If-None-Match: *`` at the same instant:
exactly one is stored, the other gets 412. On SQLite through one server; on PostgreSQL each
process talks to its own replica (two apps on one database)."""

from __future__ import annotations

import dataclasses
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.s3api.conftest import S3Env, serve
from tests.support.app import SECRET_KEY, build


def _put(url: str, creds: dict[str, Any], org: str, body: bytes, barrier: Any) -> int:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=f"{url}/s3",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    barrier.wait(30)
    try:
        client.put_object(Bucket=org, Key="race.tfstate", Body=body, IfNoneMatch="*")
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def _race(urls: list[str], creds: dict[str, Any], org: str) -> list[int]:
    from tests.api.s3api.test_objects import state

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    bodies = [
        state(1, "aaaaaaaa-0000-0000-0000-000000000001"),
        state(1, "bbbbbbbb-0000-0000-0000-000000000002"),
    ]
    with ctx.Pool(2) as pool:
        results = [
            pool.apply_async(_put, (urls[i], creds, org, bodies[i], barrier)) for i in range(2)
        ]
        return sorted(r.get(60) for r in results)


def test_racing_conditional_puts_sqlite(s3: S3Env) -> None:
    assert _race([s3.url, s3.url], s3.credentials(), s3.org) == [200, 412]
    assert len(s3.client().list_objects_v2(Bucket=s3.org)["Contents"]) == 1


@pytest.mark.postgres
def test_racing_conditional_puts_on_two_replicas(
    pg: Any, tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    url = pg.create_database()
    apps = [
        build(tmp_path / f"data{i}", admin_token, database_url=url, secret_key=SECRET_KEY)
        for i in range(2)
    ]
    stops = []
    try:
        urls = []
        for app in apps:
            app.advance(datetime.now(UTC).replace(microsecond=0) - app.clock.now())
            served, stop = serve(app)
            urls.append(served)
            stops.append(stop)
        import httpx

        api = httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {admin_token}"})
        env = S3Env(urls[0], apps[0], api, "race-org")
        body = {
            "data": {"type": "organizations", "attributes": {"name": "race-org", "email": "a@b.c"}}
        }
        assert (
            api.post(
                "/api/v2/organizations",
                json=body,
                headers={"Content-Type": "application/vnd.api+json"},
            ).status_code
            == 201
        )
        assert _race(urls, env.credentials(), "race-org") == [200, 412]
        api.close()
    finally:
        for stop in stops:
            stop()
        for app in apps:
            app.close()
    _ = dataclasses
