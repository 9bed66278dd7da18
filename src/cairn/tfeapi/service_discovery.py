"""Service discovery (``/.well-known/terraform.json``), ping and the message of the day.

The discovery document is serialised once at start and served as bytes: it is fetched by
every Terraform command and needs no per-request work. The services of domains (``login.v1``
from ``cairn.auth.login``) are passed in by ``app.py``: the transport imports no domain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

API_VERSION = "2.6"  # ≥2.5 for the cloud block, ≥2.4 for -refresh=false/-replace (reference §6)
RATE_LIMIT = "30"  # ≥4, or go-tfe's limiter gets burst 0 and every call fails (reference §0.3)


def discovery_document(services: Mapping[str, object] | None = None) -> bytes:
    """The ``/.well-known/terraform.json`` bytes: the TFE API's services, plus ``services``
    (e.g. ``{"login.v1": …}``)."""
    doc: dict[str, object] = {
        "tfe.v2": "/api/v2/",
        "tfe.v2.1": "/api/v2/",
        "tfe.v2.2": "/api/v2/",
        "state.v2": "/api/v2/",
        "motd.v1": "/api/terraform/motd",
        # Clients index it unconditionally (go-tfe's NewClient); HCP Terraform's path for its
        # private registry, served by cairn.registry.
        "modules.v1": "/api/registry/v1/modules/",
        **(services or {}),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class StaticJson:
    """A raw ASGI endpoint answering fixed bytes: no per-request serialisation or framework."""

    # Answered to anyone, fixed bytes: served before the router (tfeapi.observe.public_doors).
    public_door = True

    def __init__(
        self, body: bytes, media_type: str = "application/json", cache: str | None = None
    ) -> None:
        self.body = body
        self.headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if cache:
            self.headers.append((b"cache-control", cache.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def ping(request: Request) -> Response:
    return Response(status_code=204)


async def motd(request: Request) -> Response:
    return Response(json.dumps({"msg": "Welcome to cairn."}), media_type="application/json")
