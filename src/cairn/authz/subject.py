"""Who is calling: a ``Subject`` is one of several kinds, never a user with a magic name.

- ``User``: a person (or the built-in admin), through one of their API tokens.
- ``ServiceAccount``: what an organization token or a team token acts as. It belongs to its
  organization (and team) by real columns (``users.organization_id`` / ``users.team_id``, both
  ``ON DELETE CASCADE``), so it dies with them; its name is only for display.
- ``System``: cairn itself (background jobs: housekeeping, scheduled rotation).

Runs, agents and job tokens join this union as their domains arrive (``RunJob``, ``Agent``);
every check goes through ``authz.authorizer``, which only needs ``is_site_admin`` and
``access`` from a subject.

A workspace lock is held by a ``Holder``: a user today, a run tomorrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from cairn.authz.access import Access

# JSON:API type of people and service accounts (the "users" of the TFE API).
USER_TYPE: Final = "users"
# Display names of token service accounts (HCP Terraform's): never parsed back.
ORG_SERVICE_PREFIX: Final = "api-org-"
TEAM_SERVICE_PREFIX: Final = "api-team-"
RESERVED_PREFIXES: Final = (ORG_SERVICE_PREFIX, TEAM_SERVICE_PREFIX)


def org_service_name(org_name: str) -> str:
    """The display name of an organization token's service account."""
    return ORG_SERVICE_PREFIX + org_name


def team_service_name(team_id: str) -> str:
    """The display name of a team token's service account."""
    return TEAM_SERVICE_PREFIX + team_id


def is_reserved_name(username: str) -> bool:
    """Names people may not take (they are the service accounts' display names)."""
    return username.startswith(RESERVED_PREFIXES)


@dataclass(frozen=True)
class User:
    """A person, authenticated by one of their API tokens."""

    id: str
    name: str
    token_id: str
    is_site_admin: bool = False
    access: Access = field(default_factory=Access)
    kind: Literal["user"] = "user"


@dataclass(frozen=True)
class ServiceAccount:
    """What an organization token (``team_id`` None) or a team token acts as."""

    id: str
    name: str
    token_id: str
    organization_id: str
    team_id: str | None = None
    access: Access = field(default_factory=Access)
    is_site_admin: bool = False
    kind: Literal["service-account"] = "service-account"


@dataclass(frozen=True)
class System:
    """cairn itself, for work no request asked for (background jobs)."""

    id: str = "system"
    name: str = "cairn"
    token_id: str = ""
    is_site_admin: bool = True
    access: Access = field(default_factory=Access)
    kind: Literal["system"] = "system"


Subject = User | ServiceAccount | System


@dataclass(frozen=True)
class Holder:
    """Who holds a workspace lock: ``kind`` is the holder's JSON:API type ("users", later
    "runs"), as the TFE API shows it in ``locked-by``."""

    kind: str
    id: str

    @property
    def is_user(self) -> bool:
        return self.kind == USER_TYPE


def holder_of(subject: Subject) -> Holder:
    """The lock holder a subject takes locks as."""
    return Holder(USER_TYPE, subject.id)


def user_holder(user_id: str) -> Holder:
    return Holder(USER_TYPE, user_id)
