"""The workspace rule VCS owns: a workspace's repository is reached through a token of a VCS
connection of the same organization that may be used in the workspace's project.

Registered in ``app.py`` as a ``WorkspaceHooks.check_settings`` callback: it runs inside the
workspace service's transaction, on the row about to be written (``vcs-repo`` already applied
by ``workspaces.service.apply_vcs_repo``), refuses with a 422, and fills the denormalised
columns the webhook ingest reads (connection, service provider, repository URL). A GitHub App
installation named by its ``ghain-…`` ID is replaced by its token's ID.
"""

from __future__ import annotations

import re
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn.errors import Invalid
from cairn.organizations.model import Organization
from cairn.vcs import store
from cairn.vcs.model import GITLAB_PROVIDERS, OAuthClient, OAuthToken
from cairn.workspaces.model import Workspace

_VCS: Final = "/data/attributes/vcs-repo"
# GitLab: group(/subgroup…)/project; GitHub: owner/repo. Path segments as the forges allow.
_SEGMENT: Final = r"[A-Za-z0-9_.][A-Za-z0-9_.-]*"
_GITLAB_REPO: Final = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})+$")
_GITHUB_REPO: Final = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")


def clear(ws: Workspace) -> None:
    ws.vcs_oauth_token_id = None
    ws.vcs_oauth_client_id = None
    ws.vcs_identifier = None
    ws.vcs_branch = None
    ws.vcs_tags_regex = None
    ws.vcs_ingress_submodules = False
    ws.vcs_service_provider = None
    ws.vcs_repository_http_url = None
    ws.vcs_github_app_installation_id = None


def check_vcs_repo(s: Session, org: Organization, ws: Workspace) -> None:
    """Refuse a repository setting that names no usable token; complete the row."""
    if not ws.vcs_identifier and not ws.vcs_oauth_token_id:
        clear(ws)
        return
    if not ws.vcs_identifier:
        raise Invalid(
            "vcs-repo.identifier is required: the repository, like group/project or owner/repo",
            pointer=f"{_VCS}/identifier",
        )
    token_ref = ws.vcs_oauth_token_id
    if not token_ref:
        raise Invalid(
            "vcs-repo needs oauth-token-id (a VCS connection's token) or "
            "github-app-installation-id",
            pointer=f"{_VCS}/oauth-token-id",
        )
    by_installation = token_ref.startswith("ghain-")
    pointer = f"{_VCS}/{'github-app-installation-id' if by_installation else 'oauth-token-id'}"
    with s.no_autoflush:  # the workspace row is not written yet
        found = s.execute(
            select(OAuthToken, OAuthClient)
            .join(OAuthClient, OAuthClient.id == OAuthToken.oauth_client_id)
            .where(
                OAuthToken.ghain_id == token_ref if by_installation else OAuthToken.id == token_ref,
                OAuthClient.organization_id == org.id,
            )
        ).first()
        allowed = found is not None and store.allows_project(s, found[1], ws.project_id)
    what = "GitHub App installation" if by_installation else "OAuth token"
    if found is None:
        raise Invalid(
            f"{what} {token_ref!r} does not exist in organization {org.name}; list the "
            "organization's tokens with GET /api/v2/organizations/{org}/oauth-tokens",
            pointer=pointer,
        )
    tok, client = found
    if not allowed:
        raise Invalid(
            f"VCS connection {client.name or client.id!r} is limited to other projects; add "
            "this workspace's project to the connection, or make it organization-scoped",
            pointer=pointer,
        )
    gitlab = client.service_provider in GITLAB_PROVIDERS
    if not (_GITLAB_REPO if gitlab else _GITHUB_REPO).fullmatch(ws.vcs_identifier):
        raise Invalid(
            f"vcs-repo.identifier {ws.vcs_identifier!r} is not a repository path: give "
            + ("group/project (subgroups allowed)" if gitlab else "owner/repo"),
            pointer=f"{_VCS}/identifier",
        )
    # Named by its installation (now, or before and still the same one): render it so.
    same_installation = tok.ghain_id is not None and (
        by_installation or ws.vcs_github_app_installation_id == tok.ghain_id
    )
    ws.vcs_github_app_installation_id = tok.ghain_id if same_installation else None
    ws.vcs_oauth_token_id = tok.id
    ws.vcs_oauth_client_id = client.id
    ws.vcs_service_provider = client.service_provider
    ws.vcs_repository_http_url = f"{client.http_url}/{ws.vcs_identifier}"
