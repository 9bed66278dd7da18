"""Runs, their plan and apply phases and events; workspaces.current_run_id

``runs`` (one per queued run; ``position`` orders a workspace's queue, unique per
workspace), ``run_phases`` (a run's plan and apply, one of each), ``run_events`` (what happened
to a run, and who did it), all ``ON DELETE CASCADE`` from their workspace or run, and
``workspaces.current_run_id`` (the run the workspace's queue is at; no foreign key: runs sit
above workspaces).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("configuration_version_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=2000), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("trigger_reason", sa.String(length=40), nullable=False),
        sa.Column("is_destroy", sa.Boolean(), nullable=False),
        sa.Column("refresh", sa.Boolean(), nullable=False),
        sa.Column("refresh_only", sa.Boolean(), nullable=False),
        sa.Column("plan_only", sa.Boolean(), nullable=False),
        sa.Column("speculative", sa.Boolean(), nullable=False),
        sa.Column("auto_apply", sa.Boolean(), nullable=False),
        sa.Column("allow_empty_apply", sa.Boolean(), nullable=False),
        sa.Column("target_addrs", sa.JSON(), nullable=False),
        sa.Column("replace_addrs", sa.JSON(), nullable=False),
        sa.Column("execution_mode", sa.String(length=16), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=True),
        sa.Column("created_by_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_timestamps", sa.JSON(), nullable=False),
        sa.Column("canceled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("force_cancel_available_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("has_changes", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("terraform_version", sa.String(length=32), nullable=False),
        sa.Column("error_message", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_runs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_runs_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("workspace_id", "position", name=op.f("uq_runs_workspace_id_position")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_runs_configuration_version_id"), ["configuration_version_id"]
        )
        batch_op.create_index("ix_runs_organization_created", ["organization_id", "created_at"])
        batch_op.create_index("ix_runs_workspace_status", ["workspace_id", "status"])

    op.create_table(
        "run_phases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resource_additions", sa.Integer(), nullable=False),
        sa.Column("resource_changes", sa.Integer(), nullable=False),
        sa.Column("resource_destructions", sa.Integer(), nullable=False),
        sa.Column("resource_imports", sa.Integer(), nullable=False),
        sa.Column("has_changes", sa.Boolean(), nullable=False),
        sa.Column("log_size", sa.Integer(), nullable=False),
        sa.Column("status_timestamps", sa.JSON(), nullable=False),
        sa.Column("plan_file_sha256", sa.String(length=64), nullable=True),
        sa.Column("json_plan_sha256", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_phases_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_phases")),
        sa.UniqueConstraint("run_id", "kind", name=op.f("uq_run_phases_run_id_kind")),
    )

    op.create_table(
        "run_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("actor_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
    )
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.create_index("ix_run_events_run_seq", ["run_id", "seq"])

    # A plain nullable column: on SQLite an ADD COLUMN, no table rebuild.
    op.add_column("workspaces", sa.Column("current_run_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE workspaces DROP COLUMN current_run_id")
    else:
        op.drop_column("workspaces", "current_run_id")
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.drop_index("ix_run_events_run_seq")
    op.drop_table("run_events")
    op.drop_table("run_phases")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_workspace_status")
        batch_op.drop_index("ix_runs_organization_created")
        batch_op.drop_index(batch_op.f("ix_runs_configuration_version_id"))
    op.drop_table("runs")
