"""State versions remember the run that wrote them

``state_versions.run_id``: the run whose apply (through its job token) created the version;
NULL for versions written by people and tokens. No foreign key: runs live above state, and a
deleted run leaves the history as it was.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild on SQLite).
    op.add_column("state_versions", sa.Column("run_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("state_versions", schema=None) as batch_op:
        batch_op.drop_column("run_id")
