"""Request logging and Prometheus metrics, as one pure-ASGI middleware (cheap per request).

Paths are logged with secrets removed: upload URLs carry a signed token in the path.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.tfeapi.service_discovery import API_VERSION, RATE_LIMIT

log = logging.getLogger("cairn.http")
_SECRET_SEGMENT = re.compile(r"/(hosted-upload)/[^/?]+")

API_HEADERS = [
    (b"tfp-api-version", API_VERSION.encode()),
    (b"x-ratelimit-limit", RATE_LIMIT.encode()),
    (b"tfp-appname", b"Terraform Enterprise"),
]


def redact_path(path: str) -> str:
    return _SECRET_SEGMENT.sub(r"/\1/<redacted>", path)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cairn_http_requests_total",
            "HTTP requests",
            ["method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cairn_http_request_duration_seconds",
            "HTTP request duration",
            ["method"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
        )
        self.locks = Counter(
            "cairn_workspace_lock_total",
            "Workspace lock attempts",
            ["outcome"],
            registry=self.registry,
        )

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        is_api = path.startswith("/api/v2")
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if is_api:
                    message["headers"] = list(message.get("headers", [])) + API_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            elapsed = time.perf_counter() - start
            method = scope["method"]
            self.metrics.requests.labels(method, str(status)).inc()
            self.metrics.duration.labels(method).observe(elapsed)
            if path not in ("/healthz", "/readyz", "/metrics"):
                extra: dict[str, Any] = {
                    "method": method,
                    "path": redact_path(path),
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("-",))[0],
                }
                log.info("request", extra=extra)
