"""Workspace variables: list, show, create, update, delete (one unit of work each, audited
without values), and what a run's job gets (``for_job``, values unsealed).

``variables:read`` lists and shows them, ``variables:write`` changes them. A sensitive
variable is write-only: its value is in no answer, not even the one to its creation, and it
cannot be made non-sensitive again (HCP Terraform's rule); delete and re-create it instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import VARIABLES_READ, VARIABLES_WRITE
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.organizations.model import Organization
from cairn.variables import sets_store, store
from cairn.variables.model import (
    MAX_PER_WORKSPACE,
    MAX_WORKSPACE_BYTES,
    Category,
    Variable,
    check_category,
    check_key,
    check_value,
    sealing_aad,
)
from cairn.variables.sets_model import (
    Level,
    VariableSetVariable,
    effective,
    set_level,
    set_sealing_aad,
)
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace

__all__ = [
    "EnvValue",
    "JobVariables",
    "NewVariable",
    "TerraformValue",
    "VariableChange",
    "VariableView",
    "Variables",
]


@dataclass(frozen=True)
class VariableView:
    """A variable as an answer shows it: ``value`` is None when it is sensitive."""

    var: Variable
    org: Organization
    ws: Workspace
    value: str | None = field(repr=False)


@dataclass(frozen=True)
class NewVariable:
    key: str
    category: str
    value: str = field(default="", repr=False)
    description: str | None = None
    hcl: bool = False
    sensitive: bool = False


@dataclass(frozen=True)
class VariableChange:
    """What an update sets; None leaves an attribute as it is."""

    key: str | None = None
    category: str | None = None
    value: str | None = field(default=None, repr=False)
    description: str | None = None
    hcl: bool | None = None
    sensitive: bool | None = None


class TerraformValue(NamedTuple):
    """A Terraform variable of a job: ``value`` is HCL source when ``hcl``, else a string."""

    key: str
    value: str
    hcl: bool

    def __repr__(self) -> str:
        return f"TerraformValue(key={self.key!r}, hcl={self.hcl!r})"


class EnvValue(NamedTuple):
    key: str
    value: str

    def __repr__(self) -> str:
        return f"EnvValue(key={self.key!r})"


class CheckedChange(NamedTuple):
    """A change checked against the variable it changes: its new category and key, the new
    value's bytes (None: unchanged) and the names of the attributes it changes."""

    category: Category
    key: str
    raw: bytes | None
    changed: list[str]


def check_change(var: Any, change: VariableChange) -> CheckedChange:
    """``change`` applied to ``var`` (a workspace's or a variable set's variable), checked:
    a valid key for the category, a value within the limits, and a sensitive variable never
    made non-sensitive (422s). ``value`` counts as changed whenever one is sent, never
    compared: an unchanged version-id would tell a writer whether a guess of a sensitive
    value was right."""
    category: Category = check_category(
        change.category if change.category is not None else var.category
    )
    raw = check_value(change.value) if change.value is not None else None
    key = change.key if change.key is not None else var.key
    if change.key is not None or change.category is not None:
        where = "key" if change.key is not None else "category"
        check_key(key, category, f"/data/attributes/{where}")
    if var.sensitive and change.sensitive is False:
        raise Invalid(
            f"variable {var.key!r} is sensitive and cannot be made non-sensitive; delete "
            "it and create it again to change that",
            pointer="/data/attributes/sensitive",
        )
    changed = [
        name
        for name, new, old in (
            ("key", key, var.key),
            ("category", category, var.category),
            ("description", change.description, var.description),
            ("hcl", change.hcl, var.hcl),
            ("sensitive", change.sensitive, var.sensitive),
        )
        if new is not None and new != old
    ]
    if raw is not None:
        changed.append("value")
    return CheckedChange(category, key, raw, changed)


@dataclass(frozen=True, repr=False)
class JobVariables:
    """What a run's job is given: the workspace's variables, unsealed. Only for building the
    job's input (``*.auto.tfvars``, the environment) and its log mask; never logged, and its
    repr names keys only. ``sensitive_values``: the non-empty values of sensitive variables,
    longest first (so that masking replaces a value before any value it contains)."""

    terraform: list[TerraformValue]
    env: list[EnvValue]
    sensitive_values: list[str]

    def __repr__(self) -> str:
        return (
            f"JobVariables(terraform={[v.key for v in self.terraform]!r}, "
            f"env={[v.key for v in self.env]!r}, sensitive_values=<{len(self.sensitive_values)}>)"
        )

    def as_protocol(self) -> dict[str, Any]:
        """The agent protocol's answer to ``GET /jobs/{id}/variables``."""
        return {
            "terraform": [{"key": k, "value": v, "hcl": h} for k, v, h in self.terraform],
            "env": [{"key": k, "value": v} for k, v in self.env],
            "sensitive": list(self.sensitive_values),
        }


def _actor(caller: Subject, source: str) -> Actor:
    return Actor(caller.id, caller.name, source)


def _new_version() -> str:
    return secrets.token_hex(18)  # 36 hexadecimal digits, as HCP Terraform's


class Variables:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        # What sealing adds to a value's length (version, nonce, tag): subtracted from the
        # stored lengths to count a workspace's value bytes.
        self._overhead = len(keyring.seal(b"", aad="variables/overhead"))

    def __repr__(self) -> str:
        return "Variables()"

    # ---- sealing -----------------------------------------------------------------------------

    def _seal(self, var_id: str, raw: bytes, *, sensitive: bool) -> bytes:
        return self._keyring.seal(raw, aad=sealing_aad(var_id, sensitive=sensitive))

    def _open(self, var: Variable) -> str:
        aad = sealing_aad(var.id, sensitive=var.sensitive)
        return self._keyring.open(var.value_sealed, aad=aad).decode("utf-8")

    def open_value(self, var: Variable | VariableSetVariable) -> str:
        """The value of a workspace variable or of a variable set's variable, unsealed."""
        if isinstance(var, VariableSetVariable):
            aad = set_sealing_aad(var.varset_id, var.id, sensitive=var.sensitive)
            return self._keyring.open(var.value_sealed, aad=aad).decode("utf-8")
        return self._open(var)

    def _view(self, org: Organization, ws: Workspace, var: Variable) -> VariableView:
        return VariableView(var, org, ws, None if var.sensitive else self._open(var))

    def view(self, org: Organization, ws: Workspace, var: Variable) -> VariableView:
        return self._view(org, ws, var)

    # ---- reading -----------------------------------------------------------------------------

    def resolve(self, caller: Subject, org_name: str, ws_name: str) -> str:
        """The ID of a workspace named by organization and name (404 if not readable)."""
        with self._db.unit_of_work() as s:
            return workspaces.find_by_name(s, caller, org_name, ws_name)[1].id

    def list(self, caller: Subject, ws_id: str) -> list[VariableView]:
        """Every variable of a workspace (bounded by ``MAX_PER_WORKSPACE``)."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(caller, VARIABLES_READ, workspaces.target(org, ws))
            return [self._view(org, ws, v) for v in store.of_workspace(s, ws.id)]

    def get(self, caller: Subject, var_id: str, ws_id: str | None = None) -> VariableView:
        with self._db.unit_of_work() as s:
            org, ws, var = store.find(s, caller, var_id, ws_id)
            authz.require(caller, VARIABLES_READ, workspaces.target(org, ws))
            return self._view(org, ws, var)

    # ---- writing -----------------------------------------------------------------------------

    def create(self, caller: Subject, ws_id: str, new: NewVariable, source: str) -> VariableView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(
                caller,
                VARIABLES_WRITE,
                workspaces.target(org, ws),
                doing="change the variables of",
            )
            category = check_category(new.category)
            key = check_key(new.key, category)
            raw = check_value(new.value)
            store.hold_workspace(s, ws.id)
            self._refuse_taken(s, org, ws, category, key)
            count, stored = store.usage(s, ws.id)
            if count >= MAX_PER_WORKSPACE:
                raise Invalid(
                    f"workspace {org.name}/{ws.name} already has {count} variables, the most a "
                    "workspace may have; delete some before adding more",
                    pointer="/data/attributes/key",
                )
            self._refuse_oversize(org, ws, stored - count * self._overhead + len(raw))
            now = self._clock.now()
            var_id = ids.new_id("variable")
            var = Variable(
                id=var_id,
                workspace_id=ws.id,
                key=key,
                category=category,
                hcl=new.hcl,
                sensitive=new.sensitive,
                description=new.description,
                value_sealed=self._seal(var_id, raw, sensitive=new.sensitive),
                version_id=_new_version(),
                created_at=now,
                updated_at=now,
            )
            s.add(var)
            self._flush(s, org, ws, category, key)
            record(
                s,
                at=now,
                actor=_actor(caller, source),
                action="variable.create",
                subject=f"{org.name}/{ws.name}: {category} variable {key}",
                variable_id=var_id,
                workspace_id=ws.id,
                category=category,
                key=key,
                sensitive=new.sensitive,
                hcl=new.hcl,
            )
            s.commit()
            return self._view(org, ws, var)

    def update(
        self,
        caller: Subject,
        var_id: str,
        change: VariableChange,
        source: str,
        ws_id: str | None = None,
    ) -> VariableView:
        with self._db.unit_of_work(write=True) as s:
            org, ws, var = store.find(s, caller, var_id, ws_id)
            authz.require(
                caller,
                VARIABLES_WRITE,
                workspaces.target(org, ws),
                doing="change the variables of",
            )
            category, key, raw, changed = check_change(var, change)
            if not changed:
                return self._view(org, ws, var)
            store.hold_workspace(s, ws.id)
            if "key" in changed or "category" in changed:
                self._refuse_taken(s, org, ws, category, key, but=var.id)
            sensitive = bool(change.sensitive) or var.sensitive
            if raw is not None or sensitive != var.sensitive:
                old_size = len(var.value_sealed) - self._overhead
                if raw is None:
                    raw = self._open(var).encode("utf-8")
                count, stored = store.usage(s, ws.id)
                self._refuse_oversize(
                    org, ws, stored - count * self._overhead - old_size + len(raw)
                )
                var.value_sealed = self._seal(var.id, raw, sensitive=sensitive)
            var.key, var.category, var.sensitive = key, category, sensitive
            if change.description is not None:
                var.description = change.description
            if change.hcl is not None:
                var.hcl = change.hcl
            var.version_id = _new_version()
            var.updated_at = self._clock.now()
            self._flush(s, org, ws, category, key)
            record(
                s,
                at=var.updated_at,
                actor=_actor(caller, source),
                action="variable.update",
                subject=f"{org.name}/{ws.name}: {category} variable {key}",
                variable_id=var.id,
                workspace_id=ws.id,
                changed=changed,
            )
            s.commit()
            return self._view(org, ws, var)

    def delete(self, caller: Subject, var_id: str, source: str, ws_id: str | None = None) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws, var = store.find(s, caller, var_id, ws_id)
            authz.require(
                caller,
                VARIABLES_WRITE,
                workspaces.target(org, ws),
                doing="change the variables of",
            )
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="variable.delete",
                subject=f"{org.name}/{ws.name}: {var.category} variable {var.key}",
                variable_id=var.id,
                workspace_id=ws.id,
            )
            s.delete(var)
            s.commit()

    # ---- for runs ----------------------------------------------------------------------------

    def effective(self, s: Session, ws: Workspace) -> Sequence[Variable | VariableSetVariable]:
        """The variables in effect on a workspace: its own and those of the variable sets
        that apply to it, one per category and key, as HCP Terraform's precedence decides
        (``sets_model``); Terraform variables first, each category by key."""
        own = store.of_workspace(s, ws.id)
        applied = sets_store.applicable(s, ws)
        if not applied:
            return own
        ranked = {
            vs.id: (
                set_level(is_global=vs.is_global, priority=vs.priority, on_workspace=direct),
                vs.name,
            )
            for vs, direct in applied
        }
        candidates: list[tuple[Level, str, Variable | VariableSetVariable]] = [
            (Level.WORKSPACE_VARIABLES, "", v) for v in own
        ]
        for v in sets_store.variables_of(s, list(ranked)):
            level, name = ranked[v.varset_id]
            candidates.append((level, name, v))
        return effective(candidates, lambda v: (v.category, v.key))

    def for_job(self, s: Session, workspace_id: str) -> JobVariables:
        """The variables in effect on the workspace (its own and its variable sets',
        ``effective``), unsealed, for a run's job (in the caller's transaction; the caller has
        authorized the job)."""
        terraform: list[TerraformValue] = []
        env: list[EnvValue] = []
        sensitive: set[str] = set()
        ws = s.get(Workspace, workspace_id)
        chosen = self.effective(s, ws) if ws is not None else []
        for var in chosen:
            value = self.open_value(var)
            if var.category == "terraform":
                terraform.append(TerraformValue(var.key, value, var.hcl))
            else:
                env.append(EnvValue(var.key, value))
            if var.sensitive and value:
                sensitive.add(value)
        return JobVariables(
            terraform=terraform,
            env=env,
            sensitive_values=sorted(sensitive, key=lambda v: (-len(v), v)),
        )

    # ---- rules -------------------------------------------------------------------------------

    @staticmethod
    def _refuse_taken(
        s: Session,
        org: Organization,
        ws: Workspace,
        category: str,
        key: str,
        *,
        but: str | None = None,
    ) -> None:
        found = store.taken(s, ws.id, category, key)
        if found is not None and found != but:
            raise _taken(org, ws, category, key)

    @staticmethod
    def _refuse_oversize(org: Organization, ws: Workspace, total: int) -> None:
        if total > MAX_WORKSPACE_BYTES:
            raise Invalid(
                f"the values of workspace {org.name}/{ws.name}'s variables would hold {total} "
                f"bytes; a workspace's variables may hold at most {MAX_WORKSPACE_BYTES} bytes",
                pointer="/data/attributes/value",
            )

    @staticmethod
    def _flush(s: Session, org: Organization, ws: Workspace, category: str, key: str) -> None:
        where = (org.name, ws.name)  # read before a failed flush spoils the objects
        try:
            s.flush()
        except IntegrityError:  # a concurrent writer took the key first
            raise _taken_names(*where, category, key) from None


def _taken(org: Organization, ws: Workspace, category: str, key: str) -> Invalid:
    return _taken_names(org.name, ws.name, category, key)


def _taken_names(org_name: str, ws_name: str, category: str, key: str) -> Invalid:
    return Invalid(
        f"Key has already been taken: workspace {org_name}/{ws_name} already has a {category} "
        f"variable {key!r}",
        pointer="/data/attributes/key",
    )
