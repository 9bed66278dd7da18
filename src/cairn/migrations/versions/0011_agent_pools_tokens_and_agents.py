"""Agent pools, their allowed workspaces and tokens, agents; workspaces.agent_pool_id

``agent_pools`` (one name per organization), ``agent_pool_allowed_workspaces`` (the
workspaces a pool that is not organization-scoped allows; both ends ``ON DELETE CASCADE``),
``agent_tokens`` (a pool's tokens as keyed hashes), ``agents`` (registered agent processes;
``pool_id`` NULL for the server's built-in workers; the session token as a keyed hash), and
``workspaces.agent_pool_id`` (a plain foreign key: a pool used by workspaces is not deleted).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WS_FK = "fk_workspaces_agent_pool_id_agent_pools"
_WS_IX = "ix_workspaces_agent_pool_id"


def upgrade() -> None:
    op.create_table(
        "agent_pools",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=90), nullable=False),
        sa.Column("organization_scoped", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_agent_pools_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_pools")),
        sa.UniqueConstraint(
            "organization_id", "name", name=op.f("uq_agent_pools_organization_id_name")
        ),
    )
    with op.batch_alter_table("agent_pools", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_pools_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "agent_pool_allowed_workspaces",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["agent_pools.id"],
            name=op.f("fk_agent_pool_allowed_workspaces_pool_id_agent_pools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_agent_pool_allowed_workspaces_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "pool_id", "workspace_id", name=op.f("pk_agent_pool_allowed_workspaces")
        ),
    )
    with op.batch_alter_table("agent_pool_allowed_workspaces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_pool_allowed_workspaces_workspace_id"),
            ["workspace_id"],
            unique=False,
        )

    op.create_table(
        "agent_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_agent_tokens_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["agent_pools.id"],
            name=op.f("fk_agent_tokens_pool_id_agent_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agent_tokens_token_hash")),
    )
    with op.batch_alter_table("agent_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_tokens_pool_id"), ["pool_id"], unique=False)

    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=True),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("last_ping_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["agent_pools.id"],
            name=op.f("fk_agents_pool_id_agent_pools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["agent_tokens.id"],
            name=op.f("fk_agents_token_id_agent_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("session_hash", name=op.f("uq_agents_session_hash")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index("ix_agents_pool_id_status", ["pool_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_agents_token_id"), ["token_id"], unique=False)

    _add_workspace_pool()


def _add_workspace_pool() -> None:
    """``workspaces.agent_pool_id`` with its foreign key. On SQLite not through a batch: a
    batch recreates ``workspaces``, and dropping the old table (foreign keys are on) would
    cascade to every row that references a workspace (state versions, tags, …). SQLite adds
    a nullable column with a REFERENCES clause in place."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE workspaces ADD COLUMN agent_pool_id VARCHAR(32) "
            f"CONSTRAINT {_WS_FK} REFERENCES agent_pools (id)"
        )
    else:
        op.add_column("workspaces", sa.Column("agent_pool_id", sa.String(length=32)))
        op.create_foreign_key(_WS_FK, "workspaces", "agent_pools", ["agent_pool_id"], ["id"])
    op.create_index(_WS_IX, "workspaces", ["agent_pool_id"], unique=False)


def downgrade() -> None:
    op.drop_index(_WS_IX, table_name="workspaces")
    if op.get_bind().dialect.name == "sqlite":  # in place, for the reason given above
        op.execute("ALTER TABLE workspaces DROP COLUMN agent_pool_id")
    else:
        op.drop_constraint(_WS_FK, "workspaces", type_="foreignkey")
        op.drop_column("workspaces", "agent_pool_id")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_token_id"))
        batch_op.drop_index("ix_agents_pool_id_status")
    op.drop_table("agents")
    with op.batch_alter_table("agent_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_tokens_pool_id"))
    op.drop_table("agent_tokens")
    with op.batch_alter_table("agent_pool_allowed_workspaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_pool_allowed_workspaces_workspace_id"))
    op.drop_table("agent_pool_allowed_workspaces")
    with op.batch_alter_table("agent_pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_pools_organization_id"))
    op.drop_table("agent_pools")
