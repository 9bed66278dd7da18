"""Callbacks teams register on lower domains (``organizations.hooks``), wired in ``app.py``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cairn import ids
from cairn.authz.model import Team, TeamMembership
from cairn.authz.roles import OWNERS_TEAM
from cairn.authz.subject import Subject
from cairn.organizations.model import Organization


def create_owners_team(s: Session, org: Organization, creator: Subject) -> None:
    """After an organization is created: its owners team, with the creator as first member
    (as in HCP Terraform)."""
    owners = Team(
        id=ids.new_id("team"),
        organization_id=org.id,
        name=OWNERS_TEAM,
        organization_access="",
        visibility="secret",
        created_at=org.created_at,
    )
    s.add(owners)
    s.flush()
    s.add(TeamMembership(team_id=owners.id, user_id=creator.id, source="manual"))
