"""Jobs, job tokens and log chunks (the job queue and the agent job protocol)

``jobs``: one per run phase that needs an executor (``queued → claimed → running →
finished | errored | canceled``), with its pool (NULL: the built-in workers), claim attempt
(fencing), lease and phase timeout; partial indexes on the queued jobs (what a claim scans)
and on held jobs' leases (what the sweep scans). ``job_tokens``: the keyed hashes of the
tokens issued at each claim. ``log_chunks``: a phase's log by byte offset. All cascade from
their run, phase or job (``cairn.runs.jobs_model``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("phase_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=True),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("cancel", sa.String(length=8), nullable=False),
        sa.Column("queued_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("timeout_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_jobs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["phase_id"],
            ["run_phases.id"],
            name=op.f("fk_jobs_phase_id_run_phases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_jobs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("phase_id", name=op.f("uq_jobs_phase_id")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_active_lease",
            ["lease_expires_at"],
            unique=False,
            sqlite_where=sa.text("status IN ('claimed', 'running')"),
            postgresql_where=sa.text("status IN ('claimed', 'running')"),
        )
        batch_op.create_index(batch_op.f("ix_jobs_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_jobs_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_queued",
            ["pool_id", "priority", "queued_at"],
            unique=False,
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_where=sa.text("status = 'queued'"),
        )
        batch_op.create_index(batch_op.f("ix_jobs_run_id"), ["run_id"], unique=False)

    op.create_table(
        "log_chunks",
        sa.Column("phase_id", sa.String(length=32), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["phase_id"],
            ["run_phases.id"],
            name=op.f("fk_log_chunks_phase_id_run_phases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("phase_id", "offset", name=op.f("pk_log_chunks")),
    )
    op.create_table(
        "job_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_tokens_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_job_tokens_token_hash")),
    )
    with op.batch_alter_table("job_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_tokens_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_tokens_job_id"))

    op.drop_table("job_tokens")
    op.drop_table("log_chunks")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_run_id"))
        batch_op.drop_index(
            "ix_jobs_queued",
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_where=sa.text("status = 'queued'"),
        )
        batch_op.drop_index(batch_op.f("ix_jobs_organization_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_agent_id"))
        batch_op.drop_index(
            "ix_jobs_active_lease",
            sqlite_where=sa.text("status IN ('claimed', 'running')"),
            postgresql_where=sa.text("status IN ('claimed', 'running')"),
        )

    op.drop_table("jobs")
