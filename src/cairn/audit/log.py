"""Writing audit events, inside the caller's transaction so an event exists exactly when the
change it describes committed. (Events of actions that write nothing else, token mints, are
committed in groups by ``cairn.audit.lane`` from the same rows.)"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cairn import ids
from cairn.audit.model import AuditEvent
from cairn.db.engine import current_session
from cairn.logs import join_request_line

log = logging.getLogger("cairn.audit")


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (through a token), or cairn itself (scheduler, startup)."""

    id: str | None
    name: str
    source_address: str = ""


SYSTEM = Actor(id=None, name="cairn")


def event_row(
    *,
    at: datetime,
    actor: Actor,
    action: str,
    subject: str,
    outcome: str = "success",
    **details: Any,
) -> dict[str, Any]:
    """The column values of one new event (a fresh id; subject and address cut to their
    columns' sizes; details as compact JSON). Shared by ``record`` and ``cairn.audit.lane``
    so that both store exactly the same row."""
    return {
        "id": ids.new_id("audit_event"),
        "at": at,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "action": action,
        "subject": subject[:255],
        "source_address": actor.source_address[:64],
        "outcome": outcome,
        "details": json.dumps(details, default=str, separators=(",", ":")),
    }


def log_event(row: dict[str, Any], subject: str) -> None:
    """The log line that accompanies every recorded event (the full subject, not the cut one):
    inside a logged request, an entry of the request's access-log line (``"audit": [...]``)
    instead of a line of its own."""
    fields = {
        "action": row["action"],
        "subject": subject,
        "actor": row["actor_name"],
        "outcome": row["outcome"],
    }
    if not join_request_line(fields):
        log.info("audit", extra=fields)


# Set by the audited lane while it runs a job: events are staged there and committed with those
# of the jobs around it (group commit) instead of being added to the job's own transaction.
staging: ContextVar[list[tuple[dict[str, Any], str]] | None] = ContextVar(
    "cairn_audit_staging", default=None
)


def record(
    s: Session | None,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    subject: str,
    outcome: str = "success",
    **details: Any,
) -> None:
    """Record an event in the transaction of ``s`` (None: the current unit of work), or stage
    it when an audited-lane job is running (committed before that job is answered)."""
    row = event_row(at=at, actor=actor, action=action, subject=subject, outcome=outcome, **details)
    staged = staging.get()
    if staged is not None:
        staged.append((row, subject))
        return
    session = s if s is not None else current_session()
    if session is None:
        raise RuntimeError("an audit event needs a unit of work to be recorded in")
    session.add(AuditEvent(**row))
    log_event(row, subject)
