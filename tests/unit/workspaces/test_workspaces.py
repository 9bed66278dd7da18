"""cairn.workspaces on SQLite in ``tmp_path``: the lock rules on the model and their one
conditional write (a decision taken on a stale row loses, changing nothing), and lists that
the database filters (by the authorizer's rule), counts and pages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from sqlalchemy import insert

from cairn import ids
from cairn.authz.access import Access, WorkspaceGrant
from cairn.authz.permissions import WORKSPACE_READ
from cairn.authz.subject import USER_TYPE, Holder, User
from cairn.clock import FrozenClock
from cairn.db.engine import Database, make_engine
from cairn.errors import Conflict, NotFound
from cairn.migrations.migrate import upgrade
from cairn.organizations.model import Organization
from cairn.organizations.service import OrganizationService
from cairn.organizations.store import default_project_id
from cairn.paging import Page
from cairn.workspaces import locks
from cairn.workspaces.locks import LockService
from cairn.workspaces.model import LockRefused, Workspace
from cairn.workspaces.service import WorkspaceService, WorkspaceSettings
from cairn.workspaces.store import ListFilter

ADMIN = User("user-admin", "admin", "t-admin", is_site_admin=True)
ALICE = Holder(USER_TYPE, "user-alice")
RUN = Holder("runs", "run-1")


def bare(holder: Holder | None = None) -> Workspace:
    ws = Workspace(id="ws-1", name="app")
    ws.locked_by_kind, ws.locked_by_id = (holder.kind, holder.id) if holder else (None, None)
    return ws


# ---- the rules, on the model ------------------------------------------------------------------


def test_a_free_lock_is_taken_by_a_user_or_a_run() -> None:
    for holder in (ALICE, RUN):
        change = bare().enlock(holder)
        assert (change.expected, change.holder) == (None, holder)


def test_a_taken_lock_is_not_taken_again_even_by_its_holder() -> None:
    for holder in (ALICE, RUN):
        with pytest.raises(LockRefused) as caught:
            bare(ALICE).enlock(holder)
        assert caught.value.why == "locked"


def test_only_the_holder_unlocks_unless_forced() -> None:
    assert bare(ALICE).unlock(ALICE).expected == ALICE
    with pytest.raises(LockRefused) as caught:
        bare(RUN).unlock(ALICE)
    assert caught.value.why == "not-holder"
    # A user and a run with the same ID are different holders.
    with pytest.raises(LockRefused):
        bare(Holder("runs", ALICE.id)).unlock(ALICE)
    forced = bare(RUN).unlock(ALICE, force=True)
    assert (forced.expected, forced.holder) == (RUN, None)


def test_there_is_nothing_to_unlock_on_a_free_workspace() -> None:
    for force in (False, True):
        with pytest.raises(LockRefused) as caught:
            bare().unlock(ALICE, force=force)
        assert caught.value.why == "unlocked"


# ---- with a database --------------------------------------------------------------------------


@dataclass
class Cairn:
    db: Database
    clock: FrozenClock
    org: Organization
    workspaces: WorkspaceService
    locks: LockService


@pytest.fixture
def cairn(tmp_path: Path) -> Iterator[Cairn]:
    db = Database(make_engine(f"sqlite:///{tmp_path / 'cairn.db'}"))
    upgrade(db.engine)
    clock = FrozenClock()
    org = OrganizationService(db, clock).create(ADMIN, "acme", "", None)
    try:
        yield Cairn(db, clock, org, WorkspaceService(db, clock), LockService(db, clock))
    finally:
        db.dispose()


def test_a_decision_on_a_stale_row_loses_and_changes_nothing(cairn: Cairn) -> None:
    ws_id = cairn.workspaces.create(ADMIN, "acme", WorkspaceSettings(name="app")).ws.id
    now = cairn.clock.now()
    with cairn.db.unit_of_work(write=True) as s:
        ws = s.get(Workspace, ws_id)
        assert ws is not None
        first, second = ws.enlock(ALICE), ws.enlock(RUN)  # both decided on the free row
        assert locks.write_lock(s, ws, first, now=now, reason="plan")
        assert not locks.write_lock(s, ws, second, now=now)
        s.commit()
    with cairn.db.unit_of_work() as s:
        ws = s.get(Workspace, ws_id)
        assert ws is not None and ws.holder == ALICE and ws.lock_reason == "plan"
        message = locks.held_message(s, cairn.org, ws_id, "is locked")
        assert "acme/app is locked by user user-alice since" in message


def test_lock_unlock_and_force_unlock_through_the_service(cairn: Cairn) -> None:
    ws_id = cairn.workspaces.create(ADMIN, "acme", WorkspaceSettings(name="app")).ws.id
    view = cairn.locks.lock(ADMIN, ws_id, "x" * 600, "192.0.2.1")
    assert view.ws.holder == Holder(USER_TYPE, ADMIN.id) and len(view.ws.lock_reason) == 500
    with pytest.raises(Conflict, match="is already locked by user"):
        cairn.locks.lock(ADMIN, ws_id, "", "192.0.2.1")
    assert cairn.locks.unlock(ADMIN, ws_id, "192.0.2.1").ws.holder is None
    with pytest.raises(Conflict, match="already unlocked"):
        cairn.locks.force_unlock(ADMIN, ws_id, "192.0.2.1")


def test_lists_are_filtered_counted_and_paged_by_the_database(cairn: Cairn) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with cairn.db.unit_of_work(write=True) as s:
        project = default_project_id(s, cairn.org.id)
        rows = [
            dict(
                id=ids.new_id("workspace"),
                organization_id=cairn.org.id,
                project_id=project,
                name=f"ws-{n % 4}-{n:03d}",
                created_at=now,
                updated_at=now,
            )
            for n in range(200)
        ]
        s.execute(insert(Workspace), rows)
        s.commit()
    grant = WorkspaceGrant(cairn.org.id, frozenset({WORKSPACE_READ}), pattern="ws-[02]-*")
    user = User("user-bob", "bob", "t-bob", access=Access(grants=(grant,)))

    views, total = cairn.workspaces.search(user, "acme", ListFilter(), Page(2, 20))
    assert total == 100
    readable = sorted(n for r in rows if fnmatchcase(n := str(r["name"]), "ws-[02]-*"))
    assert [v.ws.name for v in views] == readable[20:40]
    # The grant's pattern and the search's wildcard, both in SQL.
    _, total = cairn.workspaces.search(user, "acme", ListFilter(wildcard="*-00*"), Page(1, 20))
    assert total == len([n for n in readable if fnmatchcase(n, "*-00*")])
    _, total = cairn.workspaces.search(ADMIN, "acme", ListFilter(), Page(1, 20))
    assert total == 200
    stranger = User("user-eve", "eve", "t-eve")
    with pytest.raises(NotFound):
        cairn.workspaces.search(stranger, "acme", ListFilter(), Page(1, 20))
