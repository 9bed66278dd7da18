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

from cairn.db.base import Base, UTCDateTime, partial_index


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
    # One TFE team-workspace access per team and workspace (the database decides).
    __table_args__ = (
        partial_index(
            "uq_grants_one_team_workspace",
            "team_id",
            "workspace_id",
            unique=True,
            where="kind = 'team-workspace'",
        ),
    )
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
    # TFE custom workspace access (role "custom"): None for every other role, whose
    # attributes follow from the level (authz.roles.FIXED_WORKSPACE_ACCESS).
    runs: Mapped[str | None] = mapped_column(String(8), nullable=True)
    variables: Mapped[str | None] = mapped_column(String(8), nullable=True)
    state_versions: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sentinel_mocks: Mapped[str | None] = mapped_column(String(8), nullable=True)
    workspace_locking: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    run_tasks: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class TeamProject(Base):
    """TFE team-project access: a team's access level on one project and every workspace in
    it (one per team and project). The attributes are stored for every level (for the fixed
    ones, as ``authz.roles.FIXED_PROJECT_ACCESS`` gives them)."""

    __tablename__ = "team_projects"
    __table_args__ = (UniqueConstraint("team_id", "project_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    access: Mapped[str] = mapped_column(String(16))  # read|write|maintain|admin|custom
    settings: Mapped[str] = mapped_column(String(8))
    teams: Mapped[str] = mapped_column(String(8))
    variable_sets: Mapped[str] = mapped_column(String(8))
    # On every workspace of the project (the ws_* switches: create, lock, move, delete).
    runs: Mapped[str] = mapped_column(String(8))
    variables: Mapped[str] = mapped_column(String(8))
    state_versions: Mapped[str] = mapped_column(String(16))
    sentinel_mocks: Mapped[str] = mapped_column(String(8))
    run_tasks: Mapped[bool] = mapped_column(Boolean)
    ws_create: Mapped[bool] = mapped_column(Boolean)
    ws_locking: Mapped[bool] = mapped_column(Boolean)
    ws_move: Mapped[bool] = mapped_column(Boolean)
    ws_delete: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
