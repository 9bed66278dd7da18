"""Terraform http backend: the lock's client ID and lock info (issue 12)

``workspaces.lock_client_id`` and ``workspaces.lock_info``: a lock taken through Terraform's
``http`` backend (``/api/cairn/v1/http-state/…``) keeps the ID Terraform gave it (checked on
``POST ?ID=`` and on unlock) and the lock info JSON it sent (answered with 423 to anyone else
who tries to lock). Every other lock change clears them. NULL for every existing lock.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite).
    op.add_column("workspaces", sa.Column("lock_client_id", sa.String(length=64), nullable=True))
    op.add_column("workspaces", sa.Column("lock_info", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_column("lock_info")
        batch_op.drop_column("lock_client_id")
