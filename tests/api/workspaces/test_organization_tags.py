"""The organization's tag list counts only the workspaces the caller may read (finding L8).

`GET /organizations/{org}/tags` used to list every tag of the organization with the number of
workspaces holding it: a reader of one workspace learnt the tags (and counts) of workspaces
they are told do not exist. Now the counts are of readable workspaces only (`authz.visible`, in
SQL) and a caller without organization-wide read sees only the tags of workspaces they read.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

SECRET = "acquisition-target-globex"


async def _tags(client: httpx.AsyncClient, org: str, query: str = "") -> dict[str, int]:
    doc = document(await client.get(f"/api/v2/organizations/{org}/tags{query}"), 200)
    tags = {t["attributes"]["name"]: t["attributes"]["instance-count"] for t in doc["data"]}
    assert doc["meta"]["pagination"]["total-count"] == len(tags)
    return tags


async def _grant(admin: httpx.AsyncClient, org: str, person: Person, pattern: str) -> None:
    grant = {"role": "read", "user": person.id, "workspaces": pattern}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)


async def _setup(admin: httpx.AsyncClient) -> tuple[str, str]:
    """``app`` tagged shared; ``prod-db`` tagged shared and SECRET; ``prod-web`` tagged
    web; an unused tag ``orphan``. Returns the organization and prod-db's ID."""
    org = await create_organization(admin)
    await create_workspace(admin, org, "app", **{"tag-names": ["shared"]})
    prod = await create_workspace(admin, org, "prod-db", **{"tag-names": ["shared", SECRET]})
    web = await create_workspace(admin, org, "prod-web", **{"tag-names": ["web", "orphan"]})
    untag = {"data": [{"type": "tags", "attributes": {"name": "orphan"}}]}
    removed = await admin.request(
        "DELETE", f"/api/v2/workspaces/{web.id}/relationships/tags", json=untag, headers=CT
    )
    assert removed.status_code == 204, removed.text
    return org, prod.id


async def test_a_reader_of_one_workspace_sees_its_tags_only(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """The finding's reproducer: rita reads `app` only."""
    org, prod_id = await _setup(admin)
    rita = await make_user(admin, "rita")
    await _grant(admin, org, rita, "app")
    async with app.client(rita.token) as client:
        assert (await client.get(f"/api/v2/workspaces/{prod_id}")).status_code == 404
        assert await _tags(client, org) == {"shared": 1}
        assert await _tags(client, org, "?q=globex") == {}
        assert await _tags(client, org, "?q=shar") == {"shared": 1}


async def test_a_pattern_reader_counts_the_workspaces_it_matches(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, _ = await _setup(admin)
    pat = await make_user(admin, "pat")
    await _grant(admin, org, pat, "prod-*")
    async with app.client(pat.token) as client:
        assert await _tags(client, org) == {"shared": 1, SECRET: 1, "web": 1}


async def test_a_member_without_reads_sees_no_tags(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """In a team (so the organization is visible) but with no workspace to read."""
    org, _ = await _setup(admin)
    nobody = await make_user(admin, "nobody")
    body = {"data": {"type": "teams", "attributes": {"name": "idle"}}}
    team = document(
        await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT), 201
    )["data"]
    members = {"data": [{"type": "users", "id": nobody.id}]}
    added = await admin.post(
        f"/api/v2/teams/{team['id']}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text
    async with app.client(nobody.token) as client:
        document(await client.get(f"/api/v2/organizations/{org}"), 200)
        assert await _tags(client, org) == {}


async def test_organization_wide_readers_see_every_tag_and_count(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org, _ = await _setup(admin)
    everything = {"shared": 2, SECRET: 1, "web": 1, "orphan": 0}
    assert await _tags(admin, org) == everything
    reader = await make_user(admin, "reader")
    attributes = {"name": "readers", "organization-access": {"read-workspaces": True}}
    team = document(
        await admin.post(
            f"/api/v2/organizations/{org}/teams",
            json={"data": {"type": "teams", "attributes": attributes}},
            headers=CT,
        ),
        201,
    )["data"]
    members = {"data": [{"type": "users", "id": reader.id}]}
    added = await admin.post(
        f"/api/v2/teams/{team['id']}/relationships/users", json=members, headers=CT
    )
    assert added.status_code == 204, added.text
    async with app.client(reader.token) as client:
        assert await _tags(client, org) == everything
