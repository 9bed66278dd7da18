"""cairn.variables on SQLite in ``tmp_path``: every value sealed at rest under its row (a
value moved to another row, or a row switched to non-sensitive behind cairn's back, does not
open), sensitive values write-only, the limits, what a job gets, and values never in reprs,
audit events or log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, update

from cairn.audit.model import AuditEvent
from cairn.authz.subject import User
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database, make_engine
from cairn.errors import Invalid, SealError
from cairn.migrations.migrate import upgrade
from cairn.organizations.service import OrganizationService
from cairn.variables import service as variables_service
from cairn.variables.model import Variable
from cairn.variables.service import (
    EnvValue,
    JobVariables,
    NewVariable,
    TerraformValue,
    VariableChange,
    Variables,
)
from cairn.workspaces.service import WorkspaceService, WorkspaceSettings

ADMIN = User("user-admin", "admin", "t-admin", is_site_admin=True)
SECRET = "hunter2-very-secret-value"
PLAIN = "plain-value-0123"


@dataclass
class Cairn:
    db: Database
    variables: Variables
    ws_id: str
    db_file: Path


@pytest.fixture
def cairn(tmp_path: Path) -> Iterator[Cairn]:
    db_file = tmp_path / "cairn.db"
    db = Database(make_engine(f"sqlite:///{db_file}"))
    upgrade(db.engine)
    clock = FrozenClock()
    OrganizationService(db, clock).create(ADMIN, "acme", "", None)
    ws_id = WorkspaceService(db, clock).create(ADMIN, "acme", WorkspaceSettings(name="app")).ws.id
    keyring = Keyring("unit-test-secret-key-0123456789abcdef")
    try:
        yield Cairn(db, Variables(db, keyring, clock), ws_id, db_file)
    finally:
        db.dispose()


def new(
    key: str, value: str, category: str = "terraform", *, hcl: bool = False, sensitive: bool = False
) -> NewVariable:
    return NewVariable(key=key, category=category, value=value, hcl=hcl, sensitive=sensitive)


def job(c: Cairn) -> JobVariables:
    with c.db.unit_of_work() as s:
        return c.variables.for_job(s, c.ws_id)


def test_every_value_is_sealed_at_rest(cairn: Cairn) -> None:
    cairn.variables.create(ADMIN, cairn.ws_id, new("secret", SECRET, sensitive=True), "")
    cairn.variables.create(ADMIN, cairn.ws_id, new("plain", PLAIN), "")
    cairn.db.dispose()  # everything on disk
    raw = cairn.db_file.read_bytes()
    assert SECRET.encode() not in raw
    assert PLAIN.encode() not in raw
    assert b"secret" in raw and b"plain" in raw  # the keys are not secret: the file is right


def test_a_sealed_value_opens_only_in_its_own_row(cairn: Cairn) -> None:
    a = cairn.variables.create(ADMIN, cairn.ws_id, new("a", "value-a"), "").var.id
    b = cairn.variables.create(ADMIN, cairn.ws_id, new("b", "value-b"), "").var.id
    with cairn.db.unit_of_work(write=True) as s:
        sealed_a = s.scalar(select(Variable.value_sealed).where(Variable.id == a))
        s.execute(update(Variable).where(Variable.id == b).values(value_sealed=sealed_a))
        s.commit()
    with pytest.raises(SealError) as caught:
        cairn.variables.get(ADMIN, b)
    assert "value-a" not in str(caught.value) and b in str(caught.value)


def test_a_sensitive_row_made_plain_in_the_database_does_not_open(cairn: Cairn) -> None:
    var_id = cairn.variables.create(
        ADMIN, cairn.ws_id, new("secret", SECRET, sensitive=True), ""
    ).var.id
    with cairn.db.unit_of_work(write=True) as s:
        s.execute(update(Variable).where(Variable.id == var_id).values(sensitive=False))
        s.commit()
    with pytest.raises(SealError):
        cairn.variables.get(ADMIN, var_id)


def test_sensitive_values_are_write_only(cairn: Cairn) -> None:
    created = cairn.variables.create(ADMIN, cairn.ws_id, new("secret", SECRET, sensitive=True), "")
    assert created.value is None
    assert cairn.variables.get(ADMIN, created.var.id).value is None
    assert [v.value for v in cairn.variables.list(ADMIN, cairn.ws_id)] == [None]
    changed = cairn.variables.update(ADMIN, created.var.id, VariableChange(value="new-one"), "")
    assert changed.value is None
    assert job(cairn).terraform == [TerraformValue("secret", "new-one", False)]
    with pytest.raises(Invalid) as caught:
        cairn.variables.update(ADMIN, created.var.id, VariableChange(sensitive=False), "")
    assert caught.value.pointer == "/data/attributes/sensitive"
    assert cairn.variables.get(ADMIN, created.var.id).var.sensitive is True


def test_making_a_variable_sensitive_keeps_its_value(cairn: Cairn) -> None:
    var_id = cairn.variables.create(ADMIN, cairn.ws_id, new("token", PLAIN), "").var.id
    view = cairn.variables.update(ADMIN, var_id, VariableChange(sensitive=True), "")
    assert view.value is None and view.var.sensitive
    assert job(cairn).terraform == [TerraformValue("token", PLAIN, False)]
    assert job(cairn).sensitive_values == [PLAIN]


def test_sending_a_value_always_changes_the_version(cairn: Cairn) -> None:
    created = cairn.variables.create(ADMIN, cairn.ws_id, new("s", SECRET, sensitive=True), "")
    first = created.var.version_id
    again = cairn.variables.update(ADMIN, created.var.id, VariableChange(value=SECRET), "")
    assert again.var.version_id != first  # no oracle for guesses of a sensitive value
    same = cairn.variables.update(ADMIN, created.var.id, VariableChange(key="s"), "")
    assert same.var.version_id == again.var.version_id  # nothing changed


def test_what_a_job_gets(cairn: Cairn) -> None:
    v = cairn.variables
    v.create(ADMIN, cairn.ws_id, new("zone", "eu-1"), "")
    v.create(ADMIN, cairn.ws_id, new("sizes", "[1, 2]", hcl=True), "")
    v.create(ADMIN, cairn.ws_id, new("password", "pw", sensitive=True), "")
    v.create(ADMIN, cairn.ws_id, new("empty_secret", "", sensitive=True), "")
    v.create(ADMIN, cairn.ws_id, new("TF_LOG", "INFO", "env"), "")
    v.create(ADMIN, cairn.ws_id, new("API_KEY", "longer-secret", "env", sensitive=True), "")
    v.create(ADMIN, cairn.ws_id, new("zone", "env-zone", "env"), "")  # same key, other category
    got = job(cairn)
    assert got.terraform == [
        TerraformValue("empty_secret", "", False),
        TerraformValue("password", "pw", False),
        TerraformValue("sizes", "[1, 2]", True),
        TerraformValue("zone", "eu-1", False),
    ]
    assert got.env == [
        EnvValue("API_KEY", "longer-secret"),
        EnvValue("TF_LOG", "INFO"),
        EnvValue("zone", "env-zone"),
    ]
    assert got.sensitive_values == ["longer-secret", "pw"]  # longest first, no empty value
    assert got.as_protocol() == {
        "terraform": [
            {"key": "empty_secret", "value": "", "hcl": False},
            {"key": "password", "value": "pw", "hcl": False},
            {"key": "sizes", "value": "[1, 2]", "hcl": True},
            {"key": "zone", "value": "eu-1", "hcl": False},
        ],
        "env": [
            {"key": "API_KEY", "value": "longer-secret"},
            {"key": "TF_LOG", "value": "INFO"},
            {"key": "zone", "value": "env-zone"},
        ],
        "sensitive": ["longer-secret", "pw"],
    }


def test_values_are_in_no_repr(cairn: Cairn) -> None:
    view = cairn.variables.create(ADMIN, cairn.ws_id, new("secret", SECRET, sensitive=True), "")
    plain = cairn.variables.create(ADMIN, cairn.ws_id, new("plain", PLAIN, "env"), "")
    got = job(cairn)
    shown = [
        repr(view),
        repr(view.var),
        repr(plain),
        repr(plain.var),
        repr(got),
        repr(got.terraform),
        repr(got.env),
        repr(new("secret", SECRET)),
        repr(VariableChange(value=SECRET)),
        repr(cairn.variables),
        str(got),
    ]
    for text in shown:
        assert SECRET not in text and PLAIN not in text, text
    assert "secret" in repr(got) and "plain" in repr(got)  # keys are shown


def test_audit_events_and_logs_hold_no_value(
    cairn: Cairn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    view = cairn.variables.create(ADMIN, cairn.ws_id, new("secret", SECRET, sensitive=True), "")
    cairn.variables.update(ADMIN, view.var.id, VariableChange(value=SECRET + "2"), "")
    cairn.variables.delete(ADMIN, view.var.id, "")
    with cairn.db.unit_of_work() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.at, AuditEvent.action)))
    actions = [e.action for e in events if e.action.startswith("variable.")]
    assert sorted(actions) == ["variable.create", "variable.delete", "variable.update"]
    for e in events:
        assert SECRET not in e.details and SECRET not in e.subject
    assert '"changed":["value"]' in next(e.details for e in events if e.action.endswith("update"))
    for rec in caplog.records:
        assert SECRET not in rec.getMessage() and SECRET not in str(rec.__dict__)


def test_keys_are_unique_per_workspace_and_category(cairn: Cairn) -> None:
    v = cairn.variables
    first = v.create(ADMIN, cairn.ws_id, new("region", "a"), "").var.id
    with pytest.raises(Invalid, match="already been taken") as caught:
        v.create(ADMIN, cairn.ws_id, new("region", "b"), "")
    assert caught.value.pointer == "/data/attributes/key"
    other = v.create(ADMIN, cairn.ws_id, new("other", "c"), "").var.id
    with pytest.raises(Invalid, match="already been taken"):
        v.update(ADMIN, other, VariableChange(key="region"), "")
    # Moving to the other category frees the name; a key invalid there is refused.
    v.update(ADMIN, first, VariableChange(category="env"), "")
    v.update(ADMIN, other, VariableChange(key="region"), "")
    dashed = v.create(ADMIN, cairn.ws_id, new("with-dash", "d"), "").var.id
    with pytest.raises(Invalid, match="environment variable name") as refused:
        v.update(ADMIN, dashed, VariableChange(category="env"), "")
    assert refused.value.pointer == "/data/attributes/category"
    with pytest.raises(Invalid, match="'terraform' or 'env'"):
        v.update(ADMIN, dashed, VariableChange(category=""), "")
    with pytest.raises(Invalid, match="must not be empty"):
        v.update(ADMIN, dashed, VariableChange(key=""), "")


def test_limits(cairn: Cairn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variables_service, "MAX_PER_WORKSPACE", 3)
    monkeypatch.setattr(variables_service, "MAX_WORKSPACE_BYTES", 100)
    v = cairn.variables
    a = v.create(ADMIN, cairn.ws_id, new("a", "x" * 50), "").var.id
    with pytest.raises(Invalid, match="at most 100 bytes"):
        v.create(ADMIN, cairn.ws_id, new("b", "y" * 51), "")
    v.create(ADMIN, cairn.ws_id, new("b", "y" * 50), "")
    with pytest.raises(Invalid, match="at most 100 bytes"):
        v.update(ADMIN, a, VariableChange(value="x" * 51), "")
    v.update(ADMIN, a, VariableChange(value="z" * 10), "")  # smaller: fine
    v.create(ADMIN, cairn.ws_id, new("c", ""), "")
    with pytest.raises(Invalid, match="already has 3 variables"):
        v.create(ADMIN, cairn.ws_id, new("d", ""), "")
    assert len(v.list(ADMIN, cairn.ws_id)) == 3
