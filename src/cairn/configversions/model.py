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

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

STATUSES = ("pending", "uploaded", "errored", "archived")
# HCP Terraform's source of a configuration version made through the API (pytfe, go-tfe,
# curl) and the CLI's (remote backend, cloud block).
SOURCE_API = "tfe-api"
SOURCES = (SOURCE_API, "terraform", "terraform+cloud")


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
