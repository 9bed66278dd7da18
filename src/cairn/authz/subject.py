"""Who is calling: a ``Subject`` is one of several kinds, never a user with a magic name.

- ``User``: a person (or the built-in admin), through one of their API tokens.
- ``ServiceAccount``: what an organization token or a team token acts as. It belongs to its
  organization (and team) by real columns (``users.organization_id`` / ``users.team_id``, both
  ``ON DELETE CASCADE``), so it dies with them; its name is only for display.
- ``System``: cairn itself (background jobs: housekeeping, scheduled rotation).
- ``RunJob``: one phase of a run, through its job token (``cairn.runs.job_tokens``).

Agents join this union when they act through the pipeline (``Agent``);
every check goes through ``authz.authorizer``, which only needs ``is_site_admin`` and
``access`` from a subject.

A workspace lock is held by a ``Holder``: a user, or a run (which its jobs act as).
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


@dataclass(frozen=True)
class RunJob:
    """One phase (plan or apply) of a run, executing on an agent or a built-in worker, through
    its job token (``cairn.runs.job_tokens``). Its ``access`` is made by that authenticator:
    its own workspace (state write only in the apply phase) and the state of the workspaces of
    its organization that share it with this one (remote-state consumers); the authorizer caps
    it at ``RUN_JOB_PERMISSIONS`` whatever it holds. It takes locks as its run."""

    id: str  # the job's ID
    run_id: str
    workspace_id: str
    organization_id: str
    phase: Literal["plan", "apply"]
    token_id: str
    attempt: int = 0
    access: Access = field(default_factory=Access)
    is_site_admin: bool = False
    kind: Literal["run-job"] = "run-job"

    @property
    def name(self) -> str:
        """For audit events and messages: the run and its phase."""
        return f"run {self.run_id} ({self.phase})"


Subject = User | ServiceAccount | System | RunJob


@dataclass(frozen=True)
class Holder:
    """Who holds a workspace lock: ``kind`` is the holder's JSON:API type ("users", later
    "runs"), as the TFE API shows it in ``locked-by``."""

    kind: str
    id: str

    @property
    def is_user(self) -> bool:
        return self.kind == USER_TYPE


RUN_TYPE: Final = "runs"


def run_of(subject: Subject) -> str | None:
    """The run a subject acts for (a run's job), or None."""
    return subject.run_id if isinstance(subject, RunJob) else None


def creator_of(subject: Subject) -> str | None:
    """The user (or service account) a subject's writes are created by; None for a run's
    job, whose writes are the run's (``run_of``)."""
    return None if isinstance(subject, RunJob) else subject.id


def holder_of(subject: Subject) -> Holder:
    """The lock holder a subject takes locks as: a run job holds its run's lock."""
    if isinstance(subject, RunJob):
        return Holder(RUN_TYPE, subject.run_id)
    return Holder(USER_TYPE, subject.id)


def user_holder(user_id: str) -> Holder:
    return Holder(USER_TYPE, user_id)
