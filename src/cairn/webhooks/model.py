"""Webhook deliveries and the forge hooks cairn registers: their rows, and what the worker hands
the ingest.

A **delivery** is one webhook a forge sent to a connection's endpoint, verified and stored raw
before it is answered (``webhooks.receiver``). Its life::

    queued ──claim──▶ processing ──▶ done | failed
       ▲                  │
       └── retry (≤ 3 attempts, backoff in ``not_before``) or lease expired
    ignored  (an event cairn does not act on: recorded without its body, never processed)

``attempts`` counts claims and fences the worker's last write (a worker whose lease lapsed and
whose delivery another replica claimed cannot overwrite the newer outcome). ``outcome`` is one
line for people (the vcs-events list), never a secret. ``(oauth_client_id, delivery_key)`` is
unique: a forge's redelivery of the same event is answered with the first row's ID and creates
nothing.

A **repo hook** (``vcs_repo_hooks``) is a webhook cairn creates on the forge for a repository a
workspace uses on a connection that is not a GitHub App (an App's deliveries come to the App's
own URL): ``pending`` until the worker creates it (``registered``, with the forge's hook ID) or
fails (``failed``, with the error and the time of the next try in ``not_before``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime, partial_index
from cairn.vcs.model import OAuthClient

# The connections deliveries and hooks belong to (their table must be known to the foreign keys).
_CONNECTIONS: Final = OAuthClient.__tablename__

DELIVERY_STATES: Final = ("queued", "processing", "done", "failed", "ignored")
HOOK_STATES: Final = ("pending", "registered", "failed")
MAX_OUTCOME: Final = 500  # characters of an outcome or an error kept on a row
MAX_KEY: Final = 200  # characters of a delivery key (GitHub's and GitLab's are UUIDs)


class VcsDelivery(Base):
    __tablename__ = "vcs_deliveries"
    __table_args__ = (
        # A redelivery of the same event is the same row (the receiver's ON CONFLICT).
        UniqueConstraint("oauth_client_id", "delivery_key"),
        # What a claim scans: queued deliveries, oldest first.
        partial_index("ix_vcs_deliveries_queued", "received_at", where="state = 'queued'"),
        # Deliveries held by a worker, by lease: a lapsed one is claimed again.
        partial_index("ix_vcs_deliveries_processing", "lease_until", where="state = 'processing'"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{_CONNECTIONS}.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    delivery_key: Mapped[str] = mapped_column(String(MAX_KEY))
    provider: Mapped[str] = mapped_column(String(8))  # gitlab | github: how it was verified
    event: Mapped[str] = mapped_column(String(64))  # X-Gitlab-Event / X-GitHub-Event
    action: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # raw, as verified; empty when ignored
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(MAX_OUTCOME), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class VcsRepoHook(Base):
    __tablename__ = "vcs_repo_hooks"
    __table_args__ = (
        # What the registration step scans: hooks still to create (or to try again).
        partial_index(
            "ix_vcs_repo_hooks_due", "not_before", where="state IN ('pending', 'failed')"
        ),
    )
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{_CONNECTIONS}.id", ondelete="CASCADE"), primary_key=True
    )
    identifier: Mapped[str] = mapped_column(String(255), primary_key=True)  # group/project
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # The token of the workspace that asked for it: whose credentials create the hook. No FK:
    # vcs deletes tokens (and clears what points at them) on its own floor.
    oauth_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    forge_hook_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(String(MAX_OUTCOME), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, as the worker hands it to the ingest (``webhooks.ingest.handle``).
    ``provider`` is ``gitlab`` or ``github`` (from the connection's kind); ``body`` is the raw
    JSON the forge signed."""

    id: str
    oauth_client_id: str
    organization_id: str
    provider: str
    event: str
    action: str | None
    delivery_key: str
    received_at: datetime
    attempt: int  # 1 on the first claim
    body: bytes = field(repr=False)


class DeliveryFailed(Exception):
    """Raised by the ingest when a delivery cannot succeed however often it is tried (the
    connection needs re-authorisation, the repository is gone): the delivery is ``failed`` at
    once with this message as its outcome, which people read — name the cause and the fix,
    never a secret."""


def one_line(text: str, limit: int = MAX_OUTCOME) -> str:
    """``text`` as one line of at most ``limit`` characters (outcomes, errors)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
