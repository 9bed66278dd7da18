"""Writing audit events, inside the caller's transaction so an event exists exactly when the
change it describes committed."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cairn import ids
from cairn.audit.model import AuditEvent

log = logging.getLogger("cairn.audit")


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (through a token), or cairn itself (scheduler, startup)."""

    id: str | None
    name: str
    source_address: str = ""


SYSTEM = Actor(id=None, name="cairn")


def record(
    s: Session,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    subject: str,
    outcome: str = "success",
    **details: Any,
) -> None:
    s.add(
        AuditEvent(
            id=ids.new_id("audit_event"),
            at=at,
            actor_id=actor.id,
            actor_name=actor.name,
            action=action,
            subject=subject[:255],
            source_address=actor.source_address[:64],
            outcome=outcome,
            details=json.dumps(details, default=str, separators=(",", ":")),
        )
    )
    log.info(
        "audit",
        extra={"action": action, "subject": subject, "actor": actor.name, "outcome": outcome},
    )
