"""Reading user accounts (people and service accounts) by ID."""

from __future__ import annotations

from sqlalchemy import select

from cairn.auth.model import User
from cairn.db.engine import Database


class SqlUsers:
    """User rows, read in the unit of work in progress (the request's, in a handler)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, user_id: str) -> User | None:
        with self._db.unit_of_work() as s:
            return s.scalar(select(User).where(User.id == user_id))
