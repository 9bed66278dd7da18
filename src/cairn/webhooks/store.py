"""Rows of webhook deliveries: recorded by the receiver, claimed and finished by the worker.

Every "only one may win" rule here is one statement the database decides:

- ``record``: ``INSERT … ON CONFLICT (oauth_client_id, delivery_key) DO NOTHING`` — of two
  copies of one delivery arriving at once on two replicas, one row is made; the other learns
  the first one's ID.
- ``claim``: a conditional ``UPDATE … WHERE id = (SELECT … LIMIT 1) AND <still claimable>
  RETURNING`` — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas claiming at once pass
  over each other's rows; on SQLite the writer lock serialises claims and the condition is
  checked again (the approach of ``runs.jobs``). A delivery is claimed by one worker at a time.
- ``finish``: conditional on ``state = 'processing' AND attempts = <the claim's attempt>``: a
  worker whose lease lapsed (its delivery claimed again elsewhere) cannot overwrite the newer
  claim's outcome.

The connection (``oauth_clients``, owned by ``cairn.vcs``) is read with Core, only the few
columns the receiver needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from cairn import ids
from cairn.db.base import table_of
from cairn.db.engine import affected
from cairn.vcs.model import OAuthClient, forge_of
from cairn.webhooks.model import Delivery, VcsDelivery, one_line

_clients = table_of(OAuthClient)


@dataclass(frozen=True)
class Receiving:
    """What the receiver knows of a connection: enough to verify a delivery and file it."""

    id: str
    organization_id: str
    kind: str
    webhook_secret_sealed: bytes = field(repr=False)

    @property
    def provider(self) -> str:
        """``gitlab`` or ``github``: how its deliveries are signed and named."""
        return forge_of(self.kind)


def connection(conn: Connection, oauth_client_id: str) -> Receiving | None:
    """The connection ``oauth_client_id``, or None."""
    row = conn.execute(
        select(
            _clients.c.id,
            _clients.c.organization_id,
            _clients.c.kind,
            _clients.c.webhook_secret_sealed,
        ).where(_clients.c.id == oauth_client_id)
    ).first()
    if row is None:
        return None
    return Receiving(row.id, row.organization_id, row.kind, bytes(row.webhook_secret_sealed))


@dataclass(frozen=True)
class Recorded:
    """The receiver's row: ``created`` False when it was a redelivery of ``id``."""

    id: str
    state: str
    created: bool


def record(
    s: Session,
    client: Receiving,
    *,
    delivery_key: str,
    event: str,
    action: str | None,
    body: bytes,
    state: str,
    now: datetime,
) -> Recorded:
    """Store a verified delivery (``queued``, or ``ignored`` without its body) unless this
    connection already has one with ``delivery_key``."""
    d = table_of(VcsDelivery)
    values: dict[str, Any] = {
        "id": ids.new_id("vcs_delivery"),
        "oauth_client_id": client.id,
        "organization_id": client.organization_id,
        "delivery_key": delivery_key,
        "provider": client.provider,
        "event": event,
        "action": action,
        "body": body,
        "received_at": now,
        "state": state,
        "attempts": 0,
    }
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        made = s.execute(
            pg_insert(d)
            .values(values)
            .on_conflict_do_nothing(index_elements=["oauth_client_id", "delivery_key"])
            .returning(d.c.id)
        ).first()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        made = s.execute(
            sqlite_insert(d)
            .values(values)
            .on_conflict_do_nothing(index_elements=["oauth_client_id", "delivery_key"])
            .returning(d.c.id)
        ).first()
    if made is not None:
        return Recorded(str(made.id), state, True)
    first = s.execute(
        select(d.c.id, d.c.state).where(
            d.c.oauth_client_id == client.id, d.c.delivery_key == delivery_key
        )
    ).one()
    return Recorded(str(first.id), str(first.state), False)


def _claimable_queued(now: datetime) -> ColumnElement[bool]:
    return and_(
        VcsDelivery.state == "queued",
        or_(VcsDelivery.not_before.is_(None), VcsDelivery.not_before <= now),
    )


def _lapsed(now: datetime, max_attempts: int) -> ColumnElement[bool]:
    return and_(
        VcsDelivery.state == "processing",
        VcsDelivery.lease_until < now,
        VcsDelivery.attempts < max_attempts,
    )


def claim(s: Session, now: datetime, *, lease: timedelta, max_attempts: int) -> Delivery | None:
    """Claim the oldest delivery that may run now (queued and past its backoff, or held by a
    worker whose lease lapsed), in the caller's transaction; None when there is none."""
    for ready in (_claimable_queued(now), _lapsed(now, max_attempts)):
        found = _claim_where(s, ready, now + lease)
        if found is not None:
            return found
    return None


def _claim_where(s: Session, ready: ColumnElement[bool], lease_until: datetime) -> Delivery | None:
    d = VcsDelivery
    pick = select(d.id).where(ready).order_by(d.received_at, d.id).limit(1)
    if s.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    row = s.execute(
        update(d)
        .where(d.id == pick.scalar_subquery(), ready)
        .values(state="processing", attempts=d.attempts + 1, lease_until=lease_until)
        .returning(
            d.id,
            d.oauth_client_id,
            d.organization_id,
            d.provider,
            d.event,
            d.action,
            d.delivery_key,
            d.received_at,
            d.attempts,
            d.body,
        )
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return Delivery(
        id=row.id,
        oauth_client_id=row.oauth_client_id,
        organization_id=row.organization_id,
        provider=row.provider,
        event=row.event,
        action=row.action,
        delivery_key=row.delivery_key,
        received_at=row.received_at,
        attempt=row.attempts,
        body=bytes(row.body),
    )


def finish(
    s: Session,
    delivery: Delivery,
    *,
    state: str,
    outcome: str,
    now: datetime,
    not_before: datetime | None = None,
) -> bool:
    """Record the claim's result: ``done`` / ``failed`` (final), or ``queued`` again with
    ``not_before`` (a retry). False when the claim was lost (its lease lapsed and another
    worker claimed the delivery): nothing is written then."""
    final = state in ("done", "failed")
    result = s.execute(
        update(VcsDelivery)
        .where(
            VcsDelivery.id == delivery.id,
            VcsDelivery.state == "processing",
            VcsDelivery.attempts == delivery.attempt,
        )
        .values(
            state=state,
            outcome=one_line(outcome),
            lease_until=None,
            not_before=not_before,
            processed_at=now if final else None,
        )
        .execution_options(synchronize_session=False)
    )
    return affected(result) == 1


def give_up_lapsed(s: Session, now: datetime, *, max_attempts: int) -> int:
    """Fail deliveries whose workers stopped (lease lapsed) on their last allowed attempt."""
    result = s.execute(
        update(VcsDelivery)
        .where(
            VcsDelivery.state == "processing",
            VcsDelivery.lease_until < now,
            VcsDelivery.attempts >= max_attempts,
        )
        .values(
            state="failed",
            outcome=(
                f"the worker handling this delivery stopped before finishing it "
                f"{max_attempts} times (its lease expired); send the event again from the "
                "forge's webhook settings"
            ),
            lease_until=None,
            processed_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return affected(result)


def prune(s: Session, before: datetime) -> int:
    """Delete deliveries received before ``before`` that no worker holds (retention)."""
    result = s.execute(
        delete(VcsDelivery)
        .where(VcsDelivery.received_at < before, VcsDelivery.state != "processing")
        .execution_options(synchronize_session=False)
    )
    return affected(result)
