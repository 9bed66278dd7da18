"""State versions remember their file format

``state_versions.state_format``: the state file's ``version`` (3 for Terraform 0.11 and
earlier, 4 after), read when the version is finalized, so the API reports ``state-version`` as
uploaded. NULL while pending and for versions stored before this revision (the API reports 4
for them, as it did for every version before).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild on SQLite).
    op.add_column("state_versions", sa.Column("state_format", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("state_versions", schema=None) as batch_op:
        batch_op.drop_column("state_format")
