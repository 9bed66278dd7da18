"""Configuration versions

``configuration_versions``: the uploaded Terraform configurations (``.tar.gz`` in the blob
store) of a workspace, ``pending`` until their one upload ends (``uploaded`` / ``errored``);
``ON DELETE CASCADE`` with the workspace (``cairn.configversions``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configuration_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("speculative", sa.Boolean(), nullable=False),
        sa.Column("auto_queue_runs", sa.Boolean(), nullable=False),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("upload_nonce", sa.String(length=64), nullable=True),
        sa.Column("status_timestamps", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_configuration_versions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_configuration_versions")),
    )
    with op.batch_alter_table("configuration_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_configuration_versions_workspace_id"), ["workspace_id"], unique=False
        )
        batch_op.create_index(
            "ix_configuration_versions_workspace_created",
            ["workspace_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("configuration_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_configuration_versions_workspace_created")
        batch_op.drop_index(batch_op.f("ix_configuration_versions_workspace_id"))
    op.drop_table("configuration_versions")
