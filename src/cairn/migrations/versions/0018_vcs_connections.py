"""VCS connections: OAuth clients, OAuth tokens, workspace VCS settings (issue 11)

``oauth_clients`` (``cairn.vcs.model``): an organization's VCS connections (TFE's OAuth
clients; cairn's ``kind`` says how tokens are obtained), secrets sealed. ``oauth_client_projects``:
the projects a connection that is not organization-scoped may be used in. ``oauth_tokens``: the
tokens cairn holds for a connection (sealed pair + ``generation``, status, the refresh lease; one
per installation for GitHub Apps, unique per (connection, installation)). ``vcs_connect_states``:
pending browser authorizations (hashed state, single use). All cascade from their connection
and organization. ``workspaces`` gains the ``vcs-repo`` settings and file triggers (plain ADD
COLUMNs with server defaults: existing workspaces get no repository, file triggers on, no
prefixes or patterns), and an index on (connection, repository) for webhook lookups.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORKSPACE_COLUMNS = (
    "vcs_oauth_token_id",
    "vcs_oauth_client_id",
    "vcs_identifier",
    "vcs_branch",
    "vcs_tags_regex",
    "vcs_ingress_submodules",
    "vcs_service_provider",
    "vcs_github_app_installation_id",
    "vcs_repository_http_url",
    "file_triggers_enabled",
    "trigger_prefixes",
    "trigger_patterns",
)


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("service_provider", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("http_url", sa.String(length=500), nullable=False),
        sa.Column("api_url", sa.String(length=500), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("app_id", sa.String(length=32), nullable=True),
        sa.Column("app_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("webhook_secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("organization_scoped", sa.Boolean(), nullable=False),
        sa.Column("allow_fork_plans", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_oauth_clients_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
    )
    op.create_index(op.f("ix_oauth_clients_organization_id"), "oauth_clients", ["organization_id"])
    op.create_table(
        "oauth_client_projects",
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_client_projects_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_oauth_client_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "oauth_client_id", "project_id", name=op.f("pk_oauth_client_projects")
        ),
    )
    op.create_index(
        op.f("ix_oauth_client_projects_project_id"), "oauth_client_projects", ["project_id"]
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("service_provider_user", sa.String(length=255), nullable=False),
        sa.Column("access_token_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("status_changed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_holder", sa.String(length=64), nullable=True),
        sa.Column("github_installation_id", sa.BigInteger(), nullable=True),
        sa.Column("ghain_id", sa.String(length=32), nullable=True),
        sa.Column("github_account", sa.String(length=255), nullable=True),
        sa.Column("github_account_type", sa.String(length=32), nullable=True),
        sa.Column("ssh_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_tokens_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_tokens")),
        sa.UniqueConstraint("ghain_id", name=op.f("uq_oauth_tokens_ghain_id")),
        sa.UniqueConstraint(
            "oauth_client_id",
            "github_installation_id",
            name=op.f("uq_oauth_tokens_oauth_client_id_github_installation_id"),
        ),
    )
    op.create_index(op.f("ix_oauth_tokens_oauth_client_id"), "oauth_tokens", ["oauth_client_id"])
    op.create_index(op.f("ix_oauth_tokens_organization_id"), "oauth_tokens", ["organization_id"])
    op.create_table(
        "vcs_connect_states",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("oauth_token_id", sa.String(length=32), nullable=True),
        sa.Column("state_hash", sa.String(length=64), nullable=True),
        sa.Column("browser_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_vcs_connect_states_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vcs_connect_states")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_vcs_connect_states_state_hash")),
    )
    op.create_index(
        op.f("ix_vcs_connect_states_oauth_client_id"), "vcs_connect_states", ["oauth_client_id"]
    )
    # Plain ADD COLUMNs (on SQLite too: no table rebuild, which would cascade deletes through
    # the rows that reference workspaces).
    add = op.add_column
    add("workspaces", sa.Column("vcs_oauth_token_id", sa.String(length=32), nullable=True))
    add("workspaces", sa.Column("vcs_oauth_client_id", sa.String(length=32), nullable=True))
    add("workspaces", sa.Column("vcs_identifier", sa.String(length=255), nullable=True))
    add("workspaces", sa.Column("vcs_branch", sa.String(length=255), nullable=True))
    add("workspaces", sa.Column("vcs_tags_regex", sa.String(length=255), nullable=True))
    add(
        "workspaces",
        sa.Column(
            "vcs_ingress_submodules", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
    )
    add("workspaces", sa.Column("vcs_service_provider", sa.String(length=32), nullable=True))
    add(
        "workspaces",
        sa.Column("vcs_github_app_installation_id", sa.String(length=32), nullable=True),
    )
    add("workspaces", sa.Column("vcs_repository_http_url", sa.String(length=500), nullable=True))
    add(
        "workspaces",
        sa.Column("file_triggers_enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    add("workspaces", sa.Column("trigger_prefixes", sa.JSON(), server_default="[]", nullable=False))
    add("workspaces", sa.Column("trigger_patterns", sa.JSON(), server_default="[]", nullable=False))
    op.create_index(
        "ix_workspaces_vcs_oauth_client_id_vcs_identifier",
        "workspaces",
        ["vcs_oauth_client_id", "vcs_identifier"],
    )
    op.create_index(op.f("ix_workspaces_vcs_oauth_token_id"), "workspaces", ["vcs_oauth_token_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_workspaces_vcs_oauth_token_id"), table_name="workspaces")
    op.drop_index("ix_workspaces_vcs_oauth_client_id_vcs_identifier", table_name="workspaces")
    sqlite = op.get_bind().dialect.name == "sqlite"
    for column in reversed(_WORKSPACE_COLUMNS):
        if sqlite:
            op.execute(f"ALTER TABLE workspaces DROP COLUMN {column}")
        else:
            op.drop_column("workspaces", column)
    op.drop_index(op.f("ix_vcs_connect_states_oauth_client_id"), table_name="vcs_connect_states")
    op.drop_table("vcs_connect_states")
    op.drop_index(op.f("ix_oauth_tokens_organization_id"), table_name="oauth_tokens")
    op.drop_index(op.f("ix_oauth_tokens_oauth_client_id"), table_name="oauth_tokens")
    op.drop_table("oauth_tokens")
    op.drop_index(op.f("ix_oauth_client_projects_project_id"), table_name="oauth_client_projects")
    op.drop_table("oauth_client_projects")
    op.drop_index(op.f("ix_oauth_clients_organization_id"), table_name="oauth_clients")
    op.drop_table("oauth_clients")
