"""TFE API documents of VCS connections (``oauth-clients``), their tokens (``oauth-tokens``)
and GitHub App installations (HCP Terraform's OAuth Clients, OAuth Tokens and GitHub App
Installations pages; what pytfe 1.5.0 parses). No secret is ever rendered: ``secret`` is
always null and token strings, keys and webhook secrets are not attributes at all."""

from __future__ import annotations

from typing import Any, Final

from cairn.clock import iso8601
from cairn.vcs.model import OAUTH_KINDS
from cairn.vcs.service import ClientView, TokenView

CLIENT_TYPE: Final = "oauth-clients"
TOKEN_TYPE: Final = "oauth-tokens"  # noqa: S105 - a JSON:API type
INSTALLATION_TYPE: Final = "github-app-installations"

DISPLAY_NAMES: Final = {
    "github": "GitHub",
    "github_enterprise": "GitHub Enterprise",
    "gitlab_hosted": "GitLab",
    "gitlab_community_edition": "GitLab Community Edition",
    "gitlab_enterprise_edition": "GitLab Enterprise Edition",
}
# cairn's connection kinds as the API shows them (``connection-type``).
CONNECTION_TYPES: Final = {
    "gitlab_oauth": "oauth-app",
    "github_oauth": "oauth-app",
    "gitlab_token": "access-token",
    "github_token": "access-token",
    "github_app": "github-app",
}


def callback_path(client_id: str) -> str:
    return f"/api/cairn/v1/oauth-clients/{client_id}/callback"


def connect_path(client_id: str) -> str:
    return f"/api/cairn/v1/oauth-clients/{client_id}/connect"


def client(v: ClientView, public_url: str) -> dict[str, Any]:
    c = v.client
    oauth = c.kind in OAUTH_KINDS
    return {
        "id": c.id,
        "type": CLIENT_TYPE,
        "attributes": {
            "name": c.name,
            "created-at": iso8601(c.created_at),
            "service-provider": c.service_provider,
            "service-provider-display-name": DISPLAY_NAMES.get(c.service_provider, ""),
            "http-url": c.http_url,
            "api-url": c.api_url,
            "key": c.key,
            "secret": None,
            "rsa-public-key": None,
            "organization-scoped": c.organization_scoped,
            "callback-url": f"{public_url}{callback_path(c.id)}" if oauth else None,
            "connect-path": connect_path(c.id) if oauth else None,
            # cairn's
            "connection-type": CONNECTION_TYPES.get(c.kind, c.kind),
            "webhook-url": f"{public_url}/api/cairn/v1/vcs-hooks/{c.id}",
            "app-id": c.app_id,
            "allow-fork-plans": c.allow_fork_plans,
        },
        "relationships": {
            "organization": {"data": {"id": v.org.name, "type": "organizations"}},
            "oauth-tokens": {
                "data": [{"id": t, "type": TOKEN_TYPE} for t in v.token_ids],
                "links": {"related": f"/api/v2/oauth-clients/{c.id}/oauth-tokens"},
            },
            "projects": {"data": [{"id": p, "type": "projects"} for p in v.project_ids]},
            "agent-pool": {"data": None},
        },
        "links": {"self": f"/api/v2/oauth-clients/{c.id}"},
    }


def token(v: TokenView) -> dict[str, Any]:
    t = v.token
    return {
        "id": t.id,
        "type": TOKEN_TYPE,
        "attributes": {
            "created-at": iso8601(t.created_at),
            "service-provider-user": t.service_provider_user,
            "has-ssh-key": t.ssh_key_sealed is not None,
            # cairn's
            "status": t.status.replace("_", "-"),
            "status-reason": t.status_reason,
            "expires-at": iso8601(t.expires_at),
            "refreshed-at": iso8601(t.refreshed_at),
        },
        "relationships": {
            "oauth-client": {
                "data": {"id": t.oauth_client_id, "type": CLIENT_TYPE},
                "links": {"related": f"/api/v2/oauth-clients/{t.oauth_client_id}"},
            }
        },
        "links": {"self": f"/api/v2/oauth-tokens/{t.id}"},
    }


def installation(v: TokenView) -> dict[str, Any]:
    t = v.token
    return {
        "id": t.ghain_id,
        "type": INSTALLATION_TYPE,
        "attributes": {
            "installation-id": t.github_installation_id,
            "name": t.github_account,
            "installation-type": t.github_account_type,
            "installation-url": f"{v.client.http_url}/settings/installations/"
            f"{t.github_installation_id}",
            # cairn's: which connection (and organization) the installation belongs to
            "oauth-client-id": v.client.id,
            "oauth-token-id": t.id,
            "organization-name": v.org.name,
        },
    }
