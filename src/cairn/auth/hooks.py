"""Callbacks auth registers on organizations (``organizations.hooks``), wired in ``app.py``.

auth sits below organizations: the organization is typed by what is read from it, so this
module imports nothing of that package."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from cairn.auth.model import User
from cairn.authz.subject import org_service_name


class Named(Protocol):
    """An organization, as far as these callbacks read it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


def rename_org_service_account(s: Session, org: Named, old_name: str) -> None:
    """After an organization is renamed: its token's service account (the one of the
    organization, not of a team) is displayed under the new name."""
    s.execute(
        update(User)
        .where(
            User.organization_id == org.id,
            User.team_id.is_(None),
            User.is_service_account,
        )
        .values(username=org_service_name(org.name))
        .execution_options(synchronize_session=False)
    )
