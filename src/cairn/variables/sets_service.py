"""Variable sets: create, change, delete them and their variables, apply them to workspaces
and projects (one unit of work each, audited without values), and the variables in effect on
a workspace (``all_vars``; a run's job gets the same through ``Variables.for_job``).

Managing sets needs ``workspace:manage`` organization-wide (HCP Terraform's "manage
workspaces" organization access; owners and organization tokens have it). Reading an
organization's sets and their variables needs ``variables:read`` organization-wide;
``GET /workspaces/:id/varsets`` needs ``variables:read`` on that workspace; the sets of a
project are listed to whoever may read the project. Sensitive values are write-only, as for
workspace variables.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import VARIABLES_READ, WORKSPACE_MANAGE
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.variables import sets_store as store
from cairn.variables.model import check_category, check_key, check_value
from cairn.variables.service import (
    NewVariable,
    VariableChange,
    Variables,
    VariableView,
    check_change,
)
from cairn.variables.sets_model import (
    MAX_SET_BYTES,
    MAX_SETS_PER_ORGANIZATION,
    MAX_VARS_PER_SET,
    VariableSet,
    VariableSetProject,
    VariableSetVariable,
    VariableSetWorkspace,
    set_sealing_aad,
)
from cairn.workspaces import store as workspaces

# HCP Terraform: "To create or edit variable sets, your team must have Manage Workspace
# organization access" — workspace:manage on the organization (not on one workspace).
MANAGE_SETS = WORKSPACE_MANAGE


@dataclass(frozen=True)
class VarsetView:
    vs: VariableSet
    org: Organization
    links: store.Links


@dataclass(frozen=True)
class SetVariableView:
    """A set's variable as an answer shows it: ``value`` is None when it is sensitive."""

    var: VariableSetVariable
    vs: VariableSet
    value: str | None = field(repr=False)


@dataclass(frozen=True)
class NewVarset:
    name: str
    description: str = ""
    is_global: bool = False
    priority: bool = False
    workspace_ids: list[str] | None = None
    project_ids: list[str] | None = None
    variables: list[NewVariable] = field(default_factory=list)


@dataclass(frozen=True)
class VarsetChange:
    """What an update sets; None leaves an attribute (or the workspaces/projects) as it is."""

    name: str | None = None
    description: str | None = None
    is_global: bool | None = None
    priority: bool | None = None
    workspace_ids: list[str] | None = None
    project_ids: list[str] | None = None


def _actor(caller: Subject, source: str) -> Actor:
    return Actor(caller.id, caller.name, source)


def _new_version() -> str:
    return secrets.token_hex(18)


class VariableSets:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock, variables: Variables) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._variables = variables
        self._overhead = len(keyring.seal(b"", aad="variables/overhead"))

    def __repr__(self) -> str:
        return "VariableSets()"

    # ---- helpers -------------------------------------------------------------------------------

    def _seal(self, var: VariableSetVariable, raw: bytes, *, sensitive: bool) -> bytes:
        aad = set_sealing_aad(var.varset_id, var.id, sensitive=sensitive)
        return self._keyring.seal(raw, aad=aad)

    def _var_view(self, vs: VariableSet, var: VariableSetVariable) -> SetVariableView:
        value = None if var.sensitive else self._variables.open_value(var)
        return SetVariableView(var, vs, value)

    @staticmethod
    def _views(s: Session, org: Organization, sets: list[VariableSet]) -> list[VarsetView]:
        found = store.links(s, [vs.id for vs in sets])
        return [VarsetView(vs, org, found[vs.id]) for vs in sets]

    @staticmethod
    def _require_manage(caller: Subject, org: Organization) -> None:
        authz.require(caller, MANAGE_SETS, orgs.target(org), doing="manage the variable sets of")

    def _managed(
        self, s: Session, caller: Subject, set_id: str
    ) -> tuple[Organization, VariableSet]:
        org, vs = store.find(s, caller, set_id)
        self._require_manage(caller, org)
        store.hold_organization(s, org.id)
        try:
            s.refresh(vs)  # as the last writer left it, now that the writers queue
        except InvalidRequestError:  # deleted meanwhile
            raise store.varset_not_found(set_id) from None
        return org, vs

    def _readable(
        self, s: Session, caller: Subject, set_id: str
    ) -> tuple[Organization, VariableSet]:
        org, vs = store.find(s, caller, set_id)
        authz.require(caller, VARIABLES_READ, orgs.target(org))
        return org, vs

    # ---- sets: reading -------------------------------------------------------------------------

    def list_organization(
        self, caller: Subject, org_name: str, page: Page, q: str | None
    ) -> tuple[list[VarsetView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            authz.require(caller, VARIABLES_READ, orgs.target(org))
            rows, total = store.of_organization(s, org.id, page, q)
            return self._views(s, org, rows), total

    def for_workspace(self, caller: Subject, ws_id: str) -> list[VarsetView]:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(caller, VARIABLES_READ, workspaces.target(org, ws))
            return self._views(s, org, [vs for vs, _ in store.applicable(s, ws)])

    def for_project(self, caller: Subject, project_id: str) -> list[VarsetView]:
        with self._db.unit_of_work() as s:
            org, prj = orgs.project(s, caller, project_id)  # 404 unless it may read it
            return self._views(s, org, store.of_project(s, org.id, prj.id))

    def get(self, caller: Subject, set_id: str) -> VarsetView:
        with self._db.unit_of_work() as s:
            org, vs = self._readable(s, caller, set_id)
            return self._views(s, org, [vs])[0]

    # ---- sets: writing -------------------------------------------------------------------------

    def create(self, caller: Subject, org_name: str, new: NewVarset, source: str) -> VarsetView:
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            self._require_manage(caller, org)
            store.hold_organization(s, org.id)
            name = _check_name(new.name)
            self._refuse_name_taken(s, org, name)
            count = store.count_in_organization(s, org.id)
            if count >= MAX_SETS_PER_ORGANIZATION:
                raise Invalid(
                    f"organization {org.name} already has {count} variable sets, the most an "
                    "organization may have; delete some before adding more",
                    pointer="/data/attributes/name",
                )
            now = self._clock.now()
            vs = VariableSet(
                id=ids.new_id("variable_set"),
                organization_id=org.id,
                name=name,
                description=new.description,
                is_global=new.is_global,
                priority=new.priority,
                created_at=now,
                updated_at=now,
            )
            s.add(vs)
            self._flush_set(s, org, name)
            if new.is_global and (new.workspace_ids or new.project_ids):
                raise _global_targets()
            self._link(s, org, vs, new.workspace_ids or [], new.project_ids or [])
            if len(new.variables) > MAX_VARS_PER_SET:
                raise Invalid(
                    f"a variable set may hold at most {MAX_VARS_PER_SET} variables",
                    pointer="/data/relationships/vars",
                )
            for i, nv in enumerate(new.variables):
                self._add_var(s, org, vs, nv, f"/data/relationships/vars/data/{i}/attributes")
            record(
                s,
                at=now,
                actor=_actor(caller, source),
                action="varset.create",
                subject=f"{org.name}: variable set {name}",
                varset_id=vs.id,
                is_global=vs.is_global,
                priority=vs.priority,
                variables=[f"{v.category}:{v.key}" for v in new.variables],
                workspace_ids=sorted(new.workspace_ids or []),
                project_ids=sorted(new.project_ids or []),
            )
            s.commit()
            return self._views(s, org, [vs])[0]

    def update(self, caller: Subject, set_id: str, change: VarsetChange, source: str) -> VarsetView:
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            changed: list[str] = []
            if change.name is not None and change.name != vs.name:
                name = _check_name(change.name)
                self._refuse_name_taken(s, org, name)
                vs.name = name
                changed.append("name")
            if change.description is not None and change.description != vs.description:
                vs.description = change.description
                changed.append("description")
            if change.priority is not None and change.priority != vs.priority:
                vs.priority = change.priority
                changed.append("priority")
            if change.is_global is not None and change.is_global != vs.is_global:
                if change.is_global:
                    self._refuse_global_conflicts(s, org, vs, store.pairs_of(s, vs.id))
                    # A global set applies to every workspace: its own links mean nothing.
                    store.unlink_workspaces(s, vs.id)
                    store.unlink_projects(s, vs.id)
                vs.is_global = change.is_global
                changed.append("global")
            if change.workspace_ids is not None or change.project_ids is not None:
                if vs.is_global and (change.workspace_ids or change.project_ids):
                    raise _global_targets()
                if change.workspace_ids is not None:
                    store.unlink_workspaces(s, vs.id)
                    changed.append("workspaces")
                if change.project_ids is not None:
                    store.unlink_projects(s, vs.id)
                    changed.append("projects")
                s.flush()
                self._link(s, org, vs, change.workspace_ids or [], change.project_ids or [])
            if not changed:
                return self._views(s, org, [vs])[0]
            vs.updated_at = self._clock.now()
            self._flush_set(s, org, vs.name)
            record(
                s,
                at=vs.updated_at,
                actor=_actor(caller, source),
                action="varset.update",
                subject=f"{org.name}: variable set {vs.name}",
                varset_id=vs.id,
                changed=changed,
            )
            s.commit()
            return self._views(s, org, [vs])[0]

    def delete(self, caller: Subject, set_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="varset.delete",
                subject=f"{org.name}: variable set {vs.name}",
                varset_id=vs.id,
            )
            s.delete(vs)
            s.commit()

    def apply(
        self, caller: Subject, set_id: str, kind: str, target_ids: list[str], source: str
    ) -> None:
        """Apply the set to workspaces or projects (``kind``), keeping those it has."""
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            if vs.is_global:
                raise _global_targets()
            wanted = self._check_targets(s, org, kind, target_ids, "/data")
            if kind == "workspaces":
                have = store.linked_workspaces(s, vs.id)
                added = [i for i in wanted if i not in have]
                self._link(s, org, vs, added, [])
            else:
                have = store.linked_projects(s, vs.id)
                added = [i for i in wanted if i not in have]
                self._link(s, org, vs, [], added)
            self._audit_targets(s, caller, source, org, vs, f"varset.apply-{kind}", added)
            s.commit()

    def remove(
        self, caller: Subject, set_id: str, kind: str, target_ids: list[str], source: str
    ) -> None:
        """Remove the set from workspaces or projects (``kind``); IDs it is not applied to are
        ignored."""
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            if vs.is_global:
                raise _global_targets()
            wanted = list(dict.fromkeys(target_ids))
            if kind == "workspaces":
                gone = sorted(store.linked_workspaces(s, vs.id) & set(wanted))
                store.unlink_workspaces(s, vs.id, gone)
            else:
                gone = sorted(store.linked_projects(s, vs.id) & set(wanted))
                store.unlink_projects(s, vs.id, gone)
            self._audit_targets(s, caller, source, org, vs, f"varset.remove-{kind}", gone)
            s.commit()

    def _audit_targets(
        self,
        s: Session,
        caller: Subject,
        source: str,
        org: Organization,
        vs: VariableSet,
        action: str,
        target_ids: list[str],
    ) -> None:
        if not target_ids:
            return
        record(
            s,
            at=self._clock.now(),
            actor=_actor(caller, source),
            action=action,
            subject=f"{org.name}: variable set {vs.name}",
            varset_id=vs.id,
            targets=target_ids,
        )

    @staticmethod
    def _check_targets(
        s: Session, org: Organization, kind: str, target_ids: list[str], at: str
    ) -> list[str]:
        """``target_ids`` without repeats, if every one is a workspace (``kind`` "workspaces")
        or a project of the organization (422 pointing at ``at``/i otherwise)."""
        if kind == "workspaces":
            found = {w.id for w in store.workspaces_in(s, org.id, target_ids)}
        else:
            found = {p.id for p in store.projects_in(s, org.id, target_ids)}
        for i, ident in enumerate(target_ids):
            if ident not in found:
                raise Invalid(
                    f"{kind[:-1]} {ident!r} is not a {kind[:-1]} of organization {org.name}",
                    pointer=f"{at}/{i}",
                )
        return list(dict.fromkeys(target_ids))

    def _link(
        self,
        s: Session,
        org: Organization,
        vs: VariableSet,
        ws_ids: list[str],
        prj_ids: list[str],
        at: str = "/data/relationships/{}/data",
    ) -> None:
        for ws_id in self._check_targets(s, org, "workspaces", ws_ids, at.format("workspaces")):
            s.add(VariableSetWorkspace(varset_id=vs.id, workspace_id=ws_id))
        for prj_id in self._check_targets(s, org, "projects", prj_ids, at.format("projects")):
            s.add(VariableSetProject(varset_id=vs.id, project_id=prj_id))
        s.flush()

    # ---- variables of a set --------------------------------------------------------------------

    def list_vars(self, caller: Subject, set_id: str) -> list[SetVariableView]:
        with self._db.unit_of_work() as s:
            _, vs = self._readable(s, caller, set_id)
            return [self._var_view(vs, v) for v in store.variables_of(s, [vs.id])]

    def vars_of_sets(self, caller: Subject, set_ids: list[str]) -> dict[str, list[SetVariableView]]:
        """The variables of each set the caller may read the variables of (for include=vars)."""
        out: dict[str, list[SetVariableView]] = {}
        with self._db.unit_of_work() as s:
            readable: dict[str, VariableSet] = {}
            for set_id in dict.fromkeys(set_ids):
                vs = s.get(VariableSet, set_id)
                if vs is None:
                    continue
                if authz.allowed(caller, VARIABLES_READ, authz.Org(vs.organization_id, "")):
                    readable[vs.id] = vs
            for var in store.variables_of(s, list(readable)):
                vs = readable[var.varset_id]
                out.setdefault(vs.id, []).append(self._var_view(vs, var))
        return out

    def get_var(self, caller: Subject, set_id: str, var_id: str) -> SetVariableView:
        with self._db.unit_of_work() as s:
            _, vs = self._readable(s, caller, set_id)
            return self._var_view(vs, store.find_var(s, vs, var_id))

    def create_var(
        self, caller: Subject, set_id: str, new: NewVariable, source: str
    ) -> SetVariableView:
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            var = self._add_var(s, org, vs, new, "/data/attributes")
            vs.updated_at = var.created_at
            record(
                s,
                at=var.created_at,
                actor=_actor(caller, source),
                action="varset.variable.create",
                subject=f"{org.name}: variable set {vs.name}: {var.category} variable {var.key}",
                varset_id=vs.id,
                variable_id=var.id,
                category=var.category,
                key=var.key,
                sensitive=var.sensitive,
                hcl=var.hcl,
            )
            s.commit()
            return self._var_view(vs, var)

    def _add_var(
        self, s: Session, org: Organization, vs: VariableSet, new: NewVariable, at: str
    ) -> VariableSetVariable:
        category = check_category(new.category, f"{at}/category")
        key = check_key(new.key, category, f"{at}/key")
        raw = check_value(new.value, f"{at}/value")
        if store.taken(s, vs.id, category, key) is not None:
            raise _taken(vs, category, key, f"{at}/key")
        if vs.is_global:
            self._refuse_global_conflicts(s, org, vs, [(category, key)], f"{at}/key")
        count, stored = store.usage(s, vs.id)
        if count >= MAX_VARS_PER_SET:
            raise Invalid(
                f"variable set {vs.name!r} already has {count} variables, the most a set may "
                "have; delete some before adding more",
                pointer=f"{at}/key",
            )
        _refuse_oversize(vs, stored - count * self._overhead + len(raw), f"{at}/value")
        now = self._clock.now()
        var = VariableSetVariable(
            id=ids.new_id("variable"),
            varset_id=vs.id,
            key=key,
            category=category,
            hcl=new.hcl,
            sensitive=new.sensitive,
            description=new.description,
            value_sealed=b"",
            version_id=_new_version(),
            created_at=now,
            updated_at=now,
        )
        var.value_sealed = self._seal(var, raw, sensitive=new.sensitive)
        s.add(var)
        try:
            s.flush()
        except IntegrityError:  # a concurrent writer took the key first
            raise _taken(vs, category, key, f"{at}/key") from None
        return var

    def update_var(
        self, caller: Subject, set_id: str, var_id: str, change: VariableChange, source: str
    ) -> SetVariableView:
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            var = store.find_var(s, vs, var_id)
            category, key, raw, changed = check_change(var, change)
            if not changed:
                return self._var_view(vs, var)
            if "key" in changed or "category" in changed:
                found = store.taken(s, vs.id, category, key)
                if found is not None and found != var.id:
                    raise _taken(vs, category, key, "/data/attributes/key")
                if vs.is_global:
                    self._refuse_global_conflicts(s, org, vs, [(category, key)])
            sensitive = bool(change.sensitive) or var.sensitive
            if raw is not None or sensitive != var.sensitive:
                old_size = len(var.value_sealed) - self._overhead
                if raw is None:
                    raw = self._variables.open_value(var).encode("utf-8")
                count, stored = store.usage(s, vs.id)
                _refuse_oversize(
                    vs,
                    stored - count * self._overhead - old_size + len(raw),
                    "/data/attributes/value",
                )
                var.value_sealed = self._seal(var, raw, sensitive=sensitive)
            var.key, var.category, var.sensitive = key, category, sensitive
            if change.description is not None:
                var.description = change.description
            if change.hcl is not None:
                var.hcl = change.hcl
            var.version_id = _new_version()
            var.updated_at = vs.updated_at = self._clock.now()
            try:
                s.flush()
            except IntegrityError:
                raise _taken(vs, category, key, "/data/attributes/key") from None
            record(
                s,
                at=var.updated_at,
                actor=_actor(caller, source),
                action="varset.variable.update",
                subject=f"{org.name}: variable set {vs.name}: {category} variable {key}",
                varset_id=vs.id,
                variable_id=var.id,
                changed=changed,
            )
            s.commit()
            return self._var_view(vs, var)

    def delete_var(self, caller: Subject, set_id: str, var_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, vs = self._managed(s, caller, set_id)
            var = store.find_var(s, vs, var_id)
            now = self._clock.now()
            record(
                s,
                at=now,
                actor=_actor(caller, source),
                action="varset.variable.delete",
                subject=f"{org.name}: variable set {vs.name}: {var.category} variable {var.key}",
                varset_id=vs.id,
                variable_id=var.id,
            )
            vs.updated_at = now
            s.delete(var)
            s.commit()

    # ---- in effect on a workspace --------------------------------------------------------------

    def all_vars(self, caller: Subject, ws_id: str) -> list[VariableView | SetVariableView]:
        """The variables in effect on a workspace: its own and its sets', each key once, as
        precedence decides (``sets_model``)."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(caller, VARIABLES_READ, workspaces.target(org, ws))
            sets = {vs.id: vs for vs, _ in store.applicable(s, ws)}
            out: list[VariableView | SetVariableView] = []
            for var in self._variables.effective(s, ws):
                if isinstance(var, VariableSetVariable):
                    out.append(self._var_view(sets[var.varset_id], var))
                else:
                    out.append(self._variables.view(org, ws, var))
            return out

    # ---- rules ---------------------------------------------------------------------------------

    @staticmethod
    def _refuse_name_taken(s: Session, org: Organization, name: str) -> None:
        if store.name_taken(s, org.id, name) is not None:
            raise _name_taken(org.name, name)

    @staticmethod
    def _flush_set(s: Session, org: Organization, name: str) -> None:
        org_name = org.name
        try:
            s.flush()
        except IntegrityError:
            raise _name_taken(org_name, name) from None

    @staticmethod
    def _refuse_global_conflicts(
        s: Session,
        org: Organization,
        vs: VariableSet,
        pairs: list[tuple[str, str]],
        pointer: str = "/data/attributes/key",
    ) -> None:
        found = store.global_conflicts(s, org.id, vs.id, pairs)
        if found:
            other, category, key = found[0]
            raise Invalid(
                f"global variable sets may not hold variables of the same category and key: "
                f"global variable set {other!r} already has a {category} variable {key!r}"
                + (f" ({len(found)} conflicts in all)" if len(found) > 1 else ""),
                pointer=pointer if vs.is_global else "/data/attributes/global",
            )


def _check_name(name: str) -> str:
    if not name.strip():
        raise Invalid("name must not be blank", pointer="/data/attributes/name")
    return name


def _name_taken(org_name: str, name: str) -> Invalid:
    return Invalid(
        f"Name has already been taken: organization {org_name} already has a variable set "
        f"named {name!r}",
        pointer="/data/attributes/name",
    )


def _taken(vs: VariableSet, category: str, key: str, pointer: str) -> Invalid:
    return Invalid(
        f"Key has already been taken: variable set {vs.name!r} already has a {category} "
        f"variable {key!r}",
        pointer=pointer,
    )


def _global_targets() -> Invalid:
    return Invalid(
        "a global variable set applies to every workspace of its organization already; make "
        "it non-global (global: false) before applying it to workspaces or projects",
        pointer="/data",
    )


def _refuse_oversize(vs: VariableSet, total: int, pointer: str) -> None:
    if total > MAX_SET_BYTES:
        raise Invalid(
            f"the values of variable set {vs.name!r} would hold {total} bytes; a variable set "
            f"may hold at most {MAX_SET_BYTES} bytes",
            pointer=pointer,
        )
