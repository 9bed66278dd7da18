"""Teams, memberships, roles and grants.

A grant binds a team or a user to a role on the workspaces of one organization, chosen by
workspace ID (TFE team-workspace access) or by name pattern (cairn's own grants, e.g.
``prod-*``). Roles bundle permissions; built-in roles mirror TFE's access levels
(read, plan, write, admin) and ``owners`` for organization management.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    # Members of this IdP group (the groups claim) are made members at each login.
    idp_group: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Organization-level rights of every member (the owners team has org:manage).
    organization_access: Mapped[str] = mapped_column(String(500), default="")
    visibility: Mapped[str] = mapped_column(String(16), default="secret")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TeamMembership(Base):
    __tablename__ = "team_memberships"
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | idp


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    permissions: Mapped[str] = mapped_column(String(500))  # comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=True, index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    role: Mapped[str] = mapped_column(String(64))  # built-in (read|plan|write|admin) or a Role
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=True, index=True
    )
    workspace_pattern: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # "team-workspace" rows are TFE team-workspace access (tws-… ids); "grant" rows are cairn's.
    kind: Mapped[str] = mapped_column(String(16), default="grant")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
