"""Small helpers for talking to cairn's TFE API (`/api/v2`) from tests.

`expect` turns an unexpected status into an assertion error that shows the response body, so
a failing end-to-end test says what the server answered. `pytfe_client` builds the official
SDK's client for a server, trusting cairn's development CA.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pytfe import TFEClient, TFEConfig

from tests.support.server import CairnServer

JSONAPI = "application/vnd.api+json"


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    """Assert the response status is one of `statuses` (default: any 2xx)."""
    ok = response.status_code in statuses if statuses else response.is_success
    if not ok:
        raise AssertionError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code} (expected {statuses or '2xx'}):\n{response.text[:4000]}"
        )
    return response


def document(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The JSON:API document of a response with an expected status."""
    doc: dict[str, Any] = expect(response, *statuses).json()
    return doc


def unique_name(prefix: str) -> str:
    """A name valid for organizations and workspaces (`^[A-Za-z0-9._-]+$`), unique per call."""
    return f"{prefix}-{secrets.token_hex(4)}"


def create_organization(api: httpx.Client, name: str, email: str = "a@example.com") -> str:
    body = {"data": {"type": "organizations", "attributes": {"name": name, "email": email}}}
    doc = document(api.post("/api/v2/organizations", json=body, headers=_content_type()), 201)
    assert doc["data"]["type"] == "organizations"
    return name


def create_workspace(api: httpx.Client, organization: str, name: str, **attributes: Any) -> str:
    """Create a workspace (attributes use wire names, e.g. `execution-mode`); return its id."""
    body = {"data": {"type": "workspaces", "attributes": {"name": name, **attributes}}}
    doc = document(
        api.post(
            f"/api/v2/organizations/{organization}/workspaces", json=body, headers=_content_type()
        ),
        201,
    )
    workspace_id: str = doc["data"]["id"]
    return workspace_id


def read_workspace(api: httpx.Client, organization: str, name: str) -> dict[str, Any]:
    doc = document(api.get(f"/api/v2/organizations/{organization}/workspaces/{name}"), 200)
    data: dict[str, Any] = doc["data"]
    return data


def workspace_action(
    api: httpx.Client, workspace_id: str, action: str, *statuses: int
) -> httpx.Response:
    """POST /workspaces/<id>/actions/<lock|unlock|force-unlock> the way go-tfe does."""
    body = (
        {"data": {"type": "", "attributes": {"reason": "held by a test"}}}
        if action == "lock"
        else None
    )
    response = api.post(
        f"/api/v2/workspaces/{workspace_id}/actions/{action}", json=body, headers=_content_type()
    )
    return expect(response, *(statuses or (200,)))


def current_state_version(api: httpx.Client, workspace_id: str) -> dict[str, Any]:
    doc = document(api.get(f"/api/v2/workspaces/{workspace_id}/current-state-version"), 200)
    data: dict[str, Any] = doc["data"]
    return data


def download_state(api: httpx.Client, state_version: dict[str, Any]) -> bytes:
    url = state_version["attributes"]["hosted-state-download-url"]
    return expect(api.get(url), 200).content


def _content_type() -> dict[str, str]:
    return {"Content-Type": JSONAPI}


@contextmanager
def _ssl_cert_file(path: str | None) -> Iterator[None]:
    """Temporarily point SSL_CERT_FILE at `path` (httpx reads it when a client is built)."""
    saved = os.environ.get("SSL_CERT_FILE")
    if path is None:
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = path
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


def pytfe_client(server: CairnServer, token: str) -> TFEClient:
    """pytfe's client for `server`.

    pytfe hands `ca_bundle` to httpx as a path string, which httpx 0.28 deprecates (and our
    warnings are errors); with `ca_bundle=None` httpx trusts `$SSL_CERT_FILE` instead, so we
    set that to cairn's CA bundle while the client (and its SSL context) is built.
    """
    bundle = str(server.ca_bundle) if server.ca_bundle is not None else None
    config = TFEConfig(
        address=server.url,
        token=token,
        ca_bundle=None,
        verify_tls=True,
        max_retries=1,
        backoff_base=0.1,
        backoff_cap=0.5,
        timeout=30.0,
    )
    with _ssl_cert_file(bundle):
        return TFEClient(config)
