"""Reading user accounts (people and service accounts) by ID."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from cairn.auth.model import User
from cairn.db.base import table_of
from cairn.db.engine import Database

_users = table_of(User)
# A Core select, compiled once: ``account/details`` and user includes run it on every call,
# and a Session (made for it alone), an ORM statement and its loading cost ten times the query.
_BY_ID = select(*_users.c).where(_users.c.id == bindparam("user_id"))


class SqlUsers:
    """User rows, read in the unit of work in progress (the request's, in a handler)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, user_id: str) -> User | None:
        """The user as a detached ``User`` built from its row (for reading: it belongs to no
        Session, so changing it changes nothing)."""
        with self._db.read_transaction() as conn:
            row = conn.execute(_BY_ID, {"user_id": user_id}).first()
        return None if row is None else User(**row._mapping)
