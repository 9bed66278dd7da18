"""Agent pools, their tokens and agents, managed through the TFE API, one unit of work each.

Who may: reading pools and their agents needs only to see the organization; creating,
changing and deleting pools, their tokens and agents, and reading tokens, need
``org:manage-agent-pools`` (TFE's "manage agent pools" organization access; owners and
``org:manage`` have it). A caller who may see the organization but not manage its pools is
answered 403; one who may not see it, 404.

Pool tokens are ``cairn_apool_`` + 43 base62 characters, shown once in the create answer and
stored only as their keyed hash (``Keyring.token_hash``). Deleting a token ends the sessions
of the agents registered with it (they are ``exited``): a leaked token is cut off at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.agents import store
from cairn.agents.model import DELETABLE, GONE, Agent, AgentPool, AgentToken
from cairn.agents.sessions import new_pool_token
from cairn.agents.store import PoolFilter, PoolView
from cairn.audit.log import Actor, record
from cairn.authz.permissions import ORG_MANAGE_AGENT_POOLS, ORG_READ
from cairn.authz.subject import Subject, User
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.errors import ApiError, Invalid, NotFound
from cairn.names import check_slug
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page

MAX_POOL_NAME: Final = 90
MAX_TOKEN_DESCRIPTION: Final = 255
MAX_ALLOWED_WORKSPACES: Final = 1000
_HIDDEN_TOKEN = "there is no such token, or you are not allowed to see it"  # noqa: S105


@dataclass
class PoolSettings:
    """What a create or update may set; None: leave as is (or the default)."""

    name: str | None = None
    organization_scoped: bool | None = None
    # None: leave the allow-list as is; a list replaces it.
    allowed_workspace_ids: list[str] | None = None


@dataclass(frozen=True)
class TokenView:
    token: AgentToken
    pool: AgentPool
    value: str | None = field(default=None, repr=False)  # only in a create's answer


@dataclass
class AgentListFilter:
    last_ping_since: datetime | None = None
    status: str | None = None


@dataclass(frozen=True)
class AgentView:
    agent: Agent
    pool: AgentPool


@dataclass(frozen=True)
class _Audit:
    """Records the audit events of one caller's change (never a token value)."""

    caller: Subject
    source: str
    at: datetime

    def __call__(self, s: Session, action: str, subject: str, **details: Any) -> None:
        record(
            s,
            at=self.at,
            actor=Actor(self.caller.id, self.caller.name, self.source),
            action=action,
            subject=subject,
            **details,
        )


def _manage(caller: Subject, org: Organization, doing: str) -> None:
    authz.require(caller, ORG_MANAGE_AGENT_POOLS, orgs.target(org), doing=doing)


def _taken(org_name: str, name: str) -> Invalid:
    return Invalid(
        f"Name has already been taken: agent pool {name!r} exists in {org_name}",
        pointer="/data/attributes/name",
    )


class AgentPoolService:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock

    # ---- pools ------------------------------------------------------------------------------

    def list_pools(
        self, caller: Subject, org_name: str, flt: PoolFilter, page: Page
    ) -> tuple[list[PoolView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            rows, total = store.search_pools(s, org, flt, page)
            return store.views(s, org, rows), total

    def get_pool(self, caller: Subject, pool_id: str) -> PoolView:
        with self._db.unit_of_work() as s:
            org, pool = store.pool(s, caller, pool_id)
            return store.views(s, org, [pool])[0]

    def create_pool(
        self, caller: Subject, org_name: str, change: PoolSettings, *, source: str = ""
    ) -> PoolView:
        name = check_slug("agent pool", change.name or "", max_len=MAX_POOL_NAME)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            _manage(caller, org, "create agent pools in")
            pool = AgentPool(
                id=ids.new_id("agent_pool"),
                organization_id=org.id,
                name=name,
                organization_scoped=True
                if change.organization_scoped is None
                else change.organization_scoped,
                created_at=now,
            )
            s.add(pool)
            taken = _taken(org.name, name)  # made before a failed flush spoils the objects
            try:
                s.flush()
            except IntegrityError:
                raise taken from None
            if change.allowed_workspace_ids:
                self._allow(s, org, pool, change.allowed_workspace_ids)
            _Audit(caller, source, now)(
                s, "agent-pool.create", pool.id, organization=org.name, name=name
            )
            s.commit()
            return store.views(s, org, [pool])[0]

    def update_pool(
        self, caller: Subject, pool_id: str, change: PoolSettings, *, source: str = ""
    ) -> PoolView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, pool = store.pool(s, caller, pool_id)
            _manage(caller, org, "change the agent pools of")
            taken = _taken(org.name, change.name or pool.name)  # before a flush may fail
            if change.name is not None and change.name != pool.name:
                pool.name = check_slug("agent pool", change.name, max_len=MAX_POOL_NAME)
            if change.organization_scoped is not None:
                pool.organization_scoped = change.organization_scoped
            try:
                s.flush()
            except IntegrityError:
                raise taken from None
            if change.allowed_workspace_ids is not None:
                self._allow(s, org, pool, change.allowed_workspace_ids)
            self._still_allowed(s, pool)
            _Audit(caller, source, now)(
                s,
                "agent-pool.update",
                pool.id,
                organization=org.name,
                name=pool.name,
                organization_scoped=pool.organization_scoped,
            )
            s.commit()
            return store.views(s, org, [pool])[0]

    def delete_pool(self, caller: Subject, pool_id: str, *, source: str = "") -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, pool = store.pool(s, caller, pool_id)
            _manage(caller, org, "delete the agent pools of")
            users = store.users_of(s, pool.id)
            if users:
                names = ", ".join(w.name for w in users[:5]) + (", …" if len(users) > 5 else "")
                raise Invalid(
                    f"agent pool {pool.name!r} is used by {len(users)} workspace(s) ({names}); "
                    "switch them to another pool or execution mode before deleting it"
                )
            s.execute(delete(AgentPool).where(AgentPool.id == pool.id))
            _Audit(caller, source, now)(
                s, "agent-pool.delete", pool.id, organization=org.name, name=pool.name
            )
            s.commit()

    def _allow(self, s: Session, org: Organization, pool: AgentPool, ws_ids: list[str]) -> None:
        pointer = "/data/relationships/allowed-workspaces/data"
        if len(ws_ids) > MAX_ALLOWED_WORKSPACES:
            raise Invalid(
                f"a pool allows at most {MAX_ALLOWED_WORKSPACES} workspaces by name",
                pointer=pointer,
            )
        found = store.workspaces_of(s, org.id, ws_ids)
        for i, ws_id in enumerate(ws_ids):
            if ws_id not in found:
                raise Invalid(
                    f"workspace {ws_id!r} does not exist in organization {org.name}",
                    pointer=f"{pointer}/{i}",
                )
        store.set_allowed_workspaces(s, pool.id, ws_ids)

    @staticmethod
    def _still_allowed(s: Session, pool: AgentPool) -> None:
        """A workspace that uses the pool must stay allowed (HCP Terraform refuses too)."""
        if pool.organization_scoped:
            return
        allowed = store.allowed_workspace_ids(s, pool.id)
        stranded = [w.name for w in store.users_of(s, pool.id) if w.id not in allowed]
        if stranded:
            raise Invalid(
                f"workspace(s) {', '.join(stranded[:5])} use agent pool {pool.name!r}; keep "
                "them in allowed-workspaces (or keep the pool organization-scoped), or switch "
                "them to another pool first",
                pointer="/data/relationships/allowed-workspaces",
            )

    # ---- tokens -----------------------------------------------------------------------------

    def create_token(
        self, caller: Subject, pool_id: str, description: str, *, source: str = ""
    ) -> TokenView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, pool = store.pool(s, caller, pool_id)
            _manage(caller, org, "create agent tokens in")
            value = new_pool_token()
            row = AgentToken(
                id=ids.new_id("agent_token"),
                pool_id=pool.id,
                description=description,
                token_hash=self._keys.token_hash(value),
                created_at=now,
                created_by_id=caller.id if isinstance(caller, User) else None,
            )
            s.add(row)
            s.flush()
            _Audit(caller, source, now)(
                s,
                "agent-token.create",
                f"{row.id} ({description})" if description else row.id,
                token_id=row.id,
                pool_id=pool.id,
                organization=org.name,
                description=description,
            )
            s.commit()
            return TokenView(row, pool, value)

    def list_tokens(
        self, caller: Subject, pool_id: str, page: Page, sort: str = "created-at"
    ) -> tuple[list[TokenView], int]:
        with self._db.unit_of_work() as s:
            org, pool = store.pool(s, caller, pool_id)
            _manage(caller, org, "see the agent tokens of")
            rows, total = store.tokens(s, pool.id, page, sort)
            return [TokenView(r, pool) for r in rows], total

    def get_token(self, caller: Subject, token_id: str) -> TokenView | None:
        """The pool token ``token_id``; None when there is no pool token with that ID (it may
        be another kind of token); NotFound when the caller may not manage its pool."""
        with self._db.unit_of_work() as s:
            found = store.token(s, token_id)
            if found is None:
                return None
            org, pool, row = found
            self._may_manage_token(caller, org)
            return TokenView(row, pool)

    def revoke_token(self, caller: Subject, token_id: str, *, source: str = "") -> bool:
        """Delete a pool token and end the sessions of the agents it registered; False when
        there is no pool token with that ID."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            found = store.token(s, token_id)
            if found is None:
                return False
            org, pool, row = found
            self._may_manage_token(caller, org)
            s.execute(
                update(Agent)
                .where(Agent.token_id == row.id, Agent.status.not_in(GONE))
                .values(status="exited", status_changed_at=now)
            )
            if affected(s.execute(delete(AgentToken).where(AgentToken.id == row.id))) != 1:
                raise NotFound(_HIDDEN_TOKEN)  # deleted by someone else a moment ago
            _Audit(caller, source, now)(
                s,
                "agent-token.revoke",
                f"{row.id} ({row.description})" if row.description else row.id,
                token_id=row.id,
                pool_id=pool.id,
                organization=org.name,
            )
            s.commit()
            return True

    @staticmethod
    def _may_manage_token(caller: Subject, org: Organization) -> None:
        # Tokens are visible only to those who manage the pool: others are told there is none.
        if not authz.allowed(caller, ORG_MANAGE_AGENT_POOLS, orgs.target(org)):
            raise NotFound(_HIDDEN_TOKEN)

    # ---- agents -----------------------------------------------------------------------------

    def list_agents(
        self, caller: Subject, pool_id: str, flt: AgentListFilter, page: Page
    ) -> tuple[list[AgentView], int]:
        with self._db.unit_of_work() as s:
            _, pool = store.pool(s, caller, pool_id)
            rows, total = store.agents(
                s, pool.id, page, since=flt.last_ping_since, status=flt.status
            )
            return [AgentView(a, pool) for a in rows], total

    def get_agent(self, caller: Subject, agent_id: str) -> AgentView:
        with self._db.unit_of_work() as s:
            _, pool, agent = self._agent(s, caller, agent_id)
            return AgentView(agent, pool)

    def delete_agent(self, caller: Subject, agent_id: str, *, source: str = "") -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, pool, agent = self._agent(s, caller, agent_id)
            _manage(caller, org, "delete the agents of")
            if agent.status not in DELETABLE:
                raise PreconditionFailed(
                    f"agent {agent.id} is {agent.status}: only an unknown, errored or exited "
                    "agent can be deleted; stop the agent (it deregisters) and try again"
                )
            gone = affected(
                s.execute(delete(Agent).where(Agent.id == agent.id, Agent.status.in_(DELETABLE)))
            )
            if gone != 1:
                raise PreconditionFailed(
                    f"agent {agent.id} came back meanwhile; stop it first and try again"
                )
            _Audit(caller, source, now)(
                s, "agent.delete", agent.id, pool_id=pool.id, organization=org.name
            )
            s.commit()

    @staticmethod
    def _agent(s: Session, caller: Subject, agent_id: str) -> tuple[Organization, AgentPool, Agent]:
        found = store.agent(s, agent_id)
        if found is None or not authz.allowed(caller, ORG_READ, orgs.target(found[0])):
            raise authz.not_found("agent", repr(agent_id))
        return found


class PreconditionFailed(ApiError):
    """HCP Terraform's 412 for deleting an agent that is still alive."""

    status, title, code = 412, "Precondition Failed", "precondition-failed"
