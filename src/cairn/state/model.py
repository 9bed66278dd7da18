"""StateVersion and StateVersionOutput rows.

A version is ``pending`` while its bytes are being uploaded (two-step hosted upload) and
``finalized`` once its blob is written, verified and the workspace points at it. A partial
unique index keeps finalized serials unique per workspace.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime, partial_index


class StateVersion(Base):
    __tablename__ = "state_versions"
    __table_args__ = (
        partial_index(
            "uq_state_versions_finalized_serial",
            "workspace_id",
            "serial",
            unique=True,
            where="status = 'finalized'",
        ),
        Index("ix_state_versions_workspace_created", "workspace_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    serial: Mapped[int] = mapped_column(BigInteger)  # Terraform's serial is a uint64
    lineage: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # pending | finalized | discarded
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    json_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    json_size: Mapped[int] = mapped_column(BigInteger, default=0)
    terraform_version: Mapped[str] = mapped_column(String(32), default="")
    # The file's format (its ``version``: 3 for Terraform 0.11 and earlier, 4 after), read
    # from the file when the version is finalized, so the API reports ``state-version`` as
    # uploaded. NULL while pending and for versions stored before migration 0017 (reported
    # as 4, what cairn answered for every version until then).
    state_format: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # -1 until counted after commit (HCP Terraform's "resources-processed").
    resource_count: Mapped[int] = mapped_column(Integer, default=-1)
    # Random values the upload URLs are bound to; cleared when used (single-use URLs).
    upload_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    json_upload_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rolled_back_from_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The run whose apply wrote it (through its job token); None for people and tokens.
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StateVersionOutput(Base):
    __tablename__ = "state_version_outputs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state_version_id: Mapped[str] = mapped_column(
        ForeignKey("state_versions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    type_json: Mapped[str] = mapped_column(Text)  # cty type as JSON ("string", ["list","string"])
    value_json: Mapped[str] = mapped_column(Text)
