"""VCS connection and token rows, read and written in the caller's session.

Lookups by ID answer NotFound both when the row does not exist and when the caller may not
read its organization (the same answer, so that existence does not leak); the permission to
manage VCS settings is checked by the service on the organization found here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.permissions import ORG_READ
from cairn.authz.subject import Subject
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization, Project
from cairn.paging import Page
from cairn.vcs.model import OAuthClient, OAuthClientProject, OAuthToken
from cairn.workspaces.model import Workspace


def client_not_found(client_id: str) -> Exception:
    return authz.not_found("OAuth client", repr(client_id))


def token_not_found(token_id: str) -> Exception:
    return authz.not_found("OAuth token", repr(token_id))


def _readable(caller: Subject, org: Organization, missing: Exception) -> None:
    if not authz.allowed(caller, ORG_READ, orgs.target(org)):
        raise missing


def client(s: Session, caller: Subject, client_id: str) -> tuple[Organization, OAuthClient]:
    found = s.execute(
        select(Organization, OAuthClient)
        .join(OAuthClient, OAuthClient.organization_id == Organization.id)
        .where(OAuthClient.id == client_id)
    ).first()
    if found is None:
        raise client_not_found(client_id)
    _readable(caller, found[0], client_not_found(client_id))
    return found[0], found[1]


def token(
    s: Session, caller: Subject, token_id: str
) -> tuple[Organization, OAuthClient, OAuthToken]:
    found = s.execute(
        select(Organization, OAuthClient, OAuthToken)
        .join(OAuthClient, OAuthClient.organization_id == Organization.id)
        .join(OAuthToken, OAuthToken.oauth_client_id == OAuthClient.id)
        .where(OAuthToken.id == token_id)
    ).first()
    if found is None:
        raise token_not_found(token_id)
    _readable(caller, found[0], token_not_found(token_id))
    return found[0], found[1], found[2]


def installation(s: Session, ghain_id: str) -> tuple[Organization, OAuthClient, OAuthToken] | None:
    found = s.execute(
        select(Organization, OAuthClient, OAuthToken)
        .join(OAuthClient, OAuthClient.organization_id == Organization.id)
        .join(OAuthToken, OAuthToken.oauth_client_id == OAuthClient.id)
        .where(OAuthToken.ghain_id == ghain_id)
    ).first()
    return None if found is None else (found[0], found[1], found[2])


def clients_of(s: Session, org: Organization, page: Page) -> tuple[list[OAuthClient], int]:
    where = OAuthClient.organization_id == org.id
    total = s.scalar(select(func.count()).select_from(OAuthClient).where(where)) or 0
    rows = s.scalars(
        select(OAuthClient)
        .where(where)
        .order_by(OAuthClient.created_at, OAuthClient.id)
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return list(rows), total


def tokens_where(
    s: Session, page: Page, *, client_id: str | None = None, org_id: str | None = None
) -> tuple[list[OAuthToken], int]:
    stmt = select(OAuthToken)
    count = select(func.count()).select_from(OAuthToken)
    if client_id is not None:
        stmt = stmt.where(OAuthToken.oauth_client_id == client_id)
        count = count.where(OAuthToken.oauth_client_id == client_id)
    if org_id is not None:
        stmt = stmt.where(OAuthToken.organization_id == org_id)
        count = count.where(OAuthToken.organization_id == org_id)
    total = s.scalar(count) or 0
    rows = s.scalars(
        stmt.order_by(OAuthToken.created_at, OAuthToken.id).offset(page.offset).limit(page.size)
    ).all()
    return list(rows), total


def project_ids(s: Session, client_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    if client_ids:
        for cid, pid in s.execute(
            select(OAuthClientProject.oauth_client_id, OAuthClientProject.project_id)
            .where(OAuthClientProject.oauth_client_id.in_(client_ids))
            .order_by(OAuthClientProject.project_id)
        ):
            found[cid].append(pid)
    return found


def token_ids(s: Session, client_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    if client_ids:
        for cid, tid in s.execute(
            select(OAuthToken.oauth_client_id, OAuthToken.id)
            .where(OAuthToken.oauth_client_id.in_(client_ids))
            .order_by(OAuthToken.created_at, OAuthToken.id)
        ):
            found[cid].append(tid)
    return found


def projects_named(s: Session, org_id: str, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    return set(
        s.scalars(
            select(Project.id).where(Project.organization_id == org_id, Project.id.in_(ids))
        ).all()
    )


def add_projects(s: Session, client_id: str, ids: Sequence[str]) -> None:
    have = set(project_ids(s, [client_id]).get(client_id, []))
    for pid in ids:
        if pid not in have:
            s.add(OAuthClientProject(oauth_client_id=client_id, project_id=pid))
            have.add(pid)
    s.flush()


def remove_projects(s: Session, client_id: str, ids: Sequence[str]) -> None:
    s.execute(
        delete(OAuthClientProject).where(
            OAuthClientProject.oauth_client_id == client_id,
            OAuthClientProject.project_id.in_(list(ids)),
        )
    )


def allows_project(s: Session, client: OAuthClient, project_id: str) -> bool:
    if client.organization_scoped:
        return True
    return (
        s.scalar(
            select(OAuthClientProject.project_id).where(
                OAuthClientProject.oauth_client_id == client.id,
                OAuthClientProject.project_id == project_id,
            )
        )
        is not None
    )


def workspaces_using(
    s: Session, *, client_id: str | None = None, token_id: str | None = None
) -> list[Workspace]:
    stmt = select(Workspace).order_by(Workspace.name)
    if client_id is not None:
        stmt = stmt.where(Workspace.vcs_oauth_client_id == client_id)
    if token_id is not None:
        stmt = stmt.where(Workspace.vcs_oauth_token_id == token_id)
    return list(s.scalars(stmt).all())


def disconnect_workspaces(
    s: Session, *, client_id: str | None = None, token_id: str | None = None
) -> int:
    """Clear the repository of the workspaces using a connection or one of its tokens (what
    deleting a connection or token does, as in HCP Terraform)."""
    stmt = update(Workspace)
    if client_id is not None:
        stmt = stmt.where(Workspace.vcs_oauth_client_id == client_id)
    elif token_id is not None:
        stmt = stmt.where(Workspace.vcs_oauth_token_id == token_id)
    else:
        return 0
    result = s.execute(
        stmt.values(
            vcs_oauth_token_id=None,
            vcs_oauth_client_id=None,
            vcs_identifier=None,
            vcs_branch=None,
            vcs_tags_regex=None,
            vcs_ingress_submodules=False,
            vcs_service_provider=None,
            vcs_repository_http_url=None,
            vcs_github_app_installation_id=None,
        ).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


MAX_INSTALLATIONS = 10_000


def all_installations(s: Session) -> list[tuple[Organization, OAuthClient, OAuthToken]]:
    """Every GitHub App installation row (bounded), with its connection and organization."""
    rows = s.execute(
        select(Organization, OAuthClient, OAuthToken)
        .join(OAuthClient, OAuthClient.organization_id == Organization.id)
        .join(OAuthToken, OAuthToken.oauth_client_id == OAuthClient.id)
        .where(OAuthToken.ghain_id.is_not(None))
        .order_by(OAuthToken.created_at, OAuthToken.id)
        .limit(MAX_INSTALLATIONS)
    ).all()
    return [(o, c, t) for o, c, t in rows]
