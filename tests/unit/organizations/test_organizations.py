"""cairn.organizations on SQLite in ``tmp_path``: hooks run inside the service's transaction
(a hook that raises refuses the change, nothing is written), and the organization list is
filtered by the authorizer's rule, counted and paged by the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from cairn.authz.access import Access, WorkspaceGrant
from cairn.authz.permissions import ORG_MANAGE, WORKSPACE_READ
from cairn.authz.subject import ServiceAccount, Subject, User
from cairn.clock import FrozenClock
from cairn.db.engine import Database, make_engine
from cairn.errors import Conflict, Forbidden, NotFound
from cairn.migrations.migrate import upgrade
from cairn.organizations.hooks import OrganizationHooks
from cairn.organizations.model import Organization
from cairn.organizations.service import OrganizationService, OrgUpdate
from cairn.paging import Page

ADMIN = User("user-admin", "admin", "t-admin", is_site_admin=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    db = Database(make_engine(f"sqlite:///{tmp_path / 'cairn.db'}"))
    upgrade(db.engine)
    try:
        yield db
    finally:
        db.dispose()


def test_hooks_run_in_the_transaction_and_may_refuse(db: Database) -> None:
    seen: list[tuple[str, str, str]] = []

    def after_create(s: Session, org: Organization, creator: Subject) -> None:
        seen.append(("create", org.name, creator.id))
        if org.name == "refused":
            raise Conflict("no")

    def after_rename(s: Session, org: Organization, old_name: str) -> None:
        seen.append(("rename", old_name, org.name))

    def before_delete(s: Session, org: Organization) -> None:
        raise Conflict(f"{org.name} is busy")

    hooks = OrganizationHooks([after_create], [after_rename], [before_delete])
    orgs = OrganizationService(db, FrozenClock(), hooks)
    orgs.create(ADMIN, "acme", "", None)
    with pytest.raises(Conflict):
        orgs.create(ADMIN, "refused", "", None)
    with pytest.raises(NotFound):
        orgs.get(ADMIN, "refused")  # rolled back with the hook's refusal
    orgs.update(ADMIN, "acme", OrgUpdate(email="ops@acme.test"))  # not a rename
    orgs.update(ADMIN, "acme", OrgUpdate(name="acme2"))
    with pytest.raises(Conflict, match="acme2 is busy"):
        orgs.delete(ADMIN, "acme2")
    assert orgs.get(ADMIN, "acme2").email == "ops@acme.test"
    assert seen == [
        ("create", "acme", ADMIN.id),
        ("create", "refused", ADMIN.id),
        ("rename", "acme", "acme2"),
    ]


def test_the_list_shows_what_the_caller_may_see(db: Database) -> None:
    orgs = OrganizationService(db, FrozenClock())
    made = {n: orgs.create(ADMIN, n, "", None) for n in ("a1", "a2", "b1", "b2", "c1")}
    grant = WorkspaceGrant(made["b2"].id, frozenset({WORKSPACE_READ}), pattern="*")
    access = Access(organization={made["a2"].id: frozenset({ORG_MANAGE})}, grants=(grant,))
    user = User("user-bob", "bob", "t-bob", access=access)

    page, total = orgs.list_organizations(user, Page(1, 1), None)
    assert total == 2 and [o.name for o in page] == ["a2"]
    page, total = orgs.list_organizations(user, Page(2, 1), None)
    assert [o.name for o in page] == ["b2"]
    page, total = orgs.list_organizations(user, Page(1, 20), "b")
    assert total == 1 and [o.name for o in page] == ["b2"]
    _, total = orgs.list_organizations(ADMIN, Page(1, 20), None)
    assert total == 5
    token = ServiceAccount("sa-1", "api-org-c1", "t", made["c1"].id)
    assert orgs.list_organizations(token, Page(1, 20), None) == ([], 0)


def test_who_may_do_what(db: Database) -> None:
    orgs = OrganizationService(db, FrozenClock())
    acme = orgs.create(ADMIN, "acme", "", None)
    reader = User(
        "user-r",
        "r",
        "t",
        access=Access(grants=(WorkspaceGrant(acme.id, frozenset({WORKSPACE_READ}), pattern="*"),)),
    )
    stranger = User("user-s", "s", "t")
    with pytest.raises(Forbidden):
        orgs.create(reader, "mine", "", None)
    with pytest.raises(NotFound):
        orgs.get(stranger, "acme")
    with pytest.raises(NotFound):
        orgs.update(stranger, "acme", OrgUpdate(email="x"))
    with pytest.raises(Forbidden):
        orgs.update(reader, "acme", OrgUpdate(email="x"))
    _, projects, _ = orgs.list_projects(reader, "acme", Page(1, 20), None, None)
    assert [p.name for p in projects] == ["Default Project"]
    # Projects by ID: for those who read every workspace of the organization (as before).
    for caller in (stranger, reader):
        with pytest.raises(NotFound, match="project"):
            orgs.get_project(caller, projects[0].id)
    everything = User("user-e", "e", "t", access=Access({acme.id: frozenset({WORKSPACE_READ})}))
    assert orgs.get_project(everything, projects[0].id)[1].is_default
    with pytest.raises(Forbidden):
        orgs.delete_project(everything, projects[0].id)
