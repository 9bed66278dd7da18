"""H1 (security findings 2026-11-30) against a real `cairn serve`: the finding's state bomb (a
valid header, an output padding the first 64 KiB, then `resources` nested thousands of levels
deep) is refused with a 422 inline and hosted, nothing becomes current, and the server's peak
memory barely moves (it used to grow quadratically with the depth: +700 MB at 20,000 levels).
The in-process tests of the rule are in tests/api/state/test_state_nesting.py."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.statefile import md5_hex

DEPTH = 20_000
MAX_GROWTH_MB = 150  # peak RSS the two bombs may add; the code before the fix took ~700 MB


@pytest.fixture(scope="module")
def bomb_server(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    srv = start_server(
        request, tmp_path_factory.mktemp("state-bomb"), "sqlite", admin_token, plain_http=True
    )
    try:
        yield srv
    finally:
        srv.stop()


def bomb(lineage: str) -> bytes:
    head = (
        '{"version":4,"terraform_version":"1.0.3","serial":1,"lineage":"' + lineage + '",'
        '"outputs":{"pad":{"type":"string","value":"'
    )
    tail = '"}},"resources":'
    pad = "x" * (65536 - len(head) - len(tail) - 4)
    return (head + pad + tail).encode() + b"[" * DEPTH + b"]" * DEPTH + b"}"


def peak_rss_mb(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_the_state_bomb_is_refused_in_bounded_memory(
    bomb_server: CairnServer, admin_token: str
) -> None:
    before = peak_rss_mb(bomb_server.pid)
    with bomb_server.client(admin_token) as api:
        api.timeout = httpx.Timeout(300.0)
        org = tfe.create_organization(api, tfe.unique_name("bomb"))
        for form in ("inline", "hosted"):
            workspace_id = tfe.create_workspace(api, org, f"bomb-{form}")
            tfe.workspace_action(api, workspace_id, "lock")
            lineage = str(uuid.uuid4())
            raw = bomb(lineage)
            attributes = {"serial": 1, "lineage": lineage, "md5": md5_hex(raw)}
            if form == "inline":
                attributes["state"] = base64.b64encode(raw).decode()
            created = api.post(
                f"/api/v2/workspaces/{workspace_id}/state-versions",
                json={"data": {"type": "state-versions", "attributes": attributes}},
                headers={"Content-Type": tfe.JSONAPI},
            )
            if form == "inline":
                refused = created
            else:
                url = tfe.document(created, 201)["data"]["attributes"]["hosted-state-upload-url"]
                with httpx.Client(timeout=300.0) as http:
                    refused = http.put(url, content=raw)
            assert refused.status_code == 422, f"{form}: {refused.status_code} {refused.text}"
            assert "levels deep" in refused.json()["errors"][0]["detail"]
            current = api.get(f"/api/v2/workspaces/{workspace_id}/current-state-version")
            assert current.status_code == 404, f"{form}: the bomb became current"
    growth = peak_rss_mb(bomb_server.pid) - before
    assert growth < MAX_GROWTH_MB, f"peak RSS grew by {growth:.0f} MB"
    assert bomb_server.running
