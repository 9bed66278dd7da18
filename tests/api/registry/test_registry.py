"""The private module registry until it holds modules (issue 8, item 2): discovery names
`modules.v1` (go-tfe indexes it unconditionally), HCP Terraform's registry-modules endpoints
and the module registry protocol answer an organization's members with empty lists and 404s,
and everyone else as if the organization did not exist."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import InProcessCairn, create_organization, document, make_user

pytestmark = pytest.mark.anyio


async def test_discovery_points_modules_v1_at_the_private_registry(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    async with app.client() as anonymous:
        found = (await anonymous.get("/.well-known/terraform.json")).json()
    assert found["modules.v1"] == "/api/registry/v1/modules/"
    org = await create_organization(admin)
    # The URL resolves against the discovery document, as Terraform's installer does.
    versions = await admin.get(f"{found['modules.v1']}{org}/vpc/aws/versions")
    assert versions.status_code == 404
    assert versions.headers["content-type"].startswith("application/json")
    errors: list[Any] = versions.json()["errors"]
    assert len(errors) == 1 and "vpc" in errors[0]


async def test_registry_modules_api_is_empty_for_members(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    listed = document(await admin.get(f"/api/v2/organizations/{org}/registry-modules"), 200)
    assert listed["data"] == []
    assert listed["meta"]["pagination"]["total-count"] == 0
    assert listed["meta"]["pagination"]["current-page"] == 1
    base = f"/api/v2/organizations/{org}/registry-modules"
    for url in (
        f"{base}/private/{org}/vpc/aws",
        f"{base}/public/hashicorp/consul/aws",
        f"{base}/private/{org}/vpc/aws/version?module_version=1.0.0",
        "/api/v2/registry-modules/mod-0123456789abcdef",
    ):
        missing = document(await admin.get(url), 404)
        assert missing["errors"][0]["status"] == "404"
    assert (await admin.get(f"{base}/elsewhere/{org}/vpc/aws")).status_code == 404


async def test_registry_protocol_lists_and_misses(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    listed = (await admin.get(f"/api/registry/v1/modules/{org}?limit=5&offset=0")).json()
    assert listed == {"meta": {"limit": 5, "current_offset": 0}, "modules": []}
    for tail in ("vpc/aws", "vpc/aws/versions", "vpc/aws/1.2.0", "vpc/aws/1.2.0/download"):
        response = await admin.get(f"/api/registry/v1/modules/{org}/{tail}")
        assert response.status_code == 404, tail
        assert isinstance(response.json()["errors"][0], str)
    bad = await admin.get(f"/api/registry/v1/modules/{org}?limit=lots")
    assert bad.status_code == 400 and isinstance(bad.json()["errors"][0], str)


async def test_outsiders_and_anonymous_callers_see_nothing(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    outsider = await make_user(admin, "eve")
    urls = [
        f"/api/v2/organizations/{org}/registry-modules",
        f"/api/v2/organizations/{org}/registry-modules/private/{org}/vpc/aws",
        f"/api/registry/v1/modules/{org}",
        f"/api/registry/v1/modules/{org}/vpc/aws/versions",
    ]
    async with app.client(outsider.token) as eve:
        for url in urls:
            assert (await eve.get(url)).status_code == 404, url
        # The same answer as for an organization that does not exist.
        assert (
            await eve.get("/api/v2/organizations/no-such-org/registry-modules")
        ).status_code == 404
    async with app.client() as anonymous:
        for url in urls:
            assert (await anonymous.get(url)).status_code == 401, url
