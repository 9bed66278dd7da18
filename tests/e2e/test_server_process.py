"""The `cairn serve` process itself: probes, discovery, TLS with the dev CA, stop and restart."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import uuid
from collections.abc import Callable
from urllib.parse import urljoin

import httpx
import pytest

from tests.support import api as tfe
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e


def test_probes_discovery_and_ping(server: CairnServer) -> None:
    with server.client() as http:
        tfe.expect(http.get("/healthz"), 200)
        tfe.expect(http.get("/readyz"), 200)

        discovery = tfe.expect(
            http.get("/.well-known/terraform.json", headers={"Accept": "application/json"}), 200
        )
        assert discovery.headers["content-type"].split(";")[0].strip() == "application/json"
        services = discovery.json()
        for key in ("tfe.v2", "tfe.v2.1", "state.v2"):
            resolved = urljoin(f"{server.url}/.well-known/terraform.json", services[key])
            assert resolved == server.api_url, (key, services[key])

        # Terraform reads only the headers of the ping (reference §1.3), with no token.
        ping = http.get("/api/v2/ping")
        version = tuple(int(p) for p in ping.headers["TFP-API-Version"].split("."))
        assert version >= (2, 5)
        limit = ping.headers.get("X-RateLimit-Limit")
        assert limit is None or int(limit) >= 4


def test_dev_ca_covers_localhost_and_loopback_ip(server: CairnServer) -> None:
    assert server.ca_cert is not None and server.ca_cert.is_file()
    assert server.ca_bundle is not None
    ca = server.ca_cert.read_text()
    assert ca.strip() in server.ca_bundle.read_text()  # the bundle = system CAs + the dev CA
    only_dev_ca = ssl.create_default_context(cafile=str(server.ca_cert))
    for host in ("localhost", "127.0.0.1"):
        with httpx.Client(verify=only_dev_ca, timeout=10.0) as http:
            tfe.expect(http.get(f"https://{host}:{server.port}/healthz"), 200)
    with (
        httpx.Client(timeout=10.0, verify=ssl.create_default_context()) as untrusting,
        pytest.raises(httpx.ConnectError),
    ):
        untrusting.get(f"{server.url}/healthz")


def seed(api: httpx.Client) -> tuple[str, str, bytes]:
    """An organization with one workspace holding one state version; returns (org, ws, state)."""
    org = tfe.create_organization(api, tfe.unique_name("durable"))
    ws_id = tfe.create_workspace(api, org, "durable", **{"execution-mode": "local"})
    raw = json.dumps(
        {"version": 4, "serial": 1, "lineage": str(uuid.uuid4()), "outputs": {}, "resources": []}
    ).encode()
    tfe.workspace_action(api, ws_id, "lock")
    body = {
        "data": {
            "type": "state-versions",
            "attributes": {
                "serial": 1,
                "md5": hashlib.md5(raw).hexdigest(),
                "lineage": json.loads(raw)["lineage"],
                "state": base64.b64encode(raw).decode(),
            },
        }
    }
    tfe.expect(
        api.post(
            f"/api/v2/workspaces/{ws_id}/state-versions",
            json=body,
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )
    tfe.workspace_action(api, ws_id, "unlock")
    return org, ws_id, raw


def assert_seeded(server: CairnServer, token: str, org: str, ws_id: str, raw: bytes) -> None:
    with server.client(token) as api:
        assert tfe.read_workspace(api, org, "durable")["id"] == ws_id
        assert tfe.download_state(api, tfe.current_state_version(api, ws_id)) == raw


def test_graceful_stop_restart_and_crash_recovery(
    server_factory: Callable[..., CairnServer], backend: str, admin_token: str
) -> None:
    srv = server_factory(backend)
    with srv.client(admin_token) as api:
        org, ws_id, raw = seed(api)

    assert srv.stop() == 0, f"SIGTERM should stop cairn cleanly; output:\n{srv.output()}"
    srv.start()
    assert_seeded(srv, admin_token, org, ws_id, raw)

    srv.kill9()
    srv.start()
    assert_seeded(srv, admin_token, org, ws_id, raw)
