"""A non-admin's access in one query (``cairn.authz.access``: teams, grants and team-project
access as one ``UNION ALL``), on SQLite and on PostgreSQL: the same ``Access`` from team
membership (organization-access flags), a direct grant, a team's grant and a team-project grant;
one statement for it all (one more only for custom roles)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from cairn.authz.access import load_access
from cairn.authz.permissions import ORG_READ, PROJECT_READ, WORKSPACE_READ
from tests.api.teams.helpers import add_member, project, team, team_project
from tests.support.app import (
    CT,
    InProcessCairn,
    build,
    create_organization,
    create_workspace,
    document,
    make_user,
)
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def cairn(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InProcessCairn]:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    settings: dict[str, object] = {}
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg")
        settings = {
            "database_url": cluster.create_database("access"),
            "secret_key": secrets.token_hex(24),
        }
    instance = build(tmp_path / "data", admin_token, **settings)
    try:
        yield instance
    finally:
        instance.close()


async def test_access_from_teams_grants_and_projects_in_one_query(cairn: InProcessCairn) -> None:
    async with cairn.client(cairn.admin_token) as admin:
        org = await create_organization(admin)
        direct = await create_workspace(admin, org, "app-web")
        by_team = await create_workspace(admin, org, "ops-db")
        proj = await project(admin, org, "platform")
        person = await make_user(admin, "member")
        crew = await team(admin, org, "crew", flags={"read-projects": True})
        await add_member(admin, crew["id"], person.id)
        grants = f"/api/cairn/v1/organizations/{org}/grants"
        mine = {"role": "read", "workspaces": "app-*", "user": person.username}
        document(await admin.post(grants, json=mine), 201)
        theirs = {"role": "write", "workspaces": "ops-*", "team": "crew"}
        document(await admin.post(grants, json=theirs), 201)
        made = await team_project(admin, crew["id"], proj, "read")
        assert made.status_code == 201, made.text
    assert direct.id and by_team.id

    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    db = cairn.ctx.db
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.read_transaction() as conn:
            access = load_access(conn, person.id)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)

    assert len(statements) == 1  # teams, grants and team projects together
    assert access.team_ids == frozenset({crew["id"]})
    [(org_id, on_org)] = access.organization.items()  # the organization's internal id
    assert ORG_READ in on_org
    by_target = {(g.workspace_id, g.pattern, g.project_id): g.permissions for g in access.grants}
    assert WORKSPACE_READ in by_target[(None, "app-*", None)]
    assert WORKSPACE_READ in by_target[(None, "ops-*", None)]
    assert len(by_target[(None, "ops-*", None)]) > len(by_target[(None, "app-*", None)])
    assert WORKSPACE_READ in by_target[(None, None, proj)]
    [on_project] = access.projects
    assert (on_project.organization_id, on_project.project_id) == (org_id, proj)
    assert PROJECT_READ in on_project.permissions


async def test_a_user_without_anything_has_no_access(cairn: InProcessCairn) -> None:
    async with cairn.client(cairn.admin_token) as admin:
        person = await make_user(admin, "nobody")
    with cairn.ctx.db.read_transaction() as conn:
        access = load_access(conn, person.id)
    assert (access.organization, access.grants, access.team_ids, access.projects) == (
        {},
        (),
        frozenset(),
        (),
    )
    assert httpx and CT  # the helpers' module is the one the API tests use
