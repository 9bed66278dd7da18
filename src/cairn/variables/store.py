"""Variable rows, read and written in the caller's session (its unit of work).

Lookups check that the caller may read the workspace (404 otherwise, for the variable as for
its workspace: existence does not leak); the variables permissions are the service's to check.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.subject import Subject
from cairn.errors import NotFound
from cairn.organizations.model import Organization
from cairn.variables.model import Variable
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace

_OF_WORKSPACE = (
    select(Variable)
    .where(Variable.workspace_id == bindparam("ws_id"))
    .order_by(Variable.category.desc(), Variable.key)  # terraform, then env; by key
)
_USAGE = select(func.count(), func.coalesce(func.sum(func.length(Variable.value_sealed)), 0)).where(
    Variable.workspace_id == bindparam("ws_id")
)
_TAKEN = select(Variable.id).where(
    Variable.workspace_id == bindparam("ws_id"),
    Variable.category == bindparam("category"),
    Variable.key == bindparam("key"),
)


def variable_not_found(var_id: str) -> NotFound:
    return authz.not_found("variable", repr(var_id))


def find(
    s: Session, caller: Subject, var_id: str, ws_id: str | None = None
) -> tuple[Organization, Workspace, Variable]:
    """A variable by ID (of workspace ``ws_id`` when given), and its workspace and
    organization, if the caller may read that workspace."""
    if ws_id is not None:
        org, ws = workspaces.find(s, caller, ws_id)  # its own 404 names the workspace
        var = s.get(Variable, var_id)
        if var is None or var.workspace_id != ws.id:
            raise variable_not_found(var_id)
        return org, ws, var
    var = s.get(Variable, var_id)
    if var is None:
        raise variable_not_found(var_id)
    try:
        org, ws = workspaces.find(s, caller, var.workspace_id)
    except NotFound:
        raise variable_not_found(var_id) from None
    return org, ws, var


def of_workspace(s: Session, ws_id: str) -> list[Variable]:
    """Every variable of a workspace (at most ``MAX_PER_WORKSPACE``): Terraform variables
    first, each category by key."""
    return list(s.scalars(_OF_WORKSPACE, {"ws_id": ws_id}))


def usage(s: Session, ws_id: str) -> tuple[int, int]:
    """(number of variables, bytes of their sealed values) of a workspace."""
    row = s.execute(_USAGE, {"ws_id": ws_id}).one()
    return int(row[0]), int(row[1])


def taken(s: Session, ws_id: str, category: str, key: str) -> str | None:
    """The ID of the workspace's variable of ``category`` named ``key``, if any."""
    return s.scalar(_TAKEN, {"ws_id": ws_id, "category": category, "key": key})


def hold_workspace(s: Session, ws_id: str) -> None:
    """Serialise the variable writes of one workspace until the transaction ends (PostgreSQL:
    a row lock on the workspace; SQLite writers are serialised already), so that the limits
    counted before a write still hold when it commits."""
    s.execute(select(Workspace.id).where(Workspace.id == ws_id).with_for_update())
