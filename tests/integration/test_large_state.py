"""Large states (beyond the size cairn processes before answering) still get their resources
counted soon after the upload: `resources-processed` turns true and the workspace's
`resource-count` follows, so safe-delete keeps protecting a workspace that manages resources.
Both upload forms: inline (base64 in the JSON:API document) and two-step (hosted PUT)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.statefile import (
    new_lineage,
    null_resource,
    post_version,
    state_file,
    upload_inline,
    version_body,
)

LARGE = 12 * 1024 * 1024  # above cairn's 8 MiB "process before answering" size
PROCESSING_DEADLINE = 10.0


@pytest.fixture(scope="module")
def large_state_server(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    data_dir = tmp_path_factory.mktemp("large-state")
    srv = start_server(request, data_dir, "sqlite", admin_token, plain_http=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(large_state_server: CairnServer, admin_token: str) -> Iterator[httpx.Client]:
    with large_state_server.client(admin_token) as client:
        yield client


def upload_hosted(api: httpx.Client, workspace_id: str, raw: bytes) -> dict[str, Any]:
    response = post_version(api, workspace_id, version_body(raw, inline=False))
    pending: dict[str, Any] = response.json()["data"]
    with httpx.Client(timeout=60.0) as http:
        tfe.expect(http.put(pending["attributes"]["hosted-state-upload-url"], content=raw), 200)
    return pending


def wait_until_processed(api: httpx.Client, workspace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + PROCESSING_DEADLINE
    while True:
        current = tfe.current_state_version(api, workspace_id)
        if current["attributes"]["resources-processed"] or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


@pytest.mark.parametrize("form", ["inline", "hosted"])
def test_large_state_gets_its_resources_counted(api: httpx.Client, org: str, form: str) -> None:
    workspace_id = tfe.create_workspace(api, org, f"large-{form}")
    tfe.workspace_action(api, workspace_id, "lock")
    # Three managed instances, plus the one that carries the padding.
    raw = state_file(1, new_lineage(), resources=[null_resource("app", 3)], pad_to=LARGE)
    if form == "inline":
        upload_inline(api, workspace_id, raw)
    else:
        upload_hosted(api, workspace_id, raw)

    current = wait_until_processed(api, workspace_id)
    assert current["attributes"]["resources-processed"] is True, (
        f"resources of a {len(raw)} byte state not processed {PROCESSING_DEADLINE}s after upload"
    )
    workspace = tfe.document(api.get(f"/api/v2/workspaces/{workspace_id}"), 200)["data"]
    assert workspace["attributes"]["resource-count"] == 4

    refused = api.post(
        f"/api/v2/workspaces/{workspace_id}/actions/safe-delete",
        headers={"Content-Type": tfe.JSONAPI},
    )
    assert refused.status_code == 409, refused.text
    tfe.expect(api.get(f"/api/v2/workspaces/{workspace_id}"), 200)
