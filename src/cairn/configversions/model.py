"""ConfigurationVersion rows.

A configuration version is ``pending`` from its creation until the one PUT to its upload URL
ends: ``uploaded`` when the ``.tar.gz`` was checked (``configversions.archive``), written to
the blob store and verified, all before the row flips; ``errored`` (with ``error_message``)
when the upload was refused or broke off. The upload URL is bound to ``upload_nonce``, which
the first PUT clears (single use). ``archived`` (bytes discarded) is HCP Terraform's fourth
status; nothing sets it yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

STATUSES = ("pending", "uploaded", "errored", "archived")
# HCP Terraform's source of a configuration version made through the API (pytfe, go-tfe,
# curl) and the CLI's (remote backend, cloud block).
SOURCE_API = "tfe-api"
SOURCES = (SOURCE_API, "terraform", "terraform+cloud")
# Sources of versions made from a commit by a VCS event (``webhooks.ingest``), as HCP names them.
VCS_SOURCES = ("github", "gitlab")


class ConfigurationVersion(Base):
    __tablename__ = "configuration_versions"
    __table_args__ = (
        Index("ix_configuration_versions_workspace_created", "workspace_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))  # pending | uploaded | errored | archived
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(32), default=SOURCE_API)
    speculative: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_queue_runs: Mapped[bool] = mapped_column(Boolean, default=True)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    # The .tar.gz in the blob store, once uploaded (and verified).
    blob_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Random value the upload URL is bound to; cleared by the first PUT (single use).
    upload_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # status -> when it was entered ("uploaded-at", "errored-at", …), ISO 8601.
    status_timestamps: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ConfigurationVersionIngress(Base):
    """Where a configuration version made from a commit came from (HCP's *ingress attributes*:
    ``GET /configuration-versions/:id/ingress-attributes``), written by ``webhooks.ingest`` with
    the version.

    ``(workspace_id, commit_sha, speculative)`` is unique: a commit starts at most one run of
    each kind per workspace (HCP: "a commit SHA that already produced a run is not processed
    again"), which also makes a redelivered or re-claimed webhook create nothing the second
    time, whichever replica handles it. ``(oauth_client_id, repo, commit_sha)`` finds the runs a
    commit status aggregates. The connection is named without a foreign key: connections live
    on the ``vcs`` floor, which deletes a connection's workspaces' links itself."""

    __tablename__ = "configuration_version_ingress"
    __table_args__ = (
        UniqueConstraint("workspace_id", "commit_sha", "speculative"),
        Index("ix_configuration_version_ingress_commit", "oauth_client_id", "repo", "commit_sha"),
    )
    configuration_version_id: Mapped[str] = mapped_column(
        ForeignKey("configuration_versions.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    oauth_client_id: Mapped[str] = mapped_column(String(32))
    oauth_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    repo: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str] = mapped_column(String(64))
    speculative: Mapped[bool] = mapped_column(Boolean, default=False)
    # HCP's attribute names (branch, clone-url, commit-message, commit-sha, …), as served.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
