"""Declarative base and column types shared by every domain's model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Index, MetaData, Table, TypeDecorator, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names, so Alembic migrations name things the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Partial indexes made so far, with their condition, and whether PostgreSQL's spelling of the
# condition is attached (``with_postgresql_options``).
_PARTIAL: list[tuple[Index, str]] = []
_DIALECTS = {"postgresql": False}


def partial_index(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index over the rows matching ``where`` (SQL), on SQLite and PostgreSQL.

    PostgreSQL's option (``postgresql_where``) is attached when a PostgreSQL engine is made
    (``with_postgresql_options``, from ``make_engine``): naming it in the models would import
    SQLAlchemy's whole PostgreSQL dialect with them, ~60 ms of every start of a cairn on
    SQLite (``bench/startup.py``). Only DDL and schema comparison read it."""
    index = Index(name, *columns, unique=unique, sqlite_where=text(where))
    _PARTIAL.append((index, where))
    if _DIALECTS["postgresql"]:
        index.dialect_kwargs["postgresql_where"] = text(where)
    return index


def with_postgresql_options() -> None:
    """Attach PostgreSQL's spelling of every partial index's condition, to the indexes made
    so far and to those made later (idempotent)."""
    if _DIALECTS["postgresql"]:
        return
    _DIALECTS["postgresql"] = True
    for index, where in _PARTIAL:
        index.dialect_kwargs["postgresql_where"] = text(where)


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class. Hot paths select columns of it rather than
    entities: no ORM compilation or identity map for rows that are only read once."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, whatever the database keeps (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("cairn stores only timezone-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
