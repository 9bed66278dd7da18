"""Variable set rows, read and written in the caller's session (its unit of work).

``find`` answers 404 for a set of an organization the caller may not see (existence does not
leak); the variable-set permissions are the service's to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.permissions import ORG_READ
from cairn.authz.subject import Subject
from cairn.errors import NotFound
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization, Project
from cairn.paging import Page
from cairn.variables.sets_model import (
    VariableSet,
    VariableSetProject,
    VariableSetVariable,
    VariableSetWorkspace,
)
from cairn.workspaces.model import Workspace


@dataclass(frozen=True)
class Links:
    """What a set is applied to and holds, by ID (for its document and counts)."""

    var_ids: list[str]
    workspace_ids: list[str]
    project_ids: list[str]


def varset_not_found(set_id: str) -> NotFound:
    return authz.not_found("variable set", repr(set_id))


def var_not_found(var_id: str) -> NotFound:
    return authz.not_found("variable", repr(var_id))


def find(s: Session, caller: Subject, set_id: str) -> tuple[Organization, VariableSet]:
    """A set by ID and its organization, if the caller may see that organization."""
    vs = s.get(VariableSet, set_id)
    if vs is None:
        raise varset_not_found(set_id)
    org = s.get(Organization, vs.organization_id)
    if org is None or not authz.allowed(caller, ORG_READ, orgs.target(org)):
        raise varset_not_found(set_id)
    return org, vs


def find_var(s: Session, vs: VariableSet, var_id: str) -> VariableSetVariable:
    var = s.get(VariableSetVariable, var_id)
    if var is None or var.varset_id != vs.id:
        raise var_not_found(var_id)
    return var


def of_organization(
    s: Session, org_id: str, page: Page, q: str | None
) -> tuple[list[VariableSet], int]:
    """One page of an organization's sets, by name, and their total."""
    stmt = select(VariableSet).where(VariableSet.organization_id == org_id)
    if q:
        stmt = stmt.where(VariableSet.name.contains(q, autoescape=True))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.scalars(stmt.order_by(VariableSet.name).offset(page.offset).limit(page.size))
    return list(rows), total


def count_in_organization(s: Session, org_id: str) -> int:
    stmt = select(func.count()).where(VariableSet.organization_id == org_id)
    return int(s.scalar(stmt) or 0)


def applicable(s: Session, ws: Workspace) -> list[tuple[VariableSet, bool]]:
    """The sets that apply to a workspace, by name, each with whether it is applied to the
    workspace itself (else globally or through the workspace's project)."""
    on_ws = select(VariableSetWorkspace.varset_id).where(VariableSetWorkspace.workspace_id == ws.id)
    on_prj = select(VariableSetProject.varset_id).where(
        VariableSetProject.project_id == ws.project_id
    )
    rows = s.scalars(
        select(VariableSet)
        .where(
            VariableSet.organization_id == ws.organization_id,
            or_(VariableSet.is_global, VariableSet.id.in_(on_ws), VariableSet.id.in_(on_prj)),
        )
        .order_by(VariableSet.name)
    )
    sets = list(rows)
    direct = set(s.scalars(on_ws))
    return [(vs, vs.id in direct) for vs in sets]


def of_project(s: Session, org_id: str, project_id: str) -> list[VariableSet]:
    """The sets that apply to a project's workspaces (global ones and those applied to it)."""
    on_prj = select(VariableSetProject.varset_id).where(VariableSetProject.project_id == project_id)
    stmt = select(VariableSet).where(
        VariableSet.organization_id == org_id,
        or_(VariableSet.is_global, VariableSet.id.in_(on_prj)),
    )
    return list(s.scalars(stmt.order_by(VariableSet.name)))


def variables_of(s: Session, set_ids: Sequence[str]) -> list[VariableSetVariable]:
    """Every variable of the sets: Terraform variables first, each category by key."""
    if not set_ids:
        return []
    stmt = (
        select(VariableSetVariable)
        .where(VariableSetVariable.varset_id.in_(list(set_ids)))
        .order_by(VariableSetVariable.category.desc(), VariableSetVariable.key)
    )
    return list(s.scalars(stmt))


def links(s: Session, set_ids: Sequence[str]) -> dict[str, Links]:
    """Each set's variables, workspaces and projects, by ID."""
    out = {i: Links([], [], []) for i in set_ids}
    if not set_ids:
        return out
    ids = list(set_ids)
    for var_id, set_id in s.execute(
        select(VariableSetVariable.id, VariableSetVariable.varset_id)
        .where(VariableSetVariable.varset_id.in_(ids))
        .order_by(VariableSetVariable.category.desc(), VariableSetVariable.key)
    ):
        out[set_id].var_ids.append(var_id)
    for set_id, ws_id in s.execute(
        select(VariableSetWorkspace.varset_id, VariableSetWorkspace.workspace_id)
        .where(VariableSetWorkspace.varset_id.in_(ids))
        .order_by(VariableSetWorkspace.workspace_id)
    ):
        out[set_id].workspace_ids.append(ws_id)
    for set_id, prj_id in s.execute(
        select(VariableSetProject.varset_id, VariableSetProject.project_id)
        .where(VariableSetProject.varset_id.in_(ids))
        .order_by(VariableSetProject.project_id)
    ):
        out[set_id].project_ids.append(prj_id)
    return out


def usage(s: Session, set_id: str) -> tuple[int, int]:
    """(number of variables, bytes of their sealed values) of a set."""
    row = s.execute(
        select(
            func.count(), func.coalesce(func.sum(func.length(VariableSetVariable.value_sealed)), 0)
        ).where(VariableSetVariable.varset_id == set_id)
    ).one()
    return int(row[0]), int(row[1])


def taken(s: Session, set_id: str, category: str, key: str) -> str | None:
    """The ID of the set's variable of ``category`` named ``key``, if any."""
    return s.scalar(
        select(VariableSetVariable.id).where(
            VariableSetVariable.varset_id == set_id,
            VariableSetVariable.category == category,
            VariableSetVariable.key == key,
        )
    )


def name_taken(s: Session, org_id: str, name: str) -> str | None:
    return s.scalar(
        select(VariableSet.id).where(
            VariableSet.organization_id == org_id, VariableSet.name == name
        )
    )


def global_conflicts(
    s: Session, org_id: str, but: str, pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """(set name, category, key) of the variables of the organization's other global sets
    that have one of the (category, key) ``pairs``."""
    if not pairs:
        return []
    wanted = set(pairs)
    keys = sorted({k for _, k in pairs})
    rows = s.execute(
        select(VariableSet.name, VariableSetVariable.category, VariableSetVariable.key)
        .join(VariableSetVariable, VariableSetVariable.varset_id == VariableSet.id)
        .where(
            VariableSet.organization_id == org_id,
            VariableSet.is_global,
            VariableSet.id != but,
            VariableSetVariable.key.in_(keys),
        )
        .order_by(VariableSet.name, VariableSetVariable.key)
    )
    return [(n, c, k) for n, c, k in rows if (c, k) in wanted]


def pairs_of(s: Session, set_id: str) -> list[tuple[str, str]]:
    """(category, key) of every variable of a set."""
    rows = s.execute(
        select(VariableSetVariable.category, VariableSetVariable.key).where(
            VariableSetVariable.varset_id == set_id
        )
    )
    return [(c, k) for c, k in rows]


def workspaces_in(s: Session, org_id: str, ws_ids: Sequence[str]) -> list[Workspace]:
    if not ws_ids:
        return []
    stmt = select(Workspace).where(
        Workspace.organization_id == org_id, Workspace.id.in_(list(ws_ids))
    )
    return list(s.scalars(stmt))


def projects_in(s: Session, org_id: str, prj_ids: Sequence[str]) -> list[Project]:
    if not prj_ids:
        return []
    stmt = select(Project).where(Project.organization_id == org_id, Project.id.in_(list(prj_ids)))
    return list(s.scalars(stmt))


def linked_workspaces(s: Session, set_id: str) -> set[str]:
    stmt = select(VariableSetWorkspace.workspace_id).where(VariableSetWorkspace.varset_id == set_id)
    return set(s.scalars(stmt))


def linked_projects(s: Session, set_id: str) -> set[str]:
    stmt = select(VariableSetProject.project_id).where(VariableSetProject.varset_id == set_id)
    return set(s.scalars(stmt))


def unlink_workspaces(s: Session, set_id: str, ws_ids: Sequence[str] | None = None) -> None:
    """Remove the set from those workspaces (None: from every workspace)."""
    stmt = delete(VariableSetWorkspace).where(VariableSetWorkspace.varset_id == set_id)
    if ws_ids is not None:
        stmt = stmt.where(VariableSetWorkspace.workspace_id.in_(list(ws_ids)))
    s.execute(stmt)


def unlink_projects(s: Session, set_id: str, prj_ids: Sequence[str] | None = None) -> None:
    stmt = delete(VariableSetProject).where(VariableSetProject.varset_id == set_id)
    if prj_ids is not None:
        stmt = stmt.where(VariableSetProject.project_id.in_(list(prj_ids)))
    s.execute(stmt)


def hold_organization(s: Session, org_id: str) -> None:
    """Serialise the variable-set writes of one organization until the transaction ends
    (PostgreSQL: a row lock on the organization; SQLite writers are serialised already), so
    that the limits and the global-set rule checked before a write still hold at commit."""
    s.execute(select(Organization.id).where(Organization.id == org_id).with_for_update())
