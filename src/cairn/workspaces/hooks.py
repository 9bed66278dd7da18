"""Checks workspaces register on organizations (``organizations.hooks``), wired in ``app.py``:
an organization or project is not deleted from under workspaces that need it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cairn.authz.subject import Subject
from cairn.errors import Conflict
from cairn.organizations.model import Organization, Project
from cairn.workspaces import store


def refuse_locked_workspaces(s: Session, org: Organization) -> None:
    """Before an organization is deleted: none of its workspaces may be locked (someone is
    writing state there)."""
    locked = store.count_locked(s, org.id)
    if locked:
        raise Conflict(
            f"organization {org.name!r} has {locked} locked workspace(s); unlock them first"
        )


def refuse_used_project(s: Session, org: Organization, prj: Project) -> None:
    """Before a project is deleted: it must hold no workspace."""
    used = store.count_in_project(s, prj.id)
    if used:
        raise Conflict(
            f"project {prj.name!r} still holds {used} workspace(s); move or delete them first"
        )


def readable_counts(
    s: Session, caller: Subject, org: Organization, project_ids: list[str]
) -> dict[str, int]:
    """A project's ``workspace-count``: its workspaces the caller may read (no existence leak)."""
    return store.readable_counts_by_project(s, caller, org, project_ids)
