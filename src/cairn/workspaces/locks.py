"""The workspace lock: taking, releasing and force-releasing it, and saying who holds it.

The rules are on the model (``Workspace.enlock`` / ``unlock``); ``write_lock`` is the one
conditional UPDATE that applies them, so that exactly one of concurrent callers wins. Other
domains (state: "only the lock holder may upload") use ``held_message`` and
``Workspace.lock_is``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cairn import authz
from cairn.audit.log import Actor, record
from cairn.auth.model import User
from cairn.authz.permissions import WORKSPACE_LOCK, WORKSPACE_MANAGE
from cairn.authz.subject import Holder, Subject, holder_of
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict
from cairn.organizations.model import Organization
from cairn.workspaces import store
from cairn.workspaces.events import WorkspaceHooks
from cairn.workspaces.model import LockChange, LockRefused, Workspace
from cairn.workspaces.store import WorkspaceView


def held_message(s: Session, org: Organization, ws_id: str, verb: str) -> str:
    """``workspace <org>/<name> <verb> by User 'alice' since …``, read afresh (after a lost
    race the row in the session is stale)."""
    ws = s.get(Workspace, ws_id, populate_existing=True)
    if ws is None:
        return "the workspace no longer exists"
    holder = ws.holder
    who = "someone"
    if holder is not None and holder.is_user:
        name = s.scalar(select(User.username).where(User.id == holder.id))
        who = f"User {name!r}" if name else f"user {holder.id}"
    elif holder is not None:
        who = f"{holder.kind} {holder.id}"
    since = f" since {ws.locked_at:%Y-%m-%d %H:%M:%S} UTC" if ws.locked_at else ""
    return f"workspace {org.name}/{ws.name} {verb} by {who}{since}"


def write_lock(
    s: Session,
    ws: Workspace,
    change: LockChange,
    *,
    now: datetime,
    reason: str = "",
    client_id: str | None = None,
    info: dict[str, object] | None = None,
) -> bool:
    """Apply ``change`` with one conditional UPDATE (the lock must still be
    ``change.expected``); True if it won. The session's copy of ``ws`` is not refreshed.
    ``client_id``/``info``: the lock's ID and info as a client named them (Terraform's http
    backend); any other change clears them."""
    values: dict[str, Any]
    if change.holder is None:
        values = dict(locked_by_kind=None, locked_by_id=None, lock_reason="", locked_at=None)
    else:
        values = dict(
            locked_by_kind=change.holder.kind,
            locked_by_id=change.holder.id,
            lock_reason=reason[:500],
            locked_at=now,
        )
    values.update(lock_client_id=client_id if change.holder else None)
    values.update(lock_info=info if change.holder else None)
    result = s.execute(
        update(Workspace)
        .where(Workspace.id == ws.id, Workspace.lock_is(change.expected))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return affected(result) == 1


def _refused(s: Session, org: Organization, ws: Workspace, refusal: LockRefused) -> Conflict:
    where = f"workspace {org.name}/{ws.name}"
    if refusal.why == "unlocked":
        return Conflict(f"{where} is already unlocked")
    if refusal.why == "locked":
        return Conflict(held_message(s, org, ws.id, "is already locked"))
    return Conflict(
        held_message(s, org, ws.id, "is locked")
        + "; only the holder can unlock it (an admin can force-unlock)"
    )


Rule = Callable[[Workspace, Holder], LockChange]
"""A lock rule of the model, applied to the row for the caller's holder."""


def _take(ws: Workspace, holder: Holder) -> LockChange:
    return ws.enlock(holder)


def _release(ws: Workspace, holder: Holder) -> LockChange:
    return ws.unlock(holder)


def _force_release(ws: Workspace, holder: Holder) -> LockChange:
    return ws.unlock(holder, force=True)


class LockService:
    """Lock, unlock and force-unlock, each audited in its transaction. The caller holds locks
    as ``authz.subject.holder_of(caller)``."""

    def __init__(self, db: Database, clock: Clock, hooks: WorkspaceHooks | None = None) -> None:
        self._db = db
        self._clock = clock
        self.hooks = hooks if hooks is not None else WorkspaceHooks()

    def lock(self, caller: Subject, ws_id: str, reason: str, source: str) -> WorkspaceView:
        reason = reason[:500]
        return self._change(
            caller, ws_id, source, WORKSPACE_LOCK, "lock", _take, reason, "workspace.lock"
        )

    def unlock(self, caller: Subject, ws_id: str, source: str) -> WorkspaceView:
        return self._change(
            caller, ws_id, source, WORKSPACE_LOCK, "unlock", _release, "", "workspace.unlock"
        )

    def force_unlock(self, caller: Subject, ws_id: str, source: str) -> WorkspaceView:
        return self._change(
            caller,
            ws_id,
            source,
            WORKSPACE_MANAGE,
            "force-unlock",
            _force_release,
            "",
            "workspace.force_unlock",
        )

    def _change(
        self,
        caller: Subject,
        ws_id: str,
        source: str,
        permission: str,
        doing: str,
        rule: Rule,
        reason: str,
        action: str,
    ) -> WorkspaceView:
        holder = holder_of(caller)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            authz.require(caller, permission, store.target(org, ws), doing=doing)
            previous = ws.holder
            try:
                if not write_lock(s, ws, rule(ws, holder), now=now, reason=reason):
                    # Changed since it was read: the rule, on the row as it is now, says why.
                    s.rollback()
                    s.refresh(ws)
                    rule(ws, holder)
                    raise Conflict(f"workspace {org.name}/{ws.name} changed meanwhile; try again")
            except LockRefused as refusal:
                raise _refused(s, org, ws, refusal) from None
            details: dict[str, Any] = {}
            if rule is _take:
                details["reason"] = reason
            elif rule is _force_release:
                details["holder"] = previous.id if previous is not None else None
            record(
                s,
                at=now,
                actor=Actor(caller.id, caller.name, source),
                action=action,
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                **details,
            )
            if rule is not _take:
                s.refresh(ws)
                self.hooks.unlocked(s, org, ws)
            s.commit()
            s.refresh(ws)
            return store.view(s, caller, org, ws)
