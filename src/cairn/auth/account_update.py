"""``PATCH /api/v2/account/update``: a person changes their own username or email.

HCP Terraform's rules, as far as cairn has the parts: only a person's own account (an
organization or team token is not a person: 404, as for ``account/details`` of a service
account in HCP Terraform, which has no account to update); the username follows the rules a
site admin's ``cairn users create`` follows (letters, digits, ``-`` and ``_``, at most 100
characters, not a service account's reserved ``api-org-``/``api-team-`` prefix, never the
shape of a cairn ID) and is unique — a taken one is a 422 "Username has already been
taken", decided by the database's unique index so that of two people racing for a name one
gets it; the email is one address (at most 255 characters). cairn sends no email, so a new
address takes effect at once (HCP Terraform shows it as ``unconfirmed-email`` until the
person confirms it; cairn always answers ``unconfirmed-email: null``). IdP users keep being
found by their IdP identity (issuer, subject), never by name or email, so a rename does not
detach them. Each change is an audit event ``user.update``.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response
from starlette.routing import Route

from cairn import ids
from cairn.audit.log import Actor, record
from cairn.auth.api import user_doc
from cairn.auth.model import User
from cairn.authz.subject import RESERVED_PREFIXES, Subject, is_reserved_name
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Invalid, NotFound
from cairn.names import check_slug
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse

# One address, no spaces or angle brackets (what an address book would take), ≤ 255 chars.
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
MAX_EMAIL = 255


def check_email(value: str, pointer: str = "/data/attributes/email") -> str:
    value = value.strip()
    if len(value) > MAX_EMAIL:
        raise Invalid(f"email must be at most {MAX_EMAIL} characters", pointer=pointer)
    if not _EMAIL.fullmatch(value):
        raise Invalid(f"{value!r} is not an email address", pointer=pointer)
    return value


def check_username(value: str, pointer: str = "/data/attributes/username") -> str:
    check_slug("user", value, max_len=100, pointer=pointer)
    if is_reserved_name(value):
        raise Invalid(
            f"usernames starting with {' or '.join(RESERVED_PREFIXES)} are reserved for "
            "organization and team tokens",
            pointer=pointer,
        )
    if ids.looks_like_any(value):
        raise Invalid(
            f"username {value!r} has the shape of a cairn ID (like user-…); choose another",
            pointer=pointer,
        )
    return value


class AccountUpdates:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def update(
        self,
        caller: Subject,
        *,
        username: str | None,
        email: str | None,
        source: str,
    ) -> User:
        if caller.kind != "user":
            raise NotFound(
                "account/update changes a person's own account; organization and team tokens "
                "have none"
            )
        new_name = check_username(username) if username is not None else None
        new_email = check_email(email) if email is not None else None
        with self._db.unit_of_work(write=True) as s:
            user = s.scalar(select(User).where(User.id == caller.id))
            if user is None or user.is_service_account:
                raise NotFound("your account was not found")
            changed: dict[str, str] = {}
            if new_name is not None and new_name != user.username:
                changed["old_username"] = user.username
                user.username = new_name
            if new_email is not None and new_email != user.email:
                user.email = new_email
                changed["email_changed"] = "yes"
            if changed:
                try:
                    s.flush()
                except IntegrityError:
                    raise Invalid(
                        f"Username has already been taken: {new_name!r}",
                        pointer="/data/attributes/username",
                    ) from None
                record(
                    s,
                    at=self._clock.now(),
                    actor=Actor(caller.id, caller.name, source),
                    action="user.update",
                    subject=user.username,
                    **changed,
                )
            s.commit()
            return user


def routes(accounts: AccountUpdates) -> list[Route]:
    """Mounted under ``/api/v2``."""

    def update_account(call: Call) -> Response:
        doc = call.document("users", allow_blank_type=True)
        user = accounts.update(
            call.caller,
            username=doc.string("username", max_len=100),
            email=doc.string("email", max_len=MAX_EMAIL),
            source=call.source,
        )
        return JsonApiResponse({"data": user_doc(user, me=True)})

    return [route("/account/update", update_account, ["PATCH"])]
