"""The one place where access is decided.

``require(subject, permission, target)`` raises, ``allowed`` answers, ``visible`` turns the
same rule into a SQL condition so that lists are filtered by the database (and paged there)
instead of loading every row. Everything else in cairn asks these three.

The rules (DESIGN.md, "Identity for people"):
- a site admin may do everything; ``org:manage`` in an organization means everything in it;
- otherwise permissions are the union of the organization rights of the subject's teams (or
  its organization token) and of every grant whose workspace ID or name pattern matches, or
  whose project holds the workspace (team-project access); on a project, the organization
  rights and the team-project access to it;
- a subject that may not read a target is told it does not exist (404, no existence leak);
  one that may read it but not do what it asked is refused (403);
- any error while deciding denies.

One message style: ``<kind> <name> not found, or you are not allowed to see it`` and
``you may not <do> <kind> <name>: that needs the <permission> permission``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import ColumnElement, false, or_, true

from cairn.authz.permissions import (
    ALL_PERMISSIONS,
    ORG_MANAGE,
    ORG_READ,
    PROJECT_READ,
    STATE_READ,
    STATE_READ_OUTPUTS,
    STATE_WRITE,
    VARIABLES_READ,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
)
from cairn.authz.subject import RunJob, Subject
from cairn.errors import Forbidden, NotFound

# Site-wide actions (signing keys, the audit log, user accounts): site admins only.
SITE_READ: Final = "site:read"
SITE_MANAGE: Final = "site:manage"
_READS: Final = frozenset({WORKSPACE_READ, PROJECT_READ, ORG_READ, SITE_READ})
# The most a run's job token may ever do, whatever its access says: read workspaces (its own,
# and those sharing their state with it) and their state, read its own variables, and write
# its own workspace's state in the apply phase. Never anything on an organization beyond
# seeing it, never another organization (its access holds grants in its own only).
RUN_JOB_PERMISSIONS: Final = frozenset(
    {WORKSPACE_READ, STATE_READ, STATE_READ_OUTPUTS, STATE_WRITE, VARIABLES_READ, ORG_READ}
)


@dataclass(frozen=True)
class Site:
    """The installation itself."""

    @property
    def label(self) -> str:
        return "this cairn"


@dataclass(frozen=True)
class Org:
    """An organization, as a target of a check."""

    id: str
    name: str

    @property
    def label(self) -> str:
        return f"organization {self.name!r}"


@dataclass(frozen=True)
class Ws:
    """A workspace, as a target of a check (its organization's ID and name with it, and its
    project's ID: team-project access reaches the workspaces of the project). With an empty
    ``id``, a workspace about to be created (by that name, in that project)."""

    org_id: str
    org_name: str
    id: str
    name: str
    project_id: str | None = None

    @property
    def label(self) -> str:
        return f"workspace {self.org_name}/{self.name}"


@dataclass(frozen=True)
class Project:
    """A project, as a target of a check (its organization's ID and name with it).

    Its permissions are the organization-wide ones (team organization-access flags such as
    ``manage-workspaces`` / ``manage-projects``, the organization token, owners, site admins)
    and those of the team-project access to it; workspace grants choose workspaces by ID or
    name pattern and give nothing on projects. It is read with ``project:read``
    (``read-projects`` / ``read-workspaces`` / any team-project access); a holder of
    ``workspace:read`` organization-wide reads it too (``workspace:read`` on a project target
    is accepted as reading it, as it was before projects had a permission of their own);
    workspaces are placed in it (created there, moved in or out) with ``workspace:manage``
    (``require_placement``).
    """

    org_id: str
    org_name: str
    id: str
    name: str
    is_default: bool = False

    @property
    def label(self) -> str:
        return f"project {self.org_name}/{self.name}"


Target = Site | Org | Ws | Project
SITE: Final = Site()


def permissions(
    subject: Subject,
    organization_id: str,
    workspace_name: str | None = None,
    workspace_id: str | None = None,
    project_id: str | None = None,
) -> frozenset[str]:
    """Permissions in one organization (and on one workspace, when named, in the project
    ``project_id``). Deny unless granted; any error while checking denies."""
    if isinstance(subject, RunJob):
        return _run_job_permissions(
            subject, organization_id, workspace_name, workspace_id, project_id
        )
    try:
        if subject.is_site_admin:
            return ALL_PERMISSIONS
        access = subject.access
        org = access.organization.get(organization_id, frozenset())
        if ORG_MANAGE in org:
            return ALL_PERMISSIONS
        perms = set(org)
        if workspace_name is None and workspace_id is None:
            if perms or any(g.organization_id == organization_id for g in access.grants):
                perms.add(ORG_READ)
            return frozenset(perms)
        for grant in access.grants:
            if grant.matches(organization_id, workspace_name, workspace_id, project_id):
                perms |= grant.permissions
        if WORKSPACE_READ in perms:
            perms.add(ORG_READ)
        return frozenset(perms)
    except Exception:
        return frozenset()


def _run_job_permissions(
    job: RunJob,
    organization_id: str,
    workspace_name: str | None,
    workspace_id: str | None,
    project_id: str | None,
) -> frozenset[str]:
    """A run job's: the grants of its access, capped at ``RUN_JOB_PERMISSIONS``; state write
    only on its own workspace in the apply phase; nothing outside its organization."""
    try:
        if organization_id != job.organization_id:
            return frozenset()
        perms: set[str] = set()
        for grant in job.access.grants:
            if workspace_name is None and workspace_id is None:
                if grant.organization_id == organization_id:
                    perms.add(ORG_READ)
            elif grant.matches(organization_id, workspace_name, workspace_id, project_id):
                perms |= grant.permissions
        if workspace_id != job.workspace_id or job.phase != "apply":
            perms.discard(STATE_WRITE)
        if WORKSPACE_READ in perms:
            perms.add(ORG_READ)
        return frozenset(perms) & RUN_JOB_PERMISSIONS
    except Exception:
        return frozenset()


def permissions_on(subject: Subject, target: Target) -> frozenset[str]:
    """Every permission the subject has on ``target``."""
    if isinstance(target, Site):
        return frozenset({SITE_READ, SITE_MANAGE}) if subject.is_site_admin else frozenset()
    if isinstance(target, Org):
        return permissions(subject, target.id)
    if isinstance(target, Project):
        return project_permissions(subject, target)
    perms = permissions(subject, target.org_id, target.name, target.id, target.project_id)
    if not target.id and target.project_id and WORKSPACE_MANAGE not in perms:
        # Creating a workspace in a project is the project's to allow (team-project access
        # create: workspace:manage on the project, as for placing workspaces there).
        project = Project(target.org_id, target.org_name, target.project_id, "")
        if WORKSPACE_MANAGE in project_permissions(subject, project):
            perms = perms | {WORKSPACE_MANAGE}
    return perms


def project_permissions(subject: Subject, project: Project) -> frozenset[str]:
    """The organization-wide permissions, and those of team-project access to ``project``.
    Reading workspaces organization-wide reads the project (``workspace:read`` and
    ``project:read`` are one on a project)."""
    try:
        perms = set(permissions(subject, project.org_id))
        if ORG_MANAGE in perms:
            return ALL_PERMISSIONS
        for grant in subject.access.projects:
            if grant.organization_id == project.org_id and grant.project_id == project.id:
                perms |= grant.permissions
        if PROJECT_READ in perms or WORKSPACE_READ in perms:
            perms |= {PROJECT_READ, WORKSPACE_READ, ORG_READ}
        return frozenset(perms)
    except Exception:
        return frozenset()


def allowed(subject: Subject, permission: str, target: Target) -> bool:
    return permission in permissions_on(subject, target)


def not_found(kind: str, name: str) -> NotFound:
    """The answer for something that does not exist and for something the caller may not
    read: the same, so that existence does not leak."""
    return NotFound(f"{kind} {name} not found, or you are not allowed to see it")


def _reads(target: Target) -> str:
    if isinstance(target, Site):
        return SITE_READ
    if isinstance(target, Org):
        return ORG_READ
    if isinstance(target, Project):
        return PROJECT_READ
    return WORKSPACE_READ


def require(subject: Subject, permission: str, target: Target, *, doing: str = "") -> None:
    """Raise unless ``subject`` has ``permission`` on ``target``: NotFound when it may not
    even read the target (or asked to read it), Forbidden otherwise. ``doing`` says what was
    refused in the user's words ("lock", "delete", "change the settings of"). On the site
    itself, reads are hidden (404) and other actions refused (403) from non-admins."""
    perms = permissions_on(subject, target)
    if permission in perms:
        return
    if isinstance(target, Site):  # the site exists for everyone: only its reads are hidden
        if permission == SITE_READ:
            raise NotFound("there is no such resource, or you are not allowed to see it")
    elif permission in _READS or _reads(target) not in perms:
        raise NotFound(f"{target.label} not found, or you are not allowed to see it")
    what = f"{doing} {target.label}" if doing else f"do this to {target.label}"
    raise Forbidden(f"you may not {what}: that needs the {permission} permission")


def require_placement(subject: Subject, project: Project, *, doing: str) -> None:
    """Raise unless ``subject`` may put workspaces into ``project`` or take them out of it
    (create one there, move one in or out), as in HCP Terraform, where that takes rights on
    the project itself: ``workspace:manage`` on it, which organization-wide rights give
    (``manage-workspaces``, ``manage-projects``, owners, the organization token, site
    admins) and team-project access (``maintain``, ``admin``, custom ``create``/``move``).
    A workspace grant alone, whatever its role, chooses no project: the id-token's project
    claims (``sub``, ``terraform_project_id``) must mean that someone allowed to place
    workspaces in that project did. The organization's default project, where a
    workspace goes when none is named, needs nothing beyond the right to create or manage the
    workspace itself. Forbidden otherwise (a caller who may not even read the project is
    told, by whoever names it, that it does not exist).
    """
    if project.is_default or allowed(subject, WORKSPACE_MANAGE, project):
        return
    raise Forbidden(
        f"you may not {doing} {project.label}: that needs the {WORKSPACE_MANAGE} permission on "
        "the project (organization access manage-workspaces or manage-projects, or team-project "
        "access maintain, admin or custom create/move); a workspace grant gives none"
    )


def visible(
    subject: Subject,
    permission: str,
    organization_id: str,
    *,
    workspace_id: ColumnElement[str],
    workspace_name: ColumnElement[str],
    dialect: str,
    project_id: ColumnElement[str] | None = None,
) -> ColumnElement[bool]:
    """A SQL condition on a workspace query: true for the workspaces of ``organization_id``
    on which ``subject`` has ``permission`` (the same rule as ``permissions``, for lists).
    ``project_id``: the workspace's project column (without it, team-project access is not
    counted: pass it wherever workspaces are listed)."""
    if permission in permissions(subject, organization_id):
        return true()  # organization-wide: a site admin, org:manage, a team's access flags
    clauses: list[ColumnElement[bool]] = []
    ids: list[str] = []
    project_ids: list[str] = []
    for grant in subject.access.grants:
        if grant.organization_id != organization_id or permission not in grant.permissions:
            continue
        if grant.workspace_id is not None:
            ids.append(grant.workspace_id)
        elif grant.pattern is not None:
            clauses.append(_pattern_clause(workspace_name, grant.pattern, dialect))
        elif grant.project_id is not None:
            project_ids.append(grant.project_id)
    if ids:
        clauses.append(workspace_id.in_(ids))
    if project_ids and project_id is not None:
        clauses.append(project_id.in_(project_ids))
    return or_(*clauses) if clauses else false()


def _pattern_clause(column: ColumnElement[str], pattern: str, dialect: str) -> ColumnElement[bool]:
    """``fnmatch.fnmatchcase(name, pattern)`` in SQL (patterns hold letters, digits, ``-``,
    ``_`` and ``* ? [ ] !``: see ``teams`` grant validation)."""
    if not any(c in pattern for c in "*?["):
        return column == pattern
    if dialect == "sqlite":
        # GLOB is fnmatchcase with [^...] for negated sets.
        return column.op("GLOB")(pattern.replace("[!", "[^"))
    return column.op("~")(_posix_regex(pattern))


def _posix_regex(pattern: str) -> str:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] == "!" else i + 1)
            if end == -1:
                out.append("\\[")
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = end
        elif c.isalnum() or c == "_":
            out.append(c)
        else:
            out.append("\\" + c)
        i += 1
    out.append("$")
    return "".join(out)


def can(
    subject: Subject,
    permission: str,
    organization_id: str,
    workspace_name: str | None = None,
    workspace_id: str | None = None,
    project_id: str | None = None,
) -> bool:
    """``allowed`` for callers that hold IDs and names rather than a target."""
    return permission in permissions(
        subject, organization_id, workspace_name, workspace_id, project_id
    )
