"""Speculative-plan credentials: organizations' default and workspaces' own setting

``organizations.speculative_plan_credentials`` (``same`` | ``distinct_subject`` | ``none``,
default ``same``: HCP Terraform's behaviour) and ``workspaces.speculative_plan_credentials``
(NULL: the organization's default). What a speculative plan's workload-identity tokens look
like (``runs.credentials``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (on SQLite too: no table rebuild, which would cascade deletes through
    # the rows that reference these tables). Existing organizations get the default.
    op.add_column(
        "organizations",
        sa.Column(
            "speculative_plan_credentials",
            sa.String(length=24),
            nullable=False,
            server_default="same",
        ),
    )
    op.add_column(
        "workspaces",
        sa.Column("speculative_plan_credentials", sa.String(length=24), nullable=True),
    )


def downgrade() -> None:
    for table in ("workspaces", "organizations"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN speculative_plan_credentials")
        else:
            op.drop_column(table, "speculative_plan_credentials")
