"""API tokens remember who created them

``api_tokens.created_by_id`` is the person whose token created the token (the TFE API's
``created-by`` relationship on user, organization and team tokens); ``ON DELETE SET NULL``.
Tokens from before, and those cairn makes itself (CAIRN_ADMIN_TOKEN, the bootstrap token),
have none.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_api_tokens_created_by_id_users"),
            "users",
            ["created_by_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_api_tokens_created_by_id_users"), type_="foreignkey"
        )
        batch_op.drop_column("created_by_id")
