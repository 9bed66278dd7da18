"""The in-process cairn served over real HTTP on loopback (uvicorn in a thread), so boto3 and
botocore talk to it as to any S3 endpoint. The app's frozen clock is moved to the real time
(botocore signs with the machine's clock)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from botocore.config import Config

from tests.support.app import CT, InProcessCairn, unique_name


@dataclass
class S3Env:
    url: str
    app: InProcessCairn
    api: httpx.Client  # as the site admin
    org: str

    def credentials(self, token: str | None = None, /, **body: object) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.api.post("/api/cairn/v1/s3-credentials", json=body, headers=headers)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def client(self, creds: dict[str, Any] | None = None, **config: Any) -> Any:
        creds = creds or self.credentials()
        return boto3.client(
            "s3",
            endpoint_url=f"{self.url}/s3",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"max_attempts": 1},
                **config,
            ),
        )


@pytest.fixture
def s3(app: InProcessCairn) -> Iterator[S3Env]:
    app.advance(datetime.now(UTC).replace(microsecond=0) - app.clock.now())
    url, stop = serve(app)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {app.admin_token}"})
    org = unique_name("org")
    body = {"data": {"type": "organizations", "attributes": {"name": org, "email": "a@b.c"}}}
    assert api.post("/api/v2/organizations", json=body, headers=CT).status_code == 201
    try:
        yield S3Env(url, app, api, org)
    finally:
        api.close()
        stop()


def serve(app: InProcessCairn) -> tuple[str, Any]:
    """Serve ``app`` on loopback; returns its URL and a function that stops it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{port}", stop
