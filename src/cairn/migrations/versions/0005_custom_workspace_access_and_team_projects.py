"""custom team-workspace access and team-project access

A team-workspace grant of access ``custom`` keeps its per-permission attributes (runs,
variables, state-versions, sentinel-mocks, workspace-locking, run-tasks) in new nullable
columns of ``grants``, and a team has one team-workspace access per workspace (a partial unique
index; of existing duplicates, which only repeated a grant, the oldest is kept);
``team_projects`` holds TFE team-project access (one per team and project), its project-level
and workspace-level attributes in columns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runs", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("variables", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("state_versions", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("sentinel_mocks", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("workspace_locking", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("run_tasks", sa.Boolean(), nullable=True))
    _drop_duplicate_team_workspaces()
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            "uq_grants_one_team_workspace",
            ["team_id", "workspace_id"],
            unique=True,
            sqlite_where=sa.text("kind = 'team-workspace'"),
            postgresql_where=sa.text("kind = 'team-workspace'"),
        )
    op.create_table(
        "team_projects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("access", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.String(length=8), nullable=False),
        sa.Column("teams", sa.String(length=8), nullable=False),
        sa.Column("variable_sets", sa.String(length=8), nullable=False),
        sa.Column("runs", sa.String(length=8), nullable=False),
        sa.Column("variables", sa.String(length=8), nullable=False),
        sa.Column("state_versions", sa.String(length=16), nullable=False),
        sa.Column("sentinel_mocks", sa.String(length=8), nullable=False),
        sa.Column("run_tasks", sa.Boolean(), nullable=False),
        sa.Column("ws_create", sa.Boolean(), nullable=False),
        sa.Column("ws_locking", sa.Boolean(), nullable=False),
        sa.Column("ws_move", sa.Boolean(), nullable=False),
        sa.Column("ws_delete", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_team_projects_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_team_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_projects_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_projects")),
        sa.UniqueConstraint(
            "team_id", "project_id", name=op.f("uq_team_projects_team_id_project_id")
        ),
    )
    with op.batch_alter_table("team_projects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_team_projects_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_team_projects_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_team_projects_team_id"), ["team_id"], unique=False)


def _drop_duplicate_team_workspaces() -> None:
    """Keep the oldest team-workspace access of each team and workspace (the others only
    repeated it: access is the union of grants)."""
    conn = op.get_bind()
    grants = sa.table(
        "grants",
        sa.column("id", sa.String),
        sa.column("team_id", sa.String),
        sa.column("workspace_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("created_at", UTCDateTime),
    )
    rows = conn.execute(
        sa.select(grants.c.id, grants.c.team_id, grants.c.workspace_id)
        .where(grants.c.kind == "team-workspace")
        .order_by(grants.c.created_at, grants.c.id)
    ).all()
    seen: set[tuple[str, str]] = set()
    for grant_id, team_id, workspace_id in rows:
        if (team_id, workspace_id) in seen:
            conn.execute(sa.delete(grants).where(grants.c.id == grant_id))
        seen.add((team_id, workspace_id))


def downgrade() -> None:
    with op.batch_alter_table("team_projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_team_projects_team_id"))
        batch_op.drop_index(batch_op.f("ix_team_projects_project_id"))
        batch_op.drop_index(batch_op.f("ix_team_projects_organization_id"))
    op.drop_table("team_projects")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_grants_one_team_workspace",
            sqlite_where=sa.text("kind = 'team-workspace'"),
            postgresql_where=sa.text("kind = 'team-workspace'"),
        )
        batch_op.drop_column("run_tasks")
        batch_op.drop_column("workspace_locking")
        batch_op.drop_column("sentinel_mocks")
        batch_op.drop_column("state_versions")
        batch_op.drop_column("variables")
        batch_op.drop_column("runs")
