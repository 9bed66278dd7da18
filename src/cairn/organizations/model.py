"""Organization and Project rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

DEFAULT_PROJECT = "Default Project"
# What a speculative plan's workload-identity tokens look like (``runs.credentials``): ``same``
# as a plan's (HCP Terraform's behaviour), a ``distinct_subject`` (``run_phase:speculative_plan``
# in ``sub`` and ``terraform_run_phase``), or ``none`` (no tokens; a plan that asks fails).
SPECULATIVE_PLAN_CREDENTIALS = ("same", "distinct_subject", "none")


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    default_execution_mode: Mapped[str] = mapped_column(String(16), default="local")
    # The default of its workspaces' ``speculative-plan-credentials`` (one of
    # SPECULATIVE_PLAN_CREDENTIALS).
    speculative_plan_credentials: Mapped[str] = mapped_column(
        String(24), default="same", server_default="same"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
