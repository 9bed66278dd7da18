"""Access control through the official SDK (pytfe 1.5.0), with httpx where pytfe has no call.

One SQLite server. The site admin creates people (`POST /api/cairn/v1/admin/users`) and their
tokens (`POST /api/v2/users/{id}/authentication-tokens`), an organization (the admin, its
creator, lands in its owners team), teams with TFE team-workspace access (read / plan / write /
admin), a cairn pattern grant (`write` on `prod-*` to a team) and a custom role. Then each
person does what their access allows and is refused the rest:

* unreadable workspaces and organizations are 404, forbidden writes on readable ones are 403;
* a reader reads the workspace and its state but cannot lock; a writer locks, uploads state and
  unlocks but cannot force-unlock or rotate the issuer's keys; a plan-only member mints plan
  tokens, not apply tokens;
* the workspace `permissions` attribute says exactly what the caller may do;
* owners manage everything in their organization (and nothing outside it);
* pattern grants follow renames; removing a member or a grant takes effect on the very next
  request with the same token; a custom role grants exactly its permissions;
* every change to access produced an audit event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pytfe import TFEClient
from pytfe.errors import NotFound, TFEError
from pytfe.models import (
    StateVersionCreateOptions,
    TeamCreateOptions,
    TeamUpdateOptions,
    WorkspaceCreateOptions,
    WorkspaceLockOptions,
    WorkspaceUpdateOptions,
)
from pytfe.models.team import OrganizationAccessOptions
from pytfe.models.team_workspace_access import (
    TeamWorkspaceAccessAddOptions,
    TeamWorkspaceAccessType,
    TeamWorkspaceAccessUpdateOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer
from tests.support.statefile import md5_hex, new_lineage, state_file, upload_inline

pytestmark = pytest.mark.e2e

JSONAPI = {"Content-Type": tfe_api.JSONAPI}


@pytest.fixture(scope="module")
def backend() -> str:
    """This module runs on SQLite only (the matrix is about rules, not storage)."""
    return "sqlite"


# -- people --------------------------------------------------------------------------------------


@dataclass
class Person:
    username: str
    user_id: str
    token: str
    tfe: TFEClient
    api: httpx.Client

    # -- the checks, in the caller's own name ---------------------------------------------------

    def status(self, method: str, path: str, body: Any = None) -> int:
        headers = JSONAPI if body is not None else {}
        return self.api.request(method, path, json=body, headers=headers).status_code

    def lock(self, ws_id: str) -> int:
        return self.status(
            "POST",
            f"/api/v2/workspaces/{ws_id}/actions/lock",
            {"data": {"type": "", "attributes": {"reason": "rbac test"}}},
        )

    def unlock(self, ws_id: str) -> int:
        return self.status("POST", f"/api/v2/workspaces/{ws_id}/actions/unlock")

    def force_unlock(self, ws_id: str) -> int:
        return self.status("POST", f"/api/v2/workspaces/{ws_id}/actions/force-unlock")

    def mint(self, ws_id: str, phase: str) -> int:
        return self.status(
            "POST",
            f"/api/cairn/v1/workspaces/{ws_id}/id-tokens",
            {"audience": "sts.amazonaws.com", "run_phase": phase},
        )

    def upload_state(self, ws_id: str, raw: bytes) -> int:
        state = json.loads(raw)
        try:
            self.tfe.state_versions.create(
                ws_id,
                StateVersionCreateOptions(
                    serial=state["serial"],
                    md5=md5_hex(raw),
                    lineage=state["lineage"],
                    state=base64.b64encode(raw).decode(),
                ),
            )
        except TFEError as exc:
            assert exc.status is not None
            return exc.status
        return 201

    def permissions(self, ws_id: str) -> dict[str, bool]:
        doc = tfe_api.document(self.api.get(f"/api/v2/workspaces/{ws_id}"), 200)
        perms: dict[str, bool] = doc["data"]["attributes"]["permissions"]
        return perms


def sdk_status(call: Any, *args: Any, **kwargs: Any) -> int:
    """The HTTP status of a pytfe call (200 when it succeeds)."""
    try:
        call(*args, **kwargs)
    except TFEError as exc:
        assert exc.status is not None, exc
        return exc.status
    return 200


@dataclass
class Audit:
    """The access changes the tests made: each must have produced an audit event."""

    expected: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def expect(self, action: str, subject: str, **details: Any) -> None:
        self.expected.append((action, subject, details))


@dataclass
class World:
    server: CairnServer
    admin: Person
    org: str
    ws: dict[str, str]  # name → ID
    teams: dict[str, str]  # name → ID
    people: dict[str, Person]
    audit: Audit
    stack: ExitStack
    lineage: str = field(default_factory=new_lineage)
    serial: int = 1

    def person(self, name: str) -> Person:
        """A new user with a token of their own (created by the site admin)."""
        username = tfe_api.unique_name(name)
        user = tfe_api.document(
            self.admin.api.post(
                "/api/cairn/v1/admin/users",
                json={"username": username, "email": f"{username}@example.com"},
            ),
            201,
        )["data"]
        assert user["username"] == username
        self.audit.expect("rbac.user.create", username)
        created = tfe_api.document(
            self.admin.api.post(
                f"/api/v2/users/{user['id']}/authentication-tokens",
                json={"data": {"type": "authentication-tokens", "attributes": {}}},
                headers=JSONAPI,
            ),
            201,
        )
        token = created["data"]["attributes"]["token"]
        person = person_for(self.server, self.stack, username, user["id"], token)
        self.people[name] = person
        return person

    def team(self, name: str, **org_access: bool) -> str:
        options = TeamCreateOptions(name=name)
        if org_access:
            options = TeamCreateOptions(
                name=name, organization_access=OrganizationAccessOptions(**org_access)
            )
        team = self.admin.tfe.teams.create(self.org, options)
        assert team.name == name
        self.audit.expect("rbac.team.create", f"{self.org}/{name}")
        self.teams[name] = team.id
        return team.id

    def add(self, team: str, *people: Person, by: Person | None = None) -> None:
        (by or self.admin).tfe.teams.add_users(self.teams[team], [p.username for p in people])
        for p in people:
            self.audit.expect("rbac.member.add", f"{self.org}/{team}", user=p.username)

    def remove(self, team: str, *people: Person) -> None:
        self.admin.tfe.teams.remove_users(self.teams[team], [p.username for p in people])
        for p in people:
            self.audit.expect("rbac.member.remove", f"{self.org}/{team}", user=p.username)

    def access(self, team: str, ws: str, level: str) -> str:
        grant = self.admin.tfe.team_workspace_accesses.add(
            TeamWorkspaceAccessAddOptions(
                team_id=self.teams[team],
                workspace_id=self.ws[ws],
                access=TeamWorkspaceAccessType(level),
            )
        )
        assert (grant.access, grant.team_id, grant.workspace_id) == (
            TeamWorkspaceAccessType(level),
            self.teams[team],
            self.ws[ws],
        )
        self.audit.expect(
            "rbac.grant.create", f"{self.org}: {level} on {ws} to team {team}", grant_id=grant.id
        )
        return grant.id

    def grant(
        self, role: str, pattern: str, *, team: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        body = {"role": role, "workspaces": pattern, "team": team, "user": user}
        doc = tfe_api.document(
            self.admin.api.post(
                f"/api/cairn/v1/organizations/{self.org}/grants",
                json={k: v for k, v in body.items() if v is not None},
            ),
            201,
        )["data"]
        assert isinstance(doc, dict)
        who = f"team {team}" if team else f"user {user}"
        self.audit.expect(
            "rbac.grant.create", f"{self.org}: {role} on {pattern} to {who}", grant_id=doc["id"]
        )
        return doc

    def workspace(self, name: str, *, with_state: bool = True) -> str:
        ws = self.admin.tfe.workspaces.create(self.org, WorkspaceCreateOptions(name=name))
        self.ws[name] = ws.id
        if with_state:
            tfe_api.workspace_action(self.admin.api, ws.id, "lock")
            upload_inline(self.admin.api, ws.id, self.next_state())
            tfe_api.workspace_action(self.admin.api, ws.id, "unlock")
        return ws.id

    def next_state(self) -> bytes:
        self.serial += 1
        return state_file(
            self.serial, self.lineage, outputs={"who": {"value": "rbac", "type": "string"}}
        )

    def rename(self, old: str, new: str) -> None:
        renamed = self.admin.tfe.workspaces.update(
            old, WorkspaceUpdateOptions(name=new), organization=self.org
        )
        assert renamed.name == new
        self.ws[new] = self.ws.pop(old)


def person_for(
    server: CairnServer, stack: ExitStack, username: str, user_id: str, token: str
) -> Person:
    client = tfe_api.pytfe_client(server, token)
    stack.callback(client.close)
    api = stack.enter_context(server.client(token))
    return Person(username, user_id, token, client, api)


@pytest.fixture(scope="module")
def world(server: CairnServer, admin_token: str) -> Iterator[World]:
    """The organization and its people, teams, workspaces and grants (see the module doc)."""
    with ExitStack() as stack:
        admin_api = stack.enter_context(server.client(admin_token))
        me = tfe_api.document(admin_api.get("/api/v2/account/details"), 200)["data"]
        admin = person_for(server, stack, "admin", me["id"], admin_token)
        org = tfe_api.create_organization(admin_api, tfe_api.unique_name("rbac"))
        w = World(server, admin, org, {}, {}, {}, Audit(), stack)
        for name in ("app", "prod-api", "prod-db", "staging", "secret"):
            w.workspace(name)
        for name in ("reader", "planner", "writer", "wsadmin", "prodder", "outsider", "custom"):
            w.person(name)
        for team, level in (
            ("readers", "read"),
            ("planners", "plan"),
            ("writers", "write"),
            ("ws-admins", "admin"),
        ):
            w.team(team)
            w.access(team, "app", level)
        w.add("readers", w.people["reader"])
        w.add("planners", w.people["planner"])
        w.add("writers", w.people["writer"])
        w.add("ws-admins", w.people["wsadmin"])
        w.team("prod")
        w.add("prod", w.people["prodder"])
        w.grant("write", "prod-*", team="prod")
        tfe_api.expect(
            admin_api.post(
                f"/api/cairn/v1/organizations/{org}/roles",
                json={"name": "locker", "permissions": ["workspace:read", "workspace:lock"]},
            ),
            201,
        )
        w.audit.expect(
            "rbac.role.create",
            f"{org}/locker",
            permissions=sorted(["workspace:read", "workspace:lock"]),
        )
        w.grant("locker", "staging", user=w.people["custom"].username)
        yield w


# -- expected permissions attributes -----------------------------------------------------------

PERMISSION_KEYS = (
    "can-update",
    "can-destroy",
    "can-queue-run",
    "can-queue-apply",
    "can-lock",
    "can-unlock",
    "can-force-unlock",
    "can-read-state-versions",
    "can-create-state-versions",
    "can-update-variable",
)


def expected(*granted: str) -> dict[str, bool]:
    unknown = set(granted) - set(PERMISSION_KEYS)
    assert not unknown, unknown
    return {k: k in granted for k in PERMISSION_KEYS}


READ = expected("can-read-state-versions")
PLAN = expected("can-read-state-versions", "can-queue-run")
WRITE = expected(
    "can-read-state-versions",
    "can-queue-run",
    "can-queue-apply",
    "can-lock",
    "can-unlock",
    "can-create-state-versions",
    "can-update-variable",
)
ADMIN = expected(*PERMISSION_KEYS)
LOCKER = expected("can-read-state-versions", "can-lock", "can-unlock")


def assert_permissions(person: Person, ws_id: str, want: dict[str, bool]) -> None:
    """The `permissions` attribute says what the caller may do — in the read (httpx and
    pytfe) and in the organization's workspace list alike."""
    doc = tfe_api.document(person.api.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    got = doc["attributes"]["permissions"]
    assert {k: got[k] for k in PERMISSION_KEYS} == want, f"{person.username} on {ws_id}"
    org = doc["relationships"]["organization"]["data"]["id"]
    listed = tfe_api.document(
        person.api.get(f"/api/v2/organizations/{org}/workspaces", params={"page[size]": 100}),
        200,
    )["data"]
    (entry,) = [d for d in listed if d["id"] == ws_id]
    assert entry["attributes"]["permissions"] == got
    sdk = person.tfe.workspaces.read_by_id(ws_id).permissions
    assert sdk is not None
    assert (sdk.can_lock, sdk.can_force_unlock, sdk.can_queue_apply, sdk.can_update) == (
        want["can-lock"],
        want["can-force-unlock"],
        want["can-queue-apply"],
        want["can-update"],
    )


def assert_invisible(person: Person, w: World, ws: str) -> None:
    """Everything about an unreadable workspace is a 404, never a 403."""
    ws_id = w.ws[ws]
    with pytest.raises(NotFound):
        person.tfe.workspaces.read(ws, organization=w.org)
    with pytest.raises(NotFound):
        person.tfe.workspaces.read_by_id(ws_id)
    with pytest.raises(NotFound):
        person.tfe.state_versions.read_current(ws_id)
    assert person.lock(ws_id) == 404
    assert person.unlock(ws_id) == 404
    assert person.force_unlock(ws_id) == 404
    assert person.mint(ws_id, "plan") == 404
    assert person.upload_state(ws_id, w.next_state()) == 404
    assert person.status("GET", f"/api/v2/workspaces/{ws_id}/state-versions") == 404
    assert (
        person.status(
            "PATCH",
            f"/api/v2/workspaces/{ws_id}",
            {"data": {"type": "workspaces", "attributes": {"description": "x"}}},
        )
        == 404
    )
    assert person.status("DELETE", f"/api/v2/workspaces/{ws_id}") == 404


def visible_workspaces(person: Person, org: str) -> set[str | None]:
    return {ws.name for ws in person.tfe.workspaces.list(org)}


# -- the matrix ---------------------------------------------------------------------------------


def test_reader_reads_workspace_and_state_but_cannot_lock(world: World) -> None:
    w, reader = world, world.people["reader"]
    app = w.ws["app"]
    assert reader.tfe.workspaces.read("app", organization=w.org).id == app
    current = reader.tfe.state_versions.read_current(app)
    admin_current = w.admin.tfe.state_versions.read_current(app)
    assert current.id == admin_current.id
    assert reader.tfe.state_versions.download(current.id) == w.admin.tfe.state_versions.download(
        current.id
    )
    assert_permissions(reader, app, READ)
    assert visible_workspaces(reader, w.org) == {"app"}
    org = tfe_api.document(reader.api.get(f"/api/v2/organizations/{w.org}"), 200)["data"]
    assert not any(
        org["attributes"]["permissions"][k]
        for k in ("can-update", "can-destroy", "can-create-team", "can-create-workspace")
    )

    with pytest.raises(TFEError) as refused:
        reader.tfe.workspaces.lock(app, WorkspaceLockOptions(reason="reader"))
    assert refused.value.status == 403
    assert reader.unlock(app) == 403
    assert reader.force_unlock(app) == 403
    assert reader.upload_state(app, w.next_state()) == 403
    assert reader.mint(app, "plan") == 403
    assert reader.mint(app, "apply") == 403
    assert (
        sdk_status(
            reader.tfe.workspaces.update_by_id, app, WorkspaceUpdateOptions(description="no")
        )
        == 403
    )
    assert reader.status("DELETE", f"/api/v2/workspaces/{app}") == 403
    assert w.admin.tfe.workspaces.read_by_id(app).locked is False

    for ws in ("prod-api", "prod-db", "staging", "secret"):
        assert_invisible(reader, w, ws)


def test_outsider_sees_no_organization_and_no_workspace(world: World) -> None:
    w, outsider = world, world.people["outsider"]
    with pytest.raises(NotFound):
        outsider.tfe.organizations.read(w.org)
    assert w.org not in {o.name for o in outsider.tfe.organizations.list()}
    assert outsider.status("GET", f"/api/v2/organizations/{w.org}/workspaces") == 404
    assert outsider.status("GET", f"/api/v2/organizations/{w.org}/teams") == 404
    assert outsider.status("GET", f"/api/v2/teams/{w.teams['readers']}") == 404
    assert outsider.status("GET", f"/api/cairn/v1/organizations/{w.org}/grants") == 404
    assert (
        outsider.status(
            "POST",
            f"/api/v2/organizations/{w.org}/workspaces",
            {"data": {"type": "workspaces", "attributes": {"name": "intruder"}}},
        )
        == 404
    )
    assert (
        outsider.status(
            "POST",
            f"/api/v2/organizations/{w.org}/teams",
            {"data": {"type": "teams", "attributes": {"name": "intruders"}}},
        )
        == 404
    )
    for ws in w.ws:
        assert_invisible(outsider, w, ws)


def test_writer_locks_uploads_unlocks_but_cannot_force_unlock_or_rotate(world: World) -> None:
    w, writer = world, world.people["writer"]
    app = w.ws["app"]
    assert_permissions(writer, app, WRITE)

    locked = writer.tfe.workspaces.lock(app, WorkspaceLockOptions(reason="writer at work"))
    assert locked.locked is True
    raw = w.next_state()
    assert writer.upload_state(app, raw) == 201
    current = w.admin.tfe.state_versions.read_current(app)
    assert current.serial == json.loads(raw)["serial"]
    assert w.admin.tfe.state_versions.download(current.id) == raw
    assert writer.tfe.workspaces.unlock(app).locked is False

    # Someone else's lock: the writer may neither unlock it nor force it open.
    tfe_api.workspace_action(w.admin.api, app, "lock")
    try:
        assert writer.unlock(app) == 409
        with pytest.raises(TFEError) as forced:
            writer.tfe.workspaces.force_unlock(app)
        assert forced.value.status == 403
        assert writer.upload_state(app, w.next_state()) == 409  # not the lock holder
        assert w.admin.tfe.workspaces.read_by_id(app).locked is True
    finally:
        tfe_api.workspace_action(w.admin.api, app, "unlock")

    # The issuer's keys are the site admin's business.
    assert writer.status("POST", "/api/cairn/v1/admin/oidc/keys/rotate", {}) == 403
    assert writer.status("POST", "/api/cairn/v1/admin/oidc/keys/trim", {}) == 403
    assert writer.status("GET", "/api/cairn/v1/admin/oidc/keys") == 404
    assert writer.mint(app, "plan") == 201
    assert writer.mint(app, "apply") == 201
    # Write is not admin: no settings, no delete, no access management.
    assert (
        sdk_status(
            writer.tfe.workspaces.update_by_id, app, WorkspaceUpdateOptions(description="no")
        )
        == 403
    )
    assert writer.status("DELETE", f"/api/v2/workspaces/{app}") == 403
    assert sdk_status(writer.tfe.teams.create, w.org, TeamCreateOptions(name="mine")) == 403
    for ws in ("prod-api", "staging", "secret"):
        assert_invisible(writer, w, ws)


def test_plan_member_mints_plan_tokens_not_apply_tokens(world: World) -> None:
    w, planner = world, world.people["planner"]
    app = w.ws["app"]
    assert_permissions(planner, app, PLAN)
    response = planner.api.post(
        f"/api/cairn/v1/workspaces/{app}/id-tokens",
        json={"audience": "sts.amazonaws.com", "run_phase": "plan"},
    )
    tfe_api.expect(response, 201)
    assert response.json()["token"].count(".") == 2
    assert planner.mint(app, "apply") == 403
    assert planner.lock(app) == 403
    assert planner.upload_state(app, w.next_state()) == 403
    assert planner.tfe.state_versions.read_current(app).id


def test_workspace_admin_force_unlocks_and_manages_one_workspace(world: World) -> None:
    w, wsadmin = world, world.people["wsadmin"]
    app = w.ws["app"]
    assert_permissions(wsadmin, app, ADMIN)
    got = wsadmin.permissions(app)
    assert got["can-force-delete"] is False  # deleting a workspace with state needs owners

    tfe_api.workspace_action(w.admin.api, app, "lock")
    assert wsadmin.tfe.workspaces.force_unlock(app).locked is False
    updated = wsadmin.tfe.workspaces.update_by_id(app, WorkspaceUpdateOptions(description="mine"))
    assert updated.description == "mine"
    # Admin on one workspace is not org management.
    assert sdk_status(wsadmin.tfe.teams.create, w.org, TeamCreateOptions(name="mine")) == 403
    assert (
        wsadmin.status(
            "POST",
            f"/api/cairn/v1/organizations/{w.org}/grants",
            {"role": "admin", "workspaces": "*", "user": wsadmin.username},
        )
        == 403
    )
    assert sdk_status(
        wsadmin.tfe.team_workspace_accesses.add,
        TeamWorkspaceAccessAddOptions(
            team_id=w.teams["ws-admins"],
            workspace_id=w.ws["secret"],
            access=TeamWorkspaceAccessType.ADMIN,
        ),
    ) in (403, 404)
    assert wsadmin.status("POST", "/api/cairn/v1/admin/oidc/keys/rotate", {}) == 403
    for ws in ("prod-api", "staging", "secret"):
        assert_invisible(wsadmin, w, ws)


def test_pattern_grant_covers_matching_names_and_follows_renames(world: World) -> None:
    w, prodder = world, world.people["prodder"]
    assert visible_workspaces(prodder, w.org) == {"prod-api", "prod-db"}
    for ws in ("prod-api", "prod-db"):
        assert_permissions(prodder, w.ws[ws], WRITE)
    api_id = w.ws["prod-api"]
    assert prodder.lock(api_id) == 200
    assert prodder.upload_state(api_id, w.next_state()) == 201
    assert prodder.unlock(api_id) == 200
    assert prodder.force_unlock(api_id) in (403,)
    for ws in ("app", "staging", "secret"):
        assert_invisible(prodder, w, ws)

    # A new workspace whose name matches is covered at once.
    w.workspace("prod-cache", with_state=False)
    assert prodder.lock(w.ws["prod-cache"]) == 200
    assert prodder.unlock(w.ws["prod-cache"]) == 200

    # Renamed out of the pattern: gone on the next request, by name and by ID.
    w.rename("prod-db", "legacy-db")
    assert_invisible(prodder, w, "legacy-db")
    assert visible_workspaces(prodder, w.org) == {"prod-api", "prod-cache"}
    # Renamed into the pattern: covered.
    w.rename("staging", "prod-staging")
    assert_permissions(prodder, w.ws["prod-staging"], WRITE)
    # And back, so the other tests keep their names.
    w.rename("prod-staging", "staging")
    w.rename("legacy-db", "prod-db")
    assert_permissions(prodder, w.ws["prod-db"], WRITE)
    assert_invisible(prodder, w, "staging")


def test_custom_role_grants_exactly_its_permissions(world: World) -> None:
    w, custom = world, world.people["custom"]
    staging = w.ws["staging"]
    roles = tfe_api.document(custom.api.get(f"/api/cairn/v1/organizations/{w.org}/roles"), 200)[
        "data"
    ]
    assert {
        "name": "locker",
        "permissions": ["workspace:lock", "workspace:read"],
        "built-in": False,
    } in roles
    assert_permissions(custom, staging, LOCKER)
    assert custom.tfe.state_versions.read_current(staging).id
    assert custom.lock(staging) == 200
    assert custom.upload_state(staging, w.next_state()) == 403  # no workspace:write
    assert custom.unlock(staging) == 200
    assert custom.force_unlock(staging) == 403
    assert custom.mint(staging, "plan") == 403
    assert custom.mint(staging, "apply") == 403
    assert visible_workspaces(custom, w.org) == {"staging"}
    for ws in ("app", "prod-api", "secret"):
        assert_invisible(custom, w, ws)

    # A role with run:plan on top: plan tokens now, still no apply.
    tfe_api.expect(
        w.admin.api.post(
            f"/api/cairn/v1/organizations/{w.org}/roles",
            json={
                "name": "planner-locker",
                "permissions": ["workspace:read", "workspace:lock", "run:plan"],
            },
        ),
        201,
    )
    w.audit.expect("rbac.role.create", f"{w.org}/planner-locker")
    w.grant("planner-locker", "stag*", user=custom.username)
    assert custom.mint(staging, "plan") == 201
    assert custom.mint(staging, "apply") == 403

    # Deleting the role takes its grants with it.
    tfe_api.expect(
        w.admin.api.delete(f"/api/cairn/v1/organizations/{w.org}/roles/planner-locker"), 204
    )
    w.audit.expect("rbac.role.delete", f"{w.org}/planner-locker")
    assert custom.mint(staging, "plan") == 403
    assert_permissions(custom, staging, LOCKER)

    # Unknown permissions are refused.
    bad = w.admin.api.post(
        f"/api/cairn/v1/organizations/{w.org}/roles",
        json={"name": "bad", "permissions": ["workspace:read", "org:read"]},
    )
    assert bad.status_code == 422, bad.text


def test_owners_manage_everything_in_their_organization(world: World) -> None:
    w = world
    owners = {t.name: t for t in w.admin.tfe.teams.list(w.org)}["owners"]
    assert w.admin.user_id in {u.id for u in owners.users}  # the creator is an owner
    w.teams["owners"] = owners.id
    owner = w.person("owner")
    w.add("owners", owner)

    assert visible_workspaces(owner, w.org) == set(w.ws)
    app = w.ws["app"]
    assert_permissions(owner, app, ADMIN)
    assert owner.permissions(app)["can-force-delete"] is True
    org = tfe_api.document(owner.api.get(f"/api/v2/organizations/{w.org}"), 200)["data"]
    assert all(
        org["attributes"]["permissions"][k]
        for k in ("can-update", "can-destroy", "can-create-team", "can-create-workspace")
    )

    # Workspaces, locks, state, tokens for every phase.
    made = owner.tfe.workspaces.create(w.org, WorkspaceCreateOptions(name="owned"))
    w.ws["owned"] = made.id
    tfe_api.workspace_action(w.admin.api, w.ws["secret"], "lock")
    assert owner.tfe.workspaces.force_unlock(w.ws["secret"]).locked is False
    assert owner.mint(w.ws["secret"], "apply") == 201
    # Teams, members, access, grants, roles.
    team = owner.tfe.teams.create(w.org, TeamCreateOptions(name="owners-made"))
    w.teams["owners-made"] = team.id
    w.audit.expect("rbac.team.create", f"{w.org}/owners-made")
    w.add("owners-made", w.people["outsider"], by=owner)
    grant = owner.tfe.team_workspace_accesses.add(
        TeamWorkspaceAccessAddOptions(
            team_id=team.id, workspace_id=made.id, access=TeamWorkspaceAccessType.READ
        )
    )
    w.audit.expect("rbac.grant.create", f"{w.org}: read on owned to team owners-made")
    updated = owner.tfe.team_workspace_accesses.update(
        grant.id, TeamWorkspaceAccessUpdateOptions(access=TeamWorkspaceAccessType.WRITE)
    )
    assert updated.access == TeamWorkspaceAccessType.WRITE
    w.audit.expect("rbac.grant.update", grant.id, role="write")
    assert w.people["outsider"].lock(made.id) == 200
    assert w.people["outsider"].unlock(made.id) == 200
    listed = list(owner.tfe.team_workspace_accesses.list(made.id))
    assert [g.id for g in listed] == [grant.id]
    owner.tfe.team_workspace_accesses.remove(grant.id)
    w.audit.expect("rbac.grant.delete", grant.id)
    assert_invisible(w.people["outsider"], w, "owned")
    renamed = owner.tfe.teams.update(team.id, TeamUpdateOptions(name="owners-made-2"))
    assert renamed.name == "owners-made-2"
    w.audit.expect("rbac.team.update", f"{w.org}/owners-made")
    owner.tfe.teams.delete(team.id)
    w.audit.expect("rbac.team.delete", f"{w.org}/owners-made-2")
    assert owner.status("GET", f"/api/cairn/v1/organizations/{w.org}/grants") == 200
    owner.tfe.workspaces.delete_by_id(made.id)
    del w.ws["owned"]

    # The owners team keeps its name and at least one member.
    assert sdk_status(owner.tfe.teams.delete, owners.id) == 409
    # Nothing beyond the organization: no site administration, no other organization.
    assert owner.status("POST", "/api/cairn/v1/admin/oidc/keys/rotate", {}) == 403
    assert owner.status("POST", "/api/cairn/v1/admin/users", {"username": "x"}) == 403
    assert (
        owner.status(
            "POST",
            "/api/v2/organizations",
            {"data": {"type": "organizations", "attributes": {"name": "mine", "email": "a@b.c"}}},
        )
        == 403
    )
    other = tfe_api.create_organization(w.admin.api, tfe_api.unique_name("other"))
    with pytest.raises(NotFound):
        owner.tfe.organizations.read(other)

    w.remove("owners", owner)
    assert visible_workspaces_status(owner, w.org) == 404
    with pytest.raises(TFEError) as last:
        w.admin.tfe.teams.remove_users(owners.id, [w.admin.username])
    assert last.value.status == 409


def visible_workspaces_status(person: Person, org: str) -> int:
    return person.status("GET", f"/api/v2/organizations/{org}/workspaces")


def test_removing_a_member_or_grant_applies_to_the_next_request(world: World) -> None:
    """No token freezing: access is loaded per request, the same token loses it at once."""
    w = world
    temp = w.person("temp")
    w.team("temps")
    grant_id = w.access("temps", "prod-api", "write")
    w.add("temps", temp)
    api_id = w.ws["prod-api"]
    assert temp.lock(api_id) == 200
    assert temp.unlock(api_id) == 200

    w.remove("temps", temp)
    assert_invisible(temp, w, "prod-api")
    with pytest.raises(NotFound):
        temp.tfe.organizations.read(w.org)

    w.add("temps", temp)
    assert_permissions(temp, api_id, WRITE)
    # Downgrade the team's access: the next request sees read.
    w.admin.tfe.team_workspace_accesses.update(
        grant_id, TeamWorkspaceAccessUpdateOptions(access=TeamWorkspaceAccessType.READ)
    )
    w.audit.expect("rbac.grant.update", grant_id, role="read")
    assert_permissions(temp, api_id, READ)
    assert temp.lock(api_id) == 403
    # Remove the grant: the team member is left with an organization and no workspace.
    w.admin.tfe.team_workspace_accesses.remove(grant_id)
    w.audit.expect("rbac.grant.delete", grant_id)
    assert_invisible(temp, w, "prod-api")
    assert visible_workspaces(temp, w.org) == set()

    # A pattern grant to the user removed through the cairn API.
    doc = w.grant("read", "prod-*", user=temp.username)
    assert visible_workspaces(temp, w.org) == {n for n in w.ws if n.startswith("prod-")}
    tfe_api.expect(temp.api.delete(f"/api/cairn/v1/grants/{doc['id']}"), 404)  # not theirs
    tfe_api.expect(w.admin.api.delete(f"/api/cairn/v1/grants/{doc['id']}"), 204)
    w.audit.expect("rbac.grant.delete", doc["id"])
    assert visible_workspaces(temp, w.org) == set()

    # The token itself still works: it was never the token that carried the access.
    assert temp.status("GET", "/api/v2/account/details") == 200


def test_grant_lists_and_team_access_lists_need_org_management(world: World) -> None:
    w, reader = world, world.people["reader"]
    assert reader.status("GET", f"/api/cairn/v1/organizations/{w.org}/grants") == 403
    app = w.ws["app"]
    assert reader.status("GET", f"/api/v2/team-workspaces?filter[workspace][id]={app}") == 403
    with pytest.raises(TFEError) as refused:
        list(reader.tfe.team_workspace_accesses.list(app))
    assert refused.value.status == 403
    grants = tfe_api.document(w.admin.api.get(f"/api/cairn/v1/organizations/{w.org}/grants"), 200)[
        "data"
    ]
    assert ("write", "prod-*", "prod", "grant") in {
        (g["role"], g["workspaces"], g["team"], g["kind"]) for g in grants
    }
    listed = list(w.admin.tfe.team_workspace_accesses.list(app))
    assert {(g.team_id, g.access) for g in listed} == {
        (w.teams["readers"], TeamWorkspaceAccessType.READ),
        (w.teams["planners"], TeamWorkspaceAccessType.PLAN),
        (w.teams["writers"], TeamWorkspaceAccessType.WRITE),
        (w.teams["ws-admins"], TeamWorkspaceAccessType.ADMIN),
    }


def test_team_access_endpoints_do_not_reveal_unreadable_workspaces(world: World) -> None:
    """A workspace the caller cannot read answers like one that does not exist."""
    w, reader = world, world.people["reader"]
    missing = "ws-" + "x" * 16
    hidden = w.ws["secret"]
    body = {
        "data": {
            "type": "team-workspaces",
            "attributes": {"access": "admin"},
            "relationships": {
                "team": {"data": {"type": "teams", "id": w.teams["readers"]}},
                "workspace": {"data": {"type": "workspaces", "id": "WS"}},
            },
        }
    }

    def attempts(ws_id: str) -> tuple[int, int]:
        listed = reader.status("GET", f"/api/v2/team-workspaces?filter[workspace][id]={ws_id}")
        created = reader.status(
            "POST", "/api/v2/team-workspaces", json.loads(json.dumps(body).replace("WS", ws_id))
        )
        return listed, created

    assert attempts(missing) == (404, 404)
    assert attempts(hidden) == attempts(missing)


def test_organization_access_flags_cover_every_workspace(world: World) -> None:
    """TFE team organization-access: read-workspaces reads all (incl. later ones),
    manage-workspaces administers all, neither manages the organization's access."""
    w = world
    viewer, manager = w.person("viewer"), w.person("manager")
    w.team("all-readers", read_workspaces=True)
    w.team("all-managers", manage_workspaces=True)
    w.add("all-readers", viewer)
    w.add("all-managers", manager)
    teams = {t.name: t for t in w.admin.tfe.teams.list(w.org)}
    org_access = teams["all-readers"].organization_access
    assert org_access is not None and org_access.read_workspaces is True
    assert org_access.manage_workspaces is False

    assert visible_workspaces(viewer, w.org) == set(w.ws)
    assert visible_workspaces(manager, w.org) == set(w.ws)
    for ws_id in w.ws.values():
        assert_permissions(viewer, ws_id, READ)
        assert_permissions(manager, ws_id, ADMIN)
    assert viewer.lock(w.ws["secret"]) == 403
    later = w.workspace("later", with_state=False)
    assert viewer.permissions(later)["can-read-state-versions"] is True
    made = manager.tfe.workspaces.create(w.org, WorkspaceCreateOptions(name="by-manager"))
    assert manager.status("DELETE", f"/api/v2/workspaces/{made.id}") == 204
    del w.ws["later"]
    assert w.admin.status("DELETE", f"/api/v2/workspaces/{later}") == 204
    for person in (viewer, manager):
        assert sdk_status(person.tfe.teams.create, w.org, TeamCreateOptions(name="x")) == 403
        assert person.status("GET", f"/api/cairn/v1/organizations/{w.org}/grants") == 403
        org = tfe_api.document(person.api.get(f"/api/v2/organizations/{w.org}"), 200)
        assert org["data"]["attributes"]["permissions"]["can-create-team"] is False
        assert org["data"]["attributes"]["permissions"]["can-update"] is False


def test_team_token_has_the_teams_access(world: World) -> None:
    """A team token acts with its team's access, loaded per request like a person's."""
    w = world
    w.team("bots")
    grant_id = w.access("bots", "app", "read")
    created = tfe_api.document(
        w.admin.api.post(f"/api/v2/teams/{w.teams['bots']}/authentication-token", json=None),
        201,
    )
    bot = person_for(w.server, w.stack, "bot", "", created["data"]["attributes"]["token"])
    app = w.ws["app"]
    assert_permissions(bot, app, READ)
    assert bot.lock(app) == 403
    assert_invisible(bot, w, "secret")
    w.admin.tfe.team_workspace_accesses.update(
        grant_id, TeamWorkspaceAccessUpdateOptions(access=TeamWorkspaceAccessType.WRITE)
    )
    w.audit.expect("rbac.grant.update", grant_id, role="write")
    assert bot.lock(app) == 200
    assert bot.unlock(app) == 200
    w.admin.tfe.team_workspace_accesses.remove(grant_id)
    w.audit.expect("rbac.grant.delete", grant_id)
    assert_invisible(bot, w, "app")
    assert bot.status("GET", f"/api/v2/organizations/{w.org}") == 200  # still in the team
    # Deleting the team ends its token.
    w.admin.tfe.teams.delete(w.teams.pop("bots"))
    w.audit.expect("rbac.team.delete", f"{w.org}/bots")
    assert bot.status("GET", f"/api/v2/organizations/{w.org}") == 401


def test_organization_token_does_not_outlive_its_organization(world: World) -> None:
    w = world
    name = tfe_api.unique_name("short-lived")
    tfe_api.create_organization(w.admin.api, name)
    created = tfe_api.document(
        w.admin.api.post(f"/api/v2/organizations/{name}/authentication-token", json=None), 201
    )
    org_token = person_for(
        w.server, w.stack, "org-token", "", created["data"]["attributes"]["token"]
    )
    assert org_token.status("GET", f"/api/v2/organizations/{name}/workspaces") == 200
    tfe_api.expect(w.admin.api.delete(f"/api/v2/organizations/{name}"), 204)
    assert org_token.status("GET", f"/api/v2/organizations/{name}") in (401, 404)

    # Someone else's organization, later, under the same name.
    tfe_api.create_organization(w.admin.api, name)
    ws_id = tfe_api.create_workspace(w.admin.api, name, "theirs")
    assert org_token.status("GET", f"/api/v2/organizations/{name}") in (401, 404)
    assert org_token.status("GET", f"/api/v2/workspaces/{ws_id}") in (401, 404)
    assert org_token.lock(ws_id) in (401, 404)


def test_every_access_change_is_audited(world: World) -> None:
    """Runs last: each change the module made has its event (actor, source, outcome)."""
    w = world
    events: list[dict[str, Any]] = []
    page = 1
    while True:
        doc = tfe_api.document(
            w.admin.api.get(
                "/api/cairn/v1/audit-events",
                params={"filter[action]": "rbac.", "page[size]": 100, "page[number]": page},
            ),
            200,
        )
        events += [e["attributes"] for e in doc["data"]]
        if not doc["meta"]["pagination"].get("next-page"):
            break
        page += 1

    missing = []
    for action, subject, details in w.audit.expected:
        found = [
            e
            for e in events
            if e["action"] == action
            and e["subject"] == subject
            and all(e["details"].get(k) == v for k, v in details.items())
        ]
        if not found:
            missing.append((action, subject, details))
            continue
        assert all(e["outcome"] == "success" for e in found)
        assert all(e["source-address"] == "127.0.0.1" for e in found)
        assert all(e["actor-name"] for e in found)
    assert not missing, f"access changes without an audit event: {missing}"
    assert len(w.audit.expected) >= 30
    # The tokens the admin created for the people are audited too (TFE authentication-tokens
    # endpoints and terraform login both record `token.create`).
    tokens = tfe_api.document(
        w.admin.api.get(
            "/api/cairn/v1/audit-events",
            params={"filter[action]": "token.create", "page[size]": 100},
        ),
        200,
    )["data"]
    for_whom = {
        e["attributes"]["details"].get("username")
        for e in tokens
        if e["attributes"]["actor-name"] == "admin"
    }
    assert {p.username for p in w.people.values()} <= for_whom
