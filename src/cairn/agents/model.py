"""Agent pools, the workspaces a pool allows, pool tokens and agents; the agent status rules.

An agent belongs to a pool (``pool_id``) or, when ``pool_id`` is NULL, is one of the server's
built-in workers (they run the jobs of ``execution-mode: remote`` workspaces). Its status
follows HCP Terraform's (``agent-pools.mdx``) and OTF's timings (``manager.go``): a
heartbeat keeps it ``idle``/``busy``; without one for ``UNKNOWN_AFTER`` it is ``unknown``,
``ERRORED_AFTER`` later ``errored`` (its running job is errored by the jobs side), and an
``errored`` or ``exited`` agent is deleted ``DELETE_AFTER`` after that. ``next_status`` is the
rule, a pure function of the row and ``now``; ``agents.service.Agents.sweep`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

AgentStatus = Literal["idle", "busy", "unknown", "errored", "exited"]
STATUSES: Final[tuple[AgentStatus, ...]] = ("idle", "busy", "unknown", "errored", "exited")
LIVE: Final[tuple[AgentStatus, ...]] = ("idle", "busy")
# What HCP Terraform counts as a pool's agents (``agent-count``).
COUNTED: Final[tuple[AgentStatus, ...]] = ("idle", "busy", "unknown")
# An agent may be deleted through the API only in these (HCP: 412 otherwise).
DELETABLE: Final[tuple[AgentStatus, ...]] = ("unknown", "errored", "exited")
# A session token of an agent in these is refused: the agent must register again.
GONE: Final[tuple[AgentStatus, ...]] = ("errored", "exited")

UNKNOWN_AFTER: Final = timedelta(seconds=30)
ERRORED_AFTER: Final = timedelta(minutes=5)
DELETE_AFTER: Final = timedelta(hours=1)

# What the agent is told at registration (the protocol's timing fields, in seconds).
HEARTBEAT_S: Final = 10
CLAIM_WAIT_S: Final = 25
LEASE_S: Final = 60


class AgentPool(Base):
    __tablename__ = "agent_pools"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(90))
    # True: every workspace of the organization may use the pool; False: only those listed in
    # agent_pool_allowed_workspaces.
    organization_scoped: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgentPoolWorkspace(Base):
    """A workspace an agent pool that is not organization-scoped allows."""

    __tablename__ = "agent_pool_allowed_workspaces"
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("agent_pools.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AgentToken(Base):
    """A pool's token (``cairn_apool_`` + 43 base62), stored only as its keyed hash."""

    __tablename__ = "agent_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("agent_pools.id", ondelete="CASCADE"), index=True
    )
    description: Mapped[str] = mapped_column(String(255), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


class Agent(Base):
    """A registered agent process; ``session_hash`` is its session token's keyed hash."""

    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_pool_id_status", "pool_id", "status"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # NULL: one of the server's built-in workers.
    pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("agent_pools.id", ondelete="CASCADE"), nullable=True
    )
    # The pool token it registered with (NULL: a built-in worker, or the token is gone).
    token_id: Mapped[str | None] = mapped_column(
        ForeignKey("agent_tokens.id", ondelete="SET NULL"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="idle")
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_ping_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When ``status`` last changed (the sweep's clock for errored → deleted).
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Transition:
    """What the sweep does to one agent: a new status, or ``"delete"``."""

    to: AgentStatus | Literal["delete"]


def next_status(
    status: str, last_ping_at: datetime, status_changed_at: datetime, now: datetime
) -> Transition | None:
    """The sweep's rule for one agent at ``now`` (None: leave it as it is).

    ``idle``/``busy`` without a heartbeat for ``UNKNOWN_AFTER`` → ``unknown``; still silent
    ``ERRORED_AFTER`` after that → ``errored``; ``errored``/``exited`` for ``DELETE_AFTER`` →
    deleted. An agent silent long enough to skip a step (the sweep did not run, a replica
    was down) goes straight to where its silence puts it.
    """
    silent = now - last_ping_at
    if status in LIVE or status == "unknown":
        if silent >= UNKNOWN_AFTER + ERRORED_AFTER:
            return Transition("errored")
        if status in LIVE and silent >= UNKNOWN_AFTER:
            return Transition("unknown")
        return None
    if status in GONE and now - status_changed_at >= DELETE_AFTER:
        return Transition("delete")
    return None
