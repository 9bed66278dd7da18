"""Workspace, Tag and their link table, and the lock rules.

The lock lives on the workspace row (``locked_by_kind`` / ``locked_by_id``: a ``Holder``, a
user today, a run later). The rules are methods of ``Workspace`` that decide on the row as read
(``enlock``: only a free lock is taken; ``unlock``: only by its holder, unless forced) and
return the ``LockChange`` to write; ``workspaces.locks.write_lock`` writes it as one
conditional UPDATE (``… WHERE`` the lock is still as read), so of any number of concurrent
callers on any number of replicas exactly one wins, and a lost race changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.authz.subject import Holder
from cairn.db.base import Base, UTCDateTime


class LockRefused(Exception):
    """A lock rule refused a change (raised by ``Workspace.enlock`` / ``unlock``). Not an API
    error: the caller turns it into a Conflict naming the holder. ``why`` is ``"locked"`` (the
    lock is taken), ``"unlocked"`` (there is no lock), ``"not-holder"`` (someone else holds it).
    """

    def __init__(self, why: Literal["locked", "unlocked", "not-holder"]) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class LockChange:
    """A lock transition to write: from ``expected`` (None: free) to ``holder`` (None: free)."""

    expected: Holder | None
    holder: Holder | None


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        # What a webhook delivery looks up: the workspaces on (connection, repository).
        Index(
            "ix_workspaces_vcs_oauth_client_id_vcs_identifier",
            "vcs_oauth_client_id",
            "vcs_identifier",
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(90))
    description: Mapped[str] = mapped_column(String(1000), default="")
    execution_mode: Mapped[str] = mapped_column(String(16), default="local")
    # The agent pool that runs this workspace's jobs (``execution-mode: agent`` only). A plain
    # foreign key: a pool still used by workspaces cannot be deleted (``agents`` refuses it
    # with a 422 first; agents own the table and check the setting through WorkspaceHooks).
    agent_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("agent_pools.id"), nullable=True, index=True
    )
    terraform_version: Mapped[str] = mapped_column(String(32), default="latest")
    auto_apply: Mapped[bool] = mapped_column(Boolean, default=False)
    working_directory: Mapped[str] = mapped_column(String(500), default="")
    allow_destroy_plan: Mapped[bool] = mapped_column(Boolean, default=True)
    global_remote_state: Mapped[bool] = mapped_column(Boolean, default=False)
    speculative_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # ``speculative-plan-credentials`` (``organizations.model.SPECULATIVE_PLAN_CREDENTIALS``);
    # NULL: the organization's default.
    speculative_plan_credentials: Mapped[str | None] = mapped_column(String(24), nullable=True)
    queue_all_runs: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(32), default="tfe-api")
    # The lock: its holder's JSON:API type (authz.subject.USER_TYPE, later runs) and ID.
    locked_by_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    locked_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lock_reason: Mapped[str] = mapped_column(String(500), default="")
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A lock taken through Terraform's ``http`` backend (``httpstate``) keeps the client's lock
    # ID (checked on ``?ID=`` and unlock) and lock info (answered with 423 to others); every
    # other lock change clears them (``locks.write_lock``).
    lock_client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lock_info: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    current_state_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The run the workspace's queue is at (``runs.scheduler``): the active run, or the first
    # pending one; kept after it finished. No foreign key (runs sit above workspaces).
    current_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_count: Mapped[int] = mapped_column(Integer, default=0)
    # VCS settings (``vcs-repo``; checked and completed by ``vcs.workspace_settings``). The
    # token has no foreign key: ``vcs`` clears it from workspaces before deleting a token.
    vcs_oauth_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    vcs_oauth_client_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    vcs_identifier: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vcs_branch: Mapped[str | None] = mapped_column(String(255), nullable=True)  # None: default
    vcs_tags_regex: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vcs_ingress_submodules: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    vcs_service_provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The ``ghain-…`` ID when the repository was connected through a GitHub App installation
    # (rendered as ``github-app-installation-id``; ``vcs_oauth_token_id`` holds its token).
    vcs_github_app_installation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    vcs_repository_http_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    file_triggers_enabled: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    trigger_prefixes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    trigger_patterns: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def locked(self) -> bool:
        return self.locked_by_id is not None

    @property
    def holder(self) -> Holder | None:
        """Who holds the lock, or None."""
        if self.locked_by_id is None:
            return None
        return Holder(self.locked_by_kind or "", self.locked_by_id)

    def held_by(self, holder: Holder) -> bool:
        return self.holder == holder

    def enlock(self, holder: Holder) -> LockChange:
        """Rule: a lock is taken only when free (not even again by its holder, as in TFE)."""
        if self.locked:
            raise LockRefused("locked")
        return LockChange(expected=None, holder=holder)

    def unlock(self, holder: Holder, *, force: bool = False) -> LockChange:
        """Rule: only the holder releases the lock; ``force`` (an admin) releases anyone's."""
        current = self.holder
        if current is None:
            raise LockRefused("unlocked")
        if not force and current != holder:
            raise LockRefused("not-holder")
        return LockChange(expected=current, holder=None)

    @staticmethod
    def lock_is(holder: Holder | None) -> ColumnElement[bool]:
        """SQL: the lock is (still) ``holder`` (None: free). What every write that depends on
        the lock is conditioned on (lock changes, state uploads, deletion)."""
        if holder is None:
            return Workspace.locked_by_id.is_(None)
        return and_(Workspace.locked_by_kind == holder.kind, Workspace.locked_by_id == holder.id)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkspaceTag(Base):
    __tablename__ = "workspace_tags"
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[str] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )
