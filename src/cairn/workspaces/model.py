"""Workspace, Tag and their link table.

The lock lives on the workspace row (``locked_by_id``); taking it is one conditional UPDATE
(``… WHERE locked_by_id IS NULL``), so of any number of concurrent callers on any number of
replicas exactly one wins.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(90))
    description: Mapped[str] = mapped_column(String(1000), default="")
    execution_mode: Mapped[str] = mapped_column(String(16), default="local")
    terraform_version: Mapped[str] = mapped_column(String(32), default="latest")
    auto_apply: Mapped[bool] = mapped_column(Boolean, default=False)
    working_directory: Mapped[str] = mapped_column(String(500), default="")
    allow_destroy_plan: Mapped[bool] = mapped_column(Boolean, default=True)
    global_remote_state: Mapped[bool] = mapped_column(Boolean, default=False)
    speculative_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    queue_all_runs: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(32), default="tfe-api")
    # The lock. kind is the JSON:API type of the holder ("users", later "runs"/"teams").
    locked_by_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    locked_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lock_reason: Mapped[str] = mapped_column(String(500), default="")
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    current_state_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def locked(self) -> bool:
        return self.locked_by_id is not None


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
