"""What higher domains do when a workspace changes, registered in ``app.py``.

Workspaces sit below agents and runs, so they must not call them; instead those register
callbacks here: agents check a workspace's ``execution-mode``/``agent-pool-id`` before it is
written, runs start the next queued run when a lock is released. Every callback runs inside
the workspace service's transaction, with its session: one that raises (an ``ApiError``)
refuses the whole change and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cairn.organizations.model import Organization
from cairn.workspaces.model import Workspace

CheckSettings = Callable[[Session, Organization, Workspace], None]
"""``(session, org, ws)``: the row carries the new settings, not yet flushed; raise to refuse."""
AfterUnlock = Callable[[Session, Organization, Workspace], None]
"""``(session, org, ws)``: the lock was just released (by its holder or forced)."""
BeforeDelete = Callable[[Session, Organization, Workspace], None]
"""``(session, org, ws)``: raise to refuse the deletion."""


@dataclass
class WorkspaceHooks:
    """Callbacks run by the workspace and lock services in their transaction, in order."""

    check_settings: list[CheckSettings] = field(default_factory=list)
    after_unlock: list[AfterUnlock] = field(default_factory=list)
    before_delete: list[BeforeDelete] = field(default_factory=list)

    def checked(self, s: Session, org: Organization, ws: Workspace) -> None:
        for check in self.check_settings:
            check(s, org, ws)

    def unlocked(self, s: Session, org: Organization, ws: Workspace) -> None:
        for hook in self.after_unlock:
            hook(s, org, ws)

    def deleting(self, s: Session, org: Organization, ws: Workspace) -> None:
        for hook in self.before_delete:
            hook(s, org, ws)
