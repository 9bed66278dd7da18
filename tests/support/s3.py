"""A real S3 API for the tests: moto's server (PyPI ``moto[server]``) on a loopback port.

`MotoS3` runs ``moto_server`` as a child process (registered with `tests.support.processes`,
stopped by its pid), so cairn servers started by the tests talk to it over HTTP exactly as
they would to AWS S3 or MinIO. Credentials are fixed test values handed to every client
through the standard AWS environment variables (moto accepts any); the shared config files
point nowhere and the instance-metadata lookup is off, so the developer's own AWS setup never
leaks in.

`FaultyS3` is a small HTTP proxy in front of it that can answer every request with an S3
error (503 SlowDown, 500 InternalError) or damage what is PUT — the throttling, outages and
broken middleboxes a real deployment meets but moto cannot be told to produce.
"""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.support import processes

READY_TIMEOUT = 60.0
REGION = "us-east-1"
ACCESS_KEY = "AKIACAIRNTESTKEY0001"


def aws_environment(secret: str) -> dict[str, str]:
    """The standard AWS variables for a process that talks to the test S3."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (boto3's chain reads os.environ)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class MotoS3:
    """One moto server process. `start()`, then `stop()` at teardown."""

    port: int = 0
    secret: str = field(default_factory=lambda: "cairn-test-secret-" + secrets.token_hex(12))
    log_path: Path | None = None
    # moto's own settings, e.g. {"S3_UPLOAD_PART_MIN_SIZE": "1048576"} (5 MiB by default,
    # like S3) so that a test can use small parts.
    settings: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def env(self) -> dict[str, str]:
        return aws_environment(self.secret)

    def start(self) -> MotoS3:
        exe = Path(sys.executable).parent / "moto_server"
        if not exe.exists():
            raise RuntimeError(f"{exe} is missing: run `make install` (moto[server])")
        self.port = self.port or processes.free_port()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.settings},
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        processes.register(self._proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server not ready on port {self.port} after {READY_TIMEOUT}s")

    def stop(self) -> None:
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None

    def client(self, endpoint: str | None = None) -> Any:
        """A boto3 client for the test S3 (or for `endpoint`, e.g. a FaultyS3 in front)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=self.secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self, prefix: str = "cairn") -> str:
        name = f"{prefix}-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found: list[str] = []
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        ):
            found += [str(o["Key"]) for o in page.get("Contents", [])]
        return sorted(found)

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads in progress, with their part counts."""
        c = self.client()
        out = []
        for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = c.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            out.append({"Key": u["Key"], "parts": len(parts.get("Parts", []))})
        return out


_ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}


class FaultyS3:
    """A forwarding proxy to `upstream` that answers S3 errors while `failing` is set, and
    damages the bytes of every PUT while `corrupting` is (a store that ignores Content-MD5)."""

    def __init__(self, upstream: MotoS3) -> None:
        self.upstream = upstream
        self.failing: int | None = None
        self.failing_methods: set[str] | None = None  # None: every method fails
        self.corrupting = False
        self.failed = 0
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                methods = proxy.failing_methods
                if proxy.failing is not None and (methods is None or self.command in methods):
                    proxy.failed += 1
                    code, message = _ERRORS[proxy.failing]
                    xml = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>cairn-test</RequestId></Error>"
                    ).encode()
                    self.send_response(proxy.failing)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                if proxy.corrupting and self.command == "PUT" and body:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                # A HEAD answers the object's length with no body.
                declared = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


def running_moto(tmp_path_factory: Any, **settings: str) -> Iterator[MotoS3]:
    """For fixtures: a started MotoS3 (log in a temp dir; ``settings``: moto's own), with the
    test credentials in this process's environment; stopped by pid at teardown."""
    log = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    server = MotoS3(log_path=log, settings=settings).start()
    try:
        with environment(server.env()):
            yield server
    finally:
        server.stop()
