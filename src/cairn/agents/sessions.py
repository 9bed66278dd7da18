"""The agent protocol's registration side: register, deregister, sessions, heartbeat
bookkeeping and the status sweep.

An agent registers with a pool token (``cairn_apool_…``), or — a built-in worker of this
server — with the process-local ``builtin_secret``, and gets a **session token**
(``cairn_agt_`` + 43 base62, stored only as its keyed hash, bound to the agent). The jobs side
(``runs``) authenticates claims with ``authenticate_session`` and keeps the agent alive with
``touch``; a background job calls ``sweep``. Every method takes the caller's Session (its
unit of work): a registration, a claim and its heartbeat bookkeeping are one transaction.

A session token of an agent that is ``errored`` or ``exited``, or that was deleted, is
refused with ``AgentUnknown`` (409, ``agent_unknown``): the agent must register again
(OTF's ``ErrConflict``). A well-formed session token that matches no agent is taken as one
of a deleted agent: with 256 random bits, a guess is not one.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cairn import ids
from cairn.agents.model import (
    CLAIM_WAIT_S,
    COUNTED,
    DELETE_AFTER,
    GONE,
    HEARTBEAT_S,
    LEASE_S,
    LIVE,
    UNKNOWN_AFTER,
    Agent,
    AgentPool,
    AgentToken,
    next_status,
)
from cairn.audit.log import Actor, record
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import affected
from cairn.errors import ApiError, Unauthorized

SESSION_PREFIX: Final = "cairn_agt_"  # a public prefix for secret scanners
POOL_TOKEN_PREFIX: Final = "cairn_apool_"  # noqa: S105 - a public prefix for secret scanners
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_LEN = 43
MAX_AGENT_NAME: Final = 255
MAX_AGENT_VERSION: Final = 64
# Agents (idle, busy or unknown) one pool may have: a leaked token cannot fill the table.
MAX_AGENTS_PER_POOL: Final = 1000
_NEED_TOKEN = (
    "an agent registers with its pool's agent token: pass it as 'Authorization: Bearer <token>'"  # noqa: S105
)
_NEED_SESSION = (
    "an agent session token is required: pass the session_token of the registration as "
    "'Authorization: Bearer <token>'"
)


def _random_value(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LEN))


def new_pool_token() -> str:
    """A fresh pool token value (``AgentPoolService.create_token`` stores its hash)."""
    return _random_value(POOL_TOKEN_PREFIX)


def _well_formed(value: str, prefix: str) -> bool:
    rest = value[len(prefix) :]
    return (
        value.startswith(prefix) and len(rest) == _RANDOM_LEN and rest.isascii() and rest.isalnum()
    )


class TooManyAgents(ApiError):
    """A pool has ``MAX_AGENTS_PER_POOL`` agents that are not errored or exited."""

    status, title, code = 409, "Conflict", "too_many_agents"


class AgentUnknown(ApiError):
    """The session's agent is errored, exited or deleted: it must register again."""

    status, title, code = 409, "Conflict", "agent_unknown"


@dataclass(frozen=True)
class AgentSession:
    """Who is calling with a session token: the agent, its pool (None: a built-in worker)
    and the pool's organization (None for a built-in worker)."""

    agent_id: str
    pool_id: str | None
    organization_id: str | None


@dataclass(frozen=True)
class Registration:
    """The answer to a registration; ``session_token`` is shown only here."""

    agent_id: str
    pool_id: str | None
    session_token: str
    heartbeat_s: int = HEARTBEAT_S
    claim_wait_s: int = CLAIM_WAIT_S
    lease_s: int = LEASE_S

    def __repr__(self) -> str:  # never the session token
        return f"Registration(agent_id={self.agent_id!r}, pool_id={self.pool_id!r})"


class Agents:
    """Registration, sessions and the status sweep (see the module docstring)."""

    def __init__(self, keyring: Keyring, clock: Clock, *, builtin_secret: str | None = None):
        self._keys = keyring
        self._clock = clock
        # What this process's built-in workers register with: random per process, never
        # stored, never logged; an agent of no pool can be registered only from here.
        self._builtin = builtin_secret or _random_value("cairn_builtin_")

    def __repr__(self) -> str:
        return "Agents()"

    @property
    def builtin_secret(self) -> str:
        return self._builtin

    # ---- register / deregister --------------------------------------------------------------

    def register(
        self,
        s: Session,
        credential: str | None,
        *,
        name: str,
        version: str,
        ip_address: str,
    ) -> Registration:
        """A new agent, ``idle``, of the pool whose token ``credential`` is (or of no pool for
        the built-in secret). Raises Unauthorized for anything else."""
        if not credential or len(credential) > 512:
            raise Unauthorized(_NEED_TOKEN)
        now = self._clock.now()
        pool_id: str | None
        token_id: str | None
        if secrets.compare_digest(credential.encode(), self._builtin.encode()):
            pool_id = token_id = None
        else:
            if not _well_formed(credential, POOL_TOKEN_PREFIX):
                raise Unauthorized(f"the agent token is not valid; {_NEED_TOKEN}")
            digest = self._keys.token_hash(credential)
            found = s.execute(
                select(AgentToken.id, AgentToken.pool_id).where(AgentToken.token_hash == digest)
            ).first()
            if found is None:
                raise Unauthorized(
                    "the agent token is not valid (it may have been deleted); create a new "
                    "one for the agent pool"
                )
            token_id, pool_id = found
            live = s.scalar(
                select(func.count())
                .select_from(Agent)
                .where(Agent.pool_id == pool_id, Agent.status.in_(COUNTED))
            )
            if (live or 0) >= MAX_AGENTS_PER_POOL:
                raise TooManyAgents(
                    f"the agent pool already has {MAX_AGENTS_PER_POOL} registered agents; stop "
                    "some (or delete unknown ones) before registering more"
                )
            s.execute(update(AgentToken).where(AgentToken.id == token_id).values(last_used_at=now))
        value = _random_value(SESSION_PREFIX)
        agent = Agent(
            id=ids.new_id("agent"),
            pool_id=pool_id,
            token_id=token_id,
            name=name[:MAX_AGENT_NAME],
            status="idle",
            ip_address=ip_address[:64],
            version=version[:MAX_AGENT_VERSION],
            session_hash=self._keys.token_hash(value),
            last_ping_at=now,
            status_changed_at=now,
            created_at=now,
        )
        s.add(agent)
        s.flush()
        if pool_id is not None:
            record(
                s,
                at=now,
                actor=Actor(None, f"agent token {token_id}", ip_address),
                action="agent.register",
                subject=agent.id,
                pool_id=pool_id,
                token_id=token_id,
                name=agent.name,
                version=agent.version,
            )
        return Registration(agent.id, pool_id, value)

    def deregister(self, s: Session, token: str | None) -> None:
        """The session's agent has stopped: ``exited`` (its session is refused from now on)."""
        session = self.authenticate_session(s, token)
        now = self._clock.now()
        s.execute(
            update(Agent)
            .where(Agent.id == session.agent_id)
            .values(status="exited", status_changed_at=now, last_ping_at=now)
        )

    # ---- sessions ---------------------------------------------------------------------------

    def authenticate_session(self, s: Session, token: str | None) -> AgentSession:
        """The agent behind a session token. Unauthorized for a missing or malformed one;
        AgentUnknown for that of an errored, exited or deleted agent."""
        if not token or not _well_formed(token, SESSION_PREFIX):
            raise Unauthorized(_NEED_SESSION)
        found = s.execute(
            select(Agent.id, Agent.pool_id, Agent.status, AgentPool.organization_id)
            .outerjoin(AgentPool, AgentPool.id == Agent.pool_id)
            .where(Agent.session_hash == self._keys.token_hash(token))
        ).first()
        if found is None:
            raise AgentUnknown(
                "this agent is no longer registered (it was deleted after going silent or "
                "exiting); register again"
            )
        agent_id, pool_id, status, org_id = found
        if status in GONE:
            raise AgentUnknown(
                f"agent {agent_id} is {status} (it stopped heartbeating or deregistered); "
                "register again"
            )
        return AgentSession(agent_id, pool_id, org_id)

    def touch(self, s: Session, agent_id: str, *, busy: bool, now: datetime) -> None:
        """A sign of life: ``busy`` (running a job) or ``idle``, pinged at ``now``. An agent
        that was ``unknown`` is back; one that is errored, exited or gone is AgentUnknown."""
        status = "busy" if busy else "idle"
        changed = affected(
            s.execute(
                update(Agent)
                .where(Agent.id == agent_id, Agent.status != status, Agent.status.not_in(GONE))
                .values(status=status, status_changed_at=now, last_ping_at=now)
            )
        )
        if changed:
            return
        same = affected(
            s.execute(
                update(Agent)
                .where(Agent.id == agent_id, Agent.status == status)
                .values(last_ping_at=now)
            )
        )
        if not same:
            raise AgentUnknown(f"agent {agent_id} is no longer registered; register again")

    # ---- the sweep --------------------------------------------------------------------------

    def sweep(self, s: Session, now: datetime) -> list[str]:
        """Apply the status rule (``model.next_status``) to every agent due for a change;
        returns the IDs of the agents that became ``errored`` now (the jobs side errors
        their running jobs in the same transaction). Each change is conditional on the row
        as read, so a heartbeat that lands meanwhile wins and replicas may sweep together."""
        rows = s.execute(
            select(Agent.id, Agent.status, Agent.last_ping_at, Agent.status_changed_at).where(
                (Agent.status.in_((*LIVE, "unknown")) & (Agent.last_ping_at <= now - UNKNOWN_AFTER))
                | (Agent.status.in_(GONE) & (Agent.status_changed_at <= now - DELETE_AFTER))
            )
        ).all()
        errored: list[str] = []
        for agent_id, status, last_ping_at, changed_at in rows:
            step = next_status(status, last_ping_at, changed_at, now)
            if step is None:
                continue
            as_read = (
                Agent.id == agent_id,
                Agent.status == status,
                Agent.last_ping_at == last_ping_at,
            )
            if step.to == "delete":
                s.execute(delete(Agent).where(*as_read))
                continue
            done = affected(
                s.execute(
                    update(Agent).where(*as_read).values(status=step.to, status_changed_at=now)
                )
            )
            if done and step.to == "errored":
                errored.append(agent_id)
        return errored
