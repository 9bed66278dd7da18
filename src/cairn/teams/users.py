"""User accounts, for site admins: creating people (who then log in, or get tokens) and
listing every account, service accounts included. Others are refused: creating answers 403,
listing 404 (the list does not exist for them)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.model import User
from cairn.authz.subject import RESERVED_PREFIXES, Subject, is_reserved_name
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.names import check_slug
from cairn.teams import store


class UserAdmin:
    """Site administration of user accounts."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def create_user(self, caller: Subject, username: str, email: str, source: str) -> User:
        authz.require(caller, authz.SITE_MANAGE, authz.SITE, doing="create users in")
        check_slug("user", username, max_len=100)
        if is_reserved_name(username):
            raise Invalid(
                f"usernames starting with {' or '.join(RESERVED_PREFIXES)} are reserved for "
                "organization and team tokens",
                pointer="/username",
            )
        if ids.looks_like_any(username):
            raise Invalid(
                f"username {username!r} has the shape of a cairn ID (like user-…): the API "
                "takes a username or a user ID in the same place, so a username may not look "
                "like an ID",
                pointer="/username",
            )
        with self._db.unit_of_work(write=True) as s:
            user = User(
                id=ids.new_id("user"),
                username=username,
                email=email,
                is_site_admin=False,
                created_at=self._clock.now(),
            )
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(f"user {username!r} already exists", pointer="/username") from None
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="rbac.user.create",
                subject=username,
            )
            s.commit()
            return user

    def list_users(self, caller: Subject) -> list[User]:
        authz.require(caller, authz.SITE_READ, authz.SITE)
        with self._db.unit_of_work() as s:
            return store.users(s)
