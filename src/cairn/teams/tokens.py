"""Team tokens (TFE "Team Tokens"), held by the team's service account (``users.team_id``),
which is a member of its team and so has the team's rights. A team has one descriptionless
token (the legacy endpoint; creating replaces it) and any number of described ones
(``/teams/{id}/authentication-tokens``, HCP Terraform's multiple team tokens).

Who may: ``org:manage`` in the team's organization. Reading or listing without it answers
404; changing answers 404 to a caller who may not see the organization, 403 to one who may.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy.orm import Session

from cairn import authz
from cairn.auth import token_store as store
from cairn.auth.token_store import Issued, TokenLedger, TokenRow
from cairn.authz.model import Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE, ORG_READ
from cairn.authz.subject import Subject, team_service_name
from cairn.errors import NotFound
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.teams import store as teams
from cairn.teams.targets import org_target

KIND_TEAM: Final = "team"  # the team's one descriptionless token (legacy endpoint)
KIND_TEAM_DESCRIBED: Final = "team-described"  # one of a team's described tokens
TEAM_KINDS: Final = (KIND_TEAM, KIND_TEAM_DESCRIBED)
MEMBERSHIP_SOURCE: Final = "token"  # TeamMembership.source of a team token's service account


def _team(s: Session, caller: Subject, team_id: str, *, write: bool) -> tuple[Organization, Team]:
    """The team whose tokens the caller names, if they may manage them (see the module
    docstring for the 404/403 rule). A refusal names the team by its ID only."""
    found = teams.team(s, team_id)
    if found is None:
        raise authz.not_found("team", repr(team_id))
    org, team = found
    target = org_target(org)
    if write:
        if not authz.allowed(caller, ORG_READ, target):
            raise authz.not_found("team", repr(team_id))
        authz.require(caller, ORG_MANAGE, target, doing="manage the team tokens of")
    elif not authz.allowed(caller, ORG_MANAGE, target):
        raise authz.not_found("team", repr(team_id))
    return org, team


def _no_token(team_id: str) -> NotFound:
    return NotFound(f"team {team_id!r} has no team token")


class TeamTokens:
    """Creating, reading, listing and revoking team tokens on behalf of a caller."""

    def __init__(self, ledger: TokenLedger) -> None:
        self._ledger = ledger
        self._db = ledger.db
        self._clock = ledger.clock
        kinds = ledger.tokens.kinds
        kinds.register(KIND_TEAM, "a team's token")
        kinds.register(KIND_TEAM_DESCRIBED, "one of a team's described tokens")

    def create(
        self,
        caller: Subject,
        team_id: str,
        expires_at: datetime | None,
        *,
        description: str | None = None,
        source_address: str = "",
    ) -> Issued:
        """Without a description: the team's one token, replacing the one before. With one:
        an additional token."""
        store.check_expiry(expires_at, self._clock.now())
        with self._db.unit_of_work() as s:  # authorize before making a service account
            found_org, _ = _team(s, caller, team_id, write=True)
        service_id = self._ledger.service_account(
            team_service_name(team_id), found_org.id, team_id=team_id
        )
        with self._db.unit_of_work(write=True) as s:
            org, team = _team(s, caller, team_id, write=True)
            svc = store.lock_user(s, service_id)
            if teams.membership(s, team.id, svc.id) is None:
                s.add(TeamMembership(team_id=team.id, user_id=svc.id, source=MEMBERSHIP_SOURCE))
            if description is None:
                kind = KIND_TEAM
                for old in store.active(s, svc.id, (KIND_TEAM,)):
                    self._ledger.revoke(
                        s, caller, TokenRow(old, svc, team.id), source_address, "replaced"
                    )
            else:
                kind = KIND_TEAM_DESCRIBED
            issued = self._ledger.issue(
                s,
                caller,
                svc,
                kind,
                description or "",
                expires_at,
                source_address,
                organization=org.name,
                team_id=team.id,
            )
            s.commit()
        return issued

    def get(self, caller: Subject, team_id: str) -> TokenRow:
        """The team's descriptionless token."""
        with self._db.unit_of_work() as s:
            _, team = _team(s, caller, team_id, write=False)
            svc = store.team_service_account(s, team.id)
            token = store.newest_active(s, svc, (KIND_TEAM,))
            if svc is None or token is None:
                raise _no_token(team_id)
            return TokenRow(token, svc, team.id)

    def revoke(self, caller: Subject, team_id: str, *, source_address: str = "") -> None:
        """Revoke the team's descriptionless token."""
        with self._db.unit_of_work(write=True) as s:
            _, team = _team(s, caller, team_id, write=True)
            svc = store.team_service_account(s, team.id)
            token = store.newest_active(s, svc, (KIND_TEAM,))
            if svc is None or token is None:
                raise _no_token(team_id)
            self._ledger.revoke(s, caller, TokenRow(token, svc, team.id), source_address, "revoked")
            s.commit()

    def list_team_tokens(
        self, caller: Subject, team_id: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        """Every token of the team that is not revoked, newest first."""
        with self._db.unit_of_work() as s:
            _, team = _team(s, caller, team_id, write=False)
            return _team_tokens(s, [team.id], page)

    def list_org_team_tokens(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        """Every team token of the organization that is not revoked, newest first."""
        with self._db.unit_of_work() as s:
            org = teams.organization(s, org_name)
            if org is None or not authz.allowed(caller, ORG_MANAGE, org_target(org)):
                raise authz.not_found("organization", repr(org_name))
            team_ids = [t.id for t in teams.teams(s, org.id, secret_of=None)[0]]
            return _team_tokens(s, team_ids, page)


def _team_tokens(s: Session, team_ids: list[str], page: Page) -> tuple[list[TokenRow], int]:
    owners = store.team_service_accounts(s, team_ids)
    return store.service_tokens(s, owners, TEAM_KINDS, page)
