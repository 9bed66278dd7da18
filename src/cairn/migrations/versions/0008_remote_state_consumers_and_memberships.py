"""Remote-state consumers of workspaces; organization memberships

``workspace_remote_state_consumers`` (workspace, consumer): the workspaces of the same
organization that may read a workspace's state through their runs' tokens when its
``global-remote-state`` is off (``cairn.workspaces.consumers``). Both ends ``ON DELETE
CASCADE``.

``organization_memberships``: pending invitations (``user_id`` NULL, by email; one per
organization and email) and members invited while in no team (one row per organization and
person); team members need no row (``cairn.teams.memberships``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_remote_state_consumers",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("consumer_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["consumer_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_remote_state_consumers_consumer_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_remote_state_consumers_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "consumer_id", name=op.f("pk_workspace_remote_state_consumers")
        ),
    )
    with op.batch_alter_table("workspace_remote_state_consumers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workspace_remote_state_consumers_consumer_id"),
            ["consumer_id"],
            unique=False,
        )

    op.create_table(
        "organization_memberships",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("team_ids", sa.String(length=4000), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_memberships_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_organization_memberships_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_memberships")),
    )
    with op.batch_alter_table("organization_memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organization_memberships_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            "uq_organization_memberships_user", ["organization_id", "user_id"], unique=True
        )
        batch_op.create_index(
            "uq_organization_memberships_pending_email",
            ["organization_id", "email"],
            unique=True,
            sqlite_where=sa.text("user_id IS NULL"),
            postgresql_where=sa.text("user_id IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("organization_memberships", schema=None) as batch_op:
        batch_op.drop_index("uq_organization_memberships_pending_email")
        batch_op.drop_index("uq_organization_memberships_user")
        batch_op.drop_index(batch_op.f("ix_organization_memberships_user_id"))
    op.drop_table("organization_memberships")
    with op.batch_alter_table("workspace_remote_state_consumers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_remote_state_consumers_consumer_id"))
    op.drop_table("workspace_remote_state_consumers")
