"""The organization token (TFE "Organization Tokens"): one per organization, held by the
organization's service account (``users.organization_id``), which authz grants every right in
the organization. Creating one replaces (revokes) the one before.

Who may: ``org:manage`` in the organization. Reading the token without it answers 404;
changing it answers 404 to a caller who may not see the organization, 403 to one who may.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.auth import token_store as store
from cairn.auth.token_store import Issued, TokenLedger, TokenRow
from cairn.authz.permissions import ORG_MANAGE
from cairn.authz.subject import Subject, org_service_name
from cairn.errors import Invalid, NotFound
from cairn.organizations.model import Organization

KIND_ORGANIZATION: Final = "organization"
_KINDS = (KIND_ORGANIZATION,)


def _organization(s: Session, caller: Subject, name: str, *, write: bool) -> Organization:
    """The organization whose token the caller names, if they may manage it (see the module
    docstring for the 404/403 rule)."""
    org = s.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        raise authz.not_found("organization", repr(name))
    target = authz.Org(org.id, org.name)
    if write:
        authz.require(caller, ORG_MANAGE, target, doing="manage the tokens of")
    elif not authz.allowed(caller, ORG_MANAGE, target):
        raise authz.not_found("organization", repr(name))
    return org


def _no_token(name: str) -> NotFound:
    return NotFound(f"organization {name!r} has no organization token")


class OrganizationTokens:
    """Creating, reading and revoking an organization's token on behalf of a caller."""

    def __init__(self, ledger: TokenLedger) -> None:
        self._ledger = ledger
        self._db = ledger.db
        self._clock = ledger.clock
        ledger.tokens.kinds.register(KIND_ORGANIZATION, "an organization's token")

    def create(
        self,
        caller: Subject,
        org_name: str,
        expires_at: datetime | None,
        *,
        description: str | None = None,
        source_address: str = "",
    ) -> Issued:
        """The organization's new token; the one before it (if any) is revoked.
        ``description`` is ignored (organization tokens have none)."""
        store.check_expiry(expires_at, self._clock.now())
        display = org_service_name(org_name)
        with self._db.unit_of_work() as s:  # authorize before making a service account
            org_id = _organization(s, caller, org_name, write=True).id
        if len(display) > store.USERNAME_MAX:
            longest = store.USERNAME_MAX - len(display) + len(org_name)
            raise Invalid(
                f"organization names longer than {longest} characters cannot have an "
                "organization token"
            )
        service_id = self._ledger.service_account(display, org_id)
        with self._db.unit_of_work(write=True) as s:
            org = _organization(s, caller, org_name, write=True)
            svc = store.lock_user(s, service_id)
            for old in store.active(s, svc.id, _KINDS):
                self._ledger.revoke(s, caller, TokenRow(old, svc), source_address, "replaced")
            issued = self._ledger.issue(
                s,
                caller,
                svc,
                KIND_ORGANIZATION,
                "",
                expires_at,
                source_address,
                organization=org.name,
            )
            s.commit()
        return issued

    def get(self, caller: Subject, org_name: str) -> TokenRow:
        with self._db.unit_of_work() as s:
            org = _organization(s, caller, org_name, write=False)
            svc = store.org_service_account(s, org.id)
            token = store.newest_active(s, svc, _KINDS)
            if svc is None or token is None:
                raise _no_token(org_name)
            return TokenRow(token, svc)

    def revoke(self, caller: Subject, org_name: str, *, source_address: str = "") -> None:
        with self._db.unit_of_work(write=True) as s:
            org = _organization(s, caller, org_name, write=True)
            svc = store.org_service_account(s, org.id)
            token = store.newest_active(s, svc, _KINDS)
            if svc is None or token is None:
                raise _no_token(org_name)
            self._ledger.revoke(s, caller, TokenRow(token, svc), source_address, "revoked")
            s.commit()
