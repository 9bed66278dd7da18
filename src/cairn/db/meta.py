"""A small key/value table for facts about the installation itself (secret-key fingerprint)."""

from __future__ import annotations

from sqlalchemy import String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cairn.db.base import Base


class Meta(Base):
    __tablename__ = "cairn_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def get_or_set(session: Session, key: str, value: str) -> str:
    """The stored value for ``key``; stores ``value`` first if there is none (race-safe)."""
    row = session.get(Meta, key)
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(Meta(key=key, value=value))
    except IntegrityError:
        found = session.scalar(select(Meta.value).where(Meta.key == key))
        assert found is not None
        return found
    return value
