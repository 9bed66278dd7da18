"""A user as a subject with the access they have *now*, for work done later on their behalf.

A signed upload URL, or a configuration version uploaded with ``auto-queue-runs``, acts for
the person who asked for it some time before; what they may do is read again when the work
happens, so that revoking someone's access (or disabling them) ends it at once.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cairn.auth.model import User
from cairn.authz.access import load_access
from cairn.authz.subject import ServiceAccount, Subject
from cairn.authz.subject import User as UserSubject


def subject_now(s: Session, user_id: str) -> Subject | None:
    """``user_id`` as a subject with their current access (grants, teams), or None when they
    are gone or disabled."""
    row = s.get(User, user_id)
    if row is None or row.disabled_at is not None:
        return None
    if row.is_site_admin:
        return UserSubject(id=row.id, name=row.username, token_id="", is_site_admin=True)
    if row.is_service_account and row.organization_id is not None:
        org_token = row.organization_id if row.team_id is None else None
        access = load_access(s.connection(), row.id, organization_id=org_token)
        return ServiceAccount(
            id=row.id,
            name=row.username,
            token_id="",
            organization_id=row.organization_id,
            team_id=row.team_id,
            access=access,
        )
    return UserSubject(
        id=row.id, name=row.username, token_id="", access=load_access(s.connection(), row.id)
    )
