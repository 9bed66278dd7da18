"""The public doors (discovery documents and the JWKS) are answered by the request middleware
before Starlette's router, through the whole app: same bytes, headers (``nosniff``, ETag,
cache) and conditional answers as before, counted in ``/metrics``; methods other than GET and
HEAD still reach the router (405 as JSON:API)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Router

from tests.support.app import InProcessCairn, document

pytestmark = pytest.mark.anyio

DOORS = (
    "/.well-known/openid-configuration",
    "/.well-known/jwks",
    "/.well-known/jwks.json",
    "/.well-known/terraform.json",
)


async def test_doors_answer_without_the_router(
    app: InProcessCairn, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app.client() as client:
        before = {path: await client.get(path) for path in DOORS}

        async def no_router(self: Router, scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError(f"{scope['path']} went through the router")

        monkeypatch.setattr(Router, "__call__", no_router)
        for path in DOORS:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.content == before[path].content
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-type"] == before[path].headers["content-type"]
            head = await client.head(path)
            assert (head.status_code, head.content) == (200, b"")
        jwks = await client.get("/.well-known/jwks")
        assert "max-age" in jwks.headers["cache-control"]
        etag = {"If-None-Match": jwks.headers["etag"]}
        again = await client.get("/.well-known/jwks", headers=etag)
        assert (again.status_code, again.content) == (304, b"")
        # Anything else still goes through the router (which the patch breaks: a JSON 500).
        assert (await client.get("/healthz")).status_code == 500


async def test_other_methods_reach_the_router_and_doors_are_counted(app: InProcessCairn) -> None:
    async with app.client() as client:
        refused = await client.post("/.well-known/jwks")
        assert document(refused, 405)["errors"][0]["status"] == "405"
        for _ in range(3):
            assert (await client.get("/.well-known/openid-configuration")).status_code == 200
        exposed = (await client.get("/metrics")).text
    assert 'cairn_http_requests_total{method="GET",status="200"} 3.0' in exposed
    assert 'cairn_http_requests_total{method="POST",status="405"} 1.0' in exposed


async def test_a_door_says_503_until_the_keys_are_loaded(
    app: InProcessCairn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.ctx.issuer, "cached", lambda: None)
    async with app.client() as client:
        response: httpx.Response = await client.get("/.well-known/jwks")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-content-type-options"] == "nosniff"
