"""Reading the audit log: filtered, newest first, one page at a time.

The log is append-only: events are written by ``cairn.audit.log.record`` inside the
transaction of the change they describe (a token mint, which changes nothing else, by
``cairn.audit.lane`` before the token is answered), and nothing in cairn updates or deletes
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select

from cairn.audit.model import AuditEvent
from cairn.db.engine import Database
from cairn.paging import Page


@dataclass(frozen=True)
class AuditQuery:
    """What to select. Every field narrows the result; None leaves it open.

    ``action`` is exact, or a prefix when it ends in ``.`` or ``*`` (``oidc.`` and ``oidc.*``
    both select every issuer event); ``actor`` is a user name or id; ``subject`` a substring;
    ``since`` is inclusive and ``until`` exclusive."""

    action: str | None = None
    actor: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.action is not None:
            if self.action.endswith(("*", ".")):
                where.append(AuditEvent.action.startswith(self.action.rstrip("*"), autoescape=True))
            else:
                where.append(AuditEvent.action == self.action)
        if self.actor is not None:
            where.append(
                or_(AuditEvent.actor_name == self.actor, AuditEvent.actor_id == self.actor)
            )
        if self.subject is not None:
            where.append(AuditEvent.subject.contains(self.subject, autoescape=True))
        if self.since is not None:
            where.append(AuditEvent.at >= self.since)
        if self.until is not None:
            where.append(AuditEvent.at < self.until)
        if self.outcome is not None:
            where.append(AuditEvent.outcome == self.outcome)
        return where


class AuditLog:
    """Queries over the audit events (there is deliberately no way to change one)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def search(self, q: AuditQuery, page: Page) -> tuple[list[AuditEvent], int]:
        """One page of the matching events, newest first, and how many match in all."""
        where = q.conditions()
        with self._db.unit_of_work() as s:
            total = s.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
            rows = list(
                s.scalars(
                    select(AuditEvent)
                    .where(*where)
                    .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                    .offset(page.offset)
                    .limit(page.size)
                )
            )
        return rows, total

    def get(self, event_id: str) -> AuditEvent | None:
        with self._db.unit_of_work() as s:
            return s.scalar(select(AuditEvent).where(AuditEvent.id == event_id))
