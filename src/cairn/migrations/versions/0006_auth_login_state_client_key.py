"""pending IdP logins remember who asked, so they are bounded per address

``login_states.client_key`` holds the client address (an IPv6 client's /64) that started a
login at the IdP; ``GET /oauth/authorization`` refuses a new one (429) while that address has
``CAIRN_LOGIN_PENDING_PER_ADDRESS`` pending (finding L3). Rows from before have no key and are
counted for nobody; they expire within 10 minutes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_login_states_client_key_expires_at", ["client_key", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("login_states", schema=None) as batch_op:
        batch_op.drop_index("ix_login_states_client_key_expires_at")
        batch_op.drop_column("client_key")
