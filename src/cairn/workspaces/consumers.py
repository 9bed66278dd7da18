"""Remote-state consumers: which other workspaces may read a workspace's state.

HCP Terraform lets a workspace share its state with every workspace of its organization
(the ``global-remote-state`` attribute) or with chosen ones (its remote-state consumers,
``/workspaces/:id/relationships/remote-state-consumers``). The setting governs what a *run*
of another workspace may read — ``terraform_remote_state`` and ``tfe_outputs`` read with the
run's own workspace-scoped token — not what a person or team may read with their own token:
their grants decide that alone (HCP Terraform's rule, kept here).

In cairn the rule is ``may_consume``, applied by every state read (current state version,
state version, its download, outputs) to the workspace the caller's access comes through
(``consuming_workspace``). Only a token bound to one workspace — a run's or job's token —
comes through a workspace: a run's job token (``authz.subject.RunJob``, whose
``workspace_id`` is its run's workspace); every other caller is read as itself (user,
organization and team tokens: their grants decide).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from cairn import authz
from cairn.authz.permissions import WORKSPACE_MANAGE, WORKSPACE_READ
from cairn.authz.subject import Subject
from cairn.db.base import Base
from cairn.db.engine import Database
from cairn.errors import Forbidden, Invalid
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.workspaces import store
from cairn.workspaces.model import Workspace
from cairn.workspaces.store import WorkspaceView

# HCP Terraform sends consumers in batches; one request names at most this many.
MAX_CONSUMERS_PER_REQUEST = 100


class RemoteStateConsumer(Base):
    """``consumer_id`` may read the state of ``workspace_id`` (same organization)."""

    __tablename__ = "workspace_remote_state_consumers"
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    consumer_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )


def consuming_workspace(caller: Subject) -> str | None:
    """The workspace the caller's access comes through: a workspace-scoped token's (a run's or
    a job's, once they exist: any subject kind with a ``workspace_id``), else None (people,
    organization and team tokens act as themselves)."""
    value = getattr(caller, "workspace_id", None)
    return value if isinstance(value, str) else None


def may_consume(s: Session, ws: Workspace, via: str | None) -> bool:
    """Whether a caller whose access comes through workspace ``via`` may read ``ws``'s state:
    yes for no workspace (the caller's own grants decided), for ``ws`` itself, when ``ws``
    shares its state organization-wide, or with ``via`` among its consumers; never across
    organizations."""
    if via is None or via == ws.id:
        return True
    other = s.get(Workspace, via)
    if other is None or other.organization_id != ws.organization_id:
        return False
    if ws.global_remote_state:
        return True
    return s.get(RemoteStateConsumer, (ws.id, via)) is not None


def require_consumable(s: Session, caller: Subject, org: Organization, ws: Workspace) -> None:
    """Raise Forbidden unless the caller may read ``ws``'s state through the workspace its
    access comes through (``may_consume``)."""
    via = consuming_workspace(caller)
    if not may_consume(s, ws, via):
        raise Forbidden(
            f"workspace {org.name}/{ws.name} does not share its state with workspace {via}: "
            "turn on its global-remote-state, or add that workspace to its remote-state "
            "consumers"
        )


class RemoteStateConsumers:
    """Listing and changing a workspace's remote-state consumers."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def listing(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[WorkspaceView], int]:
        """One page of the consumers the caller may read (by name), and their total."""
        with self._db.unit_of_work() as s:
            org, ws = store.find(s, caller, ws_id)
            stmt = (
                select(Workspace)
                .join(RemoteStateConsumer, RemoteStateConsumer.consumer_id == Workspace.id)
                .where(
                    RemoteStateConsumer.workspace_id == ws.id,
                    authz.visible(
                        caller,
                        WORKSPACE_READ,
                        org.id,
                        workspace_id=Workspace.id.expression,
                        workspace_name=Workspace.name.expression,
                        dialect=s.get_bind().dialect.name,
                        project_id=Workspace.project_id.expression,
                    ),
                )
            )
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(stmt.order_by(Workspace.name).offset(page.offset).limit(page.size))
            return store.views(s, caller, org, list(rows)), total

    def add(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None:
        self._change(caller, ws_id, consumer_ids, "add")

    def remove(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None:
        self._change(caller, ws_id, consumer_ids, "remove")

    def replace(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None:
        self._change(caller, ws_id, consumer_ids, "replace")

    def _change(self, caller: Subject, ws_id: str, consumer_ids: list[str], how: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, ws = store.find(s, caller, ws_id)
            authz.require(
                caller,
                WORKSPACE_MANAGE,
                store.target(org, ws),
                doing="change the remote-state consumers of",
            )
            wanted = _checked_consumers(s, caller, org, ws, consumer_ids)
            if how == "replace":
                s.execute(
                    delete(RemoteStateConsumer).where(RemoteStateConsumer.workspace_id == ws.id)
                )
            if how == "remove":
                if wanted:
                    s.execute(
                        delete(RemoteStateConsumer).where(
                            RemoteStateConsumer.workspace_id == ws.id,
                            RemoteStateConsumer.consumer_id.in_(wanted),
                        )
                    )
            elif wanted:
                # Adding one already there is no error (HCP Terraform's behaviour), even when
                # concurrent requests add it: the primary key decides, nothing is raised.
                s.execute(
                    _insert(s)(RemoteStateConsumer)
                    .values([{"workspace_id": ws.id, "consumer_id": c} for c in wanted])
                    .on_conflict_do_nothing()
                )
            s.flush()
            s.commit()


def _insert(s: Session) -> Any:
    """The dialect's INSERT, which has ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL)."""
    # Imported here: the PostgreSQL dialect costs ~60 ms of a SQLite start (bench/startup.py).
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _checked_consumers(
    s: Session, caller: Subject, org: Organization, ws: Workspace, consumer_ids: list[str]
) -> list[str]:
    """The distinct consumer IDs, each a workspace of ``ws``'s organization the caller may
    read (one it may not read is answered as one that does not exist), never ``ws`` itself."""
    if len(consumer_ids) > MAX_CONSUMERS_PER_REQUEST:
        raise Invalid(
            f"at most {MAX_CONSUMERS_PER_REQUEST} consumers may be sent at once", pointer="/data"
        )
    wanted = list(dict.fromkeys(consumer_ids))
    rows = {
        w.id: w
        for w in s.scalars(
            select(Workspace).where(Workspace.id.in_(wanted), Workspace.organization_id == org.id)
        )
    }
    for i, consumer in enumerate(wanted):
        found = rows.get(consumer)
        if found is None or not authz.allowed(caller, WORKSPACE_READ, store.target(org, found)):
            raise Invalid(
                f"workspace {consumer!r} does not exist in organization {org.name!r}",
                pointer=f"/data/{i}",
            )
        if consumer == ws.id:
            raise Invalid(
                "a workspace cannot be its own remote-state consumer", pointer=f"/data/{i}"
            )
    return wanted
