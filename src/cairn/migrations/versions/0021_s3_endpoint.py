"""S3-compatible endpoint: which object key names which workspace (issue 12)

``s3_objects`` (``cairn.s3api.model``): one row per (organization, object key) that a state
was put under through the S3 endpoint, naming its workspace; listing a bucket lists these
keys. The primary key decides a race between two first writes. Both foreign keys cascade.
Credentials themselves are stateless (nothing stored).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "s3_objects",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_s3_objects_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_s3_objects_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "key", name=op.f("pk_s3_objects")),
    )
    with op.batch_alter_table("s3_objects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_s3_objects_workspace_id"), ["workspace_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("s3_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_s3_objects_workspace_id"))
    op.drop_table("s3_objects")
