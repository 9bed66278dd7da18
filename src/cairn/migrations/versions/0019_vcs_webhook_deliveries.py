"""VCS webhook deliveries, the ingest queue and commit statuses (issue 11)

``vcs_deliveries`` (``cairn.webhooks.model``): one per webhook a connection received, verified
and stored raw (``queued → processing → done | failed``, or ``ignored``), unique per
(connection, delivery key) so a redelivery is the same row; partial indexes on the queued
deliveries (what a claim scans) and on held ones' leases. ``vcs_repo_hooks``: the webhook cairn
registers on the forge per (connection, repository), with the forge's hook ID or the error.
Both cascade from their connection and organization.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ---- vcs-hooks: deliveries and repo hooks (webhooks/model.py) ----------------------------
    op.create_table(
        "vcs_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("delivery_key", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=8), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("not_before", UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=500), nullable=True),
        sa.Column("processed_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_vcs_deliveries_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_vcs_deliveries_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vcs_deliveries")),
        sa.UniqueConstraint(
            "oauth_client_id",
            "delivery_key",
            name=op.f("uq_vcs_deliveries_oauth_client_id_delivery_key"),
        ),
    )
    with op.batch_alter_table("vcs_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vcs_deliveries_oauth_client_id"), ["oauth_client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_vcs_deliveries_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_vcs_deliveries_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(
            "ix_vcs_deliveries_queued",
            ["received_at"],
            unique=False,
            sqlite_where=sa.text("state = 'queued'"),
            postgresql_where=sa.text("state = 'queued'"),
        )
        batch_op.create_index(
            "ix_vcs_deliveries_processing",
            ["lease_until"],
            unique=False,
            sqlite_where=sa.text("state = 'processing'"),
            postgresql_where=sa.text("state = 'processing'"),
        )

    op.create_table(
        "vcs_repo_hooks",
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("oauth_token_id", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("forge_hook_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_vcs_repo_hooks_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_vcs_repo_hooks_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("oauth_client_id", "identifier", name=op.f("pk_vcs_repo_hooks")),
    )
    with op.batch_alter_table("vcs_repo_hooks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vcs_repo_hooks_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            "ix_vcs_repo_hooks_due",
            ["not_before"],
            unique=False,
            sqlite_where=sa.text("state IN ('pending', 'failed')"),
            postgresql_where=sa.text("state IN ('pending', 'failed')"),
        )
    # ---- end of vcs-hooks' tables ------------------------------------------------------------

    # ---- vcs-ingest: ingress attributes, commit archives, commit statuses --------------------
    # configuration_version_ingress (configversions/model.py): the commit a configuration
    # version was made from; unique (workspace, commit, speculative) makes a redelivered
    # webhook start nothing twice. vcs_commit_archives (webhooks/archives.py): a commit's
    # re-packed archive in the blob store, fetched once per (connection, repo, commit).
    # vcs_statuses (webhooks/statuses.py): the aggregated commit status outbox.
    op.create_table(
        "configuration_version_ingress",
        sa.Column("configuration_version_id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("oauth_token_id", sa.String(length=32), nullable=True),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("speculative", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_version_id"],
            ["configuration_versions.id"],
            name=op.f(
                "fk_configuration_version_ingress_configuration_version_id_configuration_versions"
            ),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_configuration_version_ingress_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "configuration_version_id", name=op.f("pk_configuration_version_ingress")
        ),
        sa.UniqueConstraint(
            "workspace_id",
            "commit_sha",
            "speculative",
            name=op.f("uq_configuration_version_ingress_workspace_id_commit_sha_speculative"),
        ),
    )
    op.create_index(
        "ix_configuration_version_ingress_commit",
        "configuration_version_ingress",
        ["oauth_client_id", "repo", "commit_sha"],
        unique=False,
    )
    op.create_table(
        "vcs_commit_archives",
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_vcs_commit_archives_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "oauth_client_id", "repo", "sha", name=op.f("pk_vcs_commit_archives")
        ),
    )
    op.create_index(
        op.f("ix_vcs_commit_archives_blob_sha256"),
        "vcs_commit_archives",
        ["blob_sha256"],
        unique=False,
    )
    op.create_table(
        "vcs_statuses",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("oauth_client_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("oauth_token_id", sa.String(length=32), nullable=True),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("context", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=140), nullable=False),
        sa.Column("target_url", sa.String(length=1000), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("posted_version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["oauth_client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_vcs_statuses_oauth_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_vcs_statuses_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vcs_statuses")),
        sa.UniqueConstraint(
            "oauth_client_id", "repo", "sha", name=op.f("uq_vcs_statuses_oauth_client_id_repo_sha")
        ),
    )
    op.create_index(
        op.f("ix_vcs_statuses_oauth_client_id"), "vcs_statuses", ["oauth_client_id"], unique=False
    )
    op.create_index(
        op.f("ix_vcs_statuses_organization_id"), "vcs_statuses", ["organization_id"], unique=False
    )
    op.create_index(
        "ix_vcs_statuses_due",
        "vcs_statuses",
        ["not_before"],
        unique=False,
        sqlite_where=sa.text("posted_version < version"),
        postgresql_where=sa.text("posted_version < version"),
    )
    # ---- end of vcs-ingest's tables ----------------------------------------------------------


def downgrade() -> None:
    # ---- vcs-ingest --------------------------------------------------------------------------
    op.drop_index(
        "ix_vcs_statuses_due",
        table_name="vcs_statuses",
        sqlite_where=sa.text("posted_version < version"),
        postgresql_where=sa.text("posted_version < version"),
    )
    op.drop_index(op.f("ix_vcs_statuses_organization_id"), table_name="vcs_statuses")
    op.drop_index(op.f("ix_vcs_statuses_oauth_client_id"), table_name="vcs_statuses")
    op.drop_table("vcs_statuses")
    op.drop_index(op.f("ix_vcs_commit_archives_blob_sha256"), table_name="vcs_commit_archives")
    op.drop_table("vcs_commit_archives")
    op.drop_index(
        "ix_configuration_version_ingress_commit", table_name="configuration_version_ingress"
    )
    op.drop_table("configuration_version_ingress")
    # ---- end of vcs-ingest -------------------------------------------------------------------
    # ---- vcs-hooks ---------------------------------------------------------------------------
    with op.batch_alter_table("vcs_repo_hooks", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_vcs_repo_hooks_due",
            sqlite_where=sa.text("state IN ('pending', 'failed')"),
            postgresql_where=sa.text("state IN ('pending', 'failed')"),
        )
        batch_op.drop_index(batch_op.f("ix_vcs_repo_hooks_organization_id"))
    op.drop_table("vcs_repo_hooks")
    with op.batch_alter_table("vcs_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_vcs_deliveries_processing",
            sqlite_where=sa.text("state = 'processing'"),
            postgresql_where=sa.text("state = 'processing'"),
        )
        batch_op.drop_index(
            "ix_vcs_deliveries_queued",
            sqlite_where=sa.text("state = 'queued'"),
            postgresql_where=sa.text("state = 'queued'"),
        )
        batch_op.drop_index(batch_op.f("ix_vcs_deliveries_received_at"))
        batch_op.drop_index(batch_op.f("ix_vcs_deliveries_organization_id"))
        batch_op.drop_index(batch_op.f("ix_vcs_deliveries_oauth_client_id"))
    op.drop_table("vcs_deliveries")
    # ---- end of vcs-hooks --------------------------------------------------------------------
