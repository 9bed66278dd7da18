"""Which object key of a bucket (an organization) names which workspace.

A row is written the first time a state object is put under a key (``s3api.keys`` derives the
workspace's name from the key); from then on the key reaches that workspace, and listing the
bucket lists the keys of these rows. The primary key (organization, key) decides a race
between two first writes: one row wins, the other request re-reads it. Rows go with their
organization or workspace (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

MAX_KEY = 1024  # S3's limit on an object key, in UTF-8 bytes


class S3Object(Base):
    __tablename__ = "s3_objects"

    organization_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(MAX_KEY), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(timezone=True))
