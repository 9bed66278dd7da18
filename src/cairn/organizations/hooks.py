"""What higher domains do when an organization changes, registered in ``app.py``.

Organizations sit below workspaces, teams, state and identity, so they must not call them;
instead each of those registers a callback here (the owners team after create, the service
account's display name after a rename, "no locked workspace" before a delete). Every callback
runs inside the organization service's transaction, with its session: a callback that raises
(an ``ApiError``) refuses the whole change and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cairn.authz.subject import Subject
from cairn.organizations.model import Organization, Project

AfterCreate = Callable[[Session, Organization, Subject], None]
"""``(session, org, creator)``: the organization and its default project are flushed."""
AfterRename = Callable[[Session, Organization, str], None]
"""``(session, org, old_name)``: ``org.name`` is already the new name."""
BeforeDelete = Callable[[Session, Organization], None]
"""``(session, org)``: raise to refuse the deletion."""
BeforeDeleteProject = Callable[[Session, Organization, Project], None]
"""``(session, org, project)``: raise to refuse the deletion of the project."""
WorkspaceCounts = Callable[[Session, Subject, Organization, list[str]], dict[str, int]]
"""``(session, caller, org, project_ids)``: how many workspaces of each project the caller may
read (a project's ``workspace-count``; workspaces live above organizations)."""


@dataclass
class OrganizationHooks:
    """Callbacks run by ``OrganizationService`` in its transaction, in registration order."""

    after_create: list[AfterCreate] = field(default_factory=list)
    after_rename: list[AfterRename] = field(default_factory=list)
    before_delete: list[BeforeDelete] = field(default_factory=list)
    before_delete_project: list[BeforeDeleteProject] = field(default_factory=list)
    workspace_counts: WorkspaceCounts | None = None
