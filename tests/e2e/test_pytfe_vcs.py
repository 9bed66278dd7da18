"""VCS connections through the official Python SDK, pytfe 1.5.0, against a real cairn server
over HTTPS on both metadata backends, with the test rig's fake forge (``tests/support/vcs``)
answering the token check: a GitLab access-token connection created with
``oauth_clients.create`` (the PAT path; cairn asks the forge whom the token belongs to), listed
and read, its token listed with ``oauth_tokens.list`` (the organization path pytfe uses), a
workspace created with a ``vcs_repo`` on it, and a token the forge refuses answered 4xx with
nothing stored. ``cairn vcs list`` shows the connection."""

from __future__ import annotations

import pytest
from pytfe import TFEClient
from pytfe.errors import TFEError
from pytfe.models import (
    OAuthClientCreateOptions,
    ServiceProviderType,
    VCSRepoOptions,
    WorkspaceCreateOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer
from tests.support.vcs.forge import Forge

pytestmark = pytest.mark.e2e


def test_gitlab_token_connection_and_vcs_workspace(
    tfe: TFEClient, org: str, server: CairnServer, forge: Forge
) -> None:
    pat = forge.add_pat("gitlab", user="alice")
    options = OAuthClientCreateOptions(
        name="gitlab",
        service_provider=ServiceProviderType.GITLAB_HOSTED,
        api_url=forge.gitlab_api_url,
        http_url=forge.gitlab_http_url,
        oauth_token=pat,
    )
    client = tfe.oauth_clients.create(org, options)
    assert client.id is not None and client.id.startswith("oc-")
    assert client.service_provider == ServiceProviderType.GITLAB_HOSTED
    assert client.http_url == forge.gitlab_http_url
    assert [c.id for c in tfe.oauth_clients.list(org)] == [client.id]
    assert tfe.oauth_clients.read(client.id).name == "gitlab"

    tokens = list(tfe.oauth_tokens.list(org))
    assert len(tokens) == 1
    token = tokens[0]
    assert token.id.startswith("ot-")
    assert token.service_provider_user == "alice"
    assert token.has_ssh_key is False
    assert tfe.oauth_tokens.read(token.id).id == token.id

    repo = forge.create_repo(tfe_api.unique_name("acme") + "/infra", files={"main.tf": ""})
    ws = tfe.workspaces.create(
        org,
        WorkspaceCreateOptions(
            name=tfe_api.unique_name("vcs"),
            vcs_repo=VCSRepoOptions(identifier=repo.path, oauth_token_id=token.id, branch="main"),
        ),
    )
    assert ws.vcs_repo is not None
    assert ws.vcs_repo.identifier == repo.path
    assert ws.vcs_repo.oauth_token_id == token.id
    assert ws.vcs_repo.service_provider == "gitlab_hosted"
    assert ws.vcs_repo.webhook_url and ws.vcs_repo.webhook_url.endswith(
        f"/api/cairn/v1/vcs-hooks/{client.id}"
    )
    # A plain workspace (pytfe sends "vcs-repo": {}) has none.
    plain = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("cli")))
    assert plain.vcs_repo is None

    # A token the forge refuses: the create fails, nothing is stored.
    refused = OAuthClientCreateOptions(
        service_provider=ServiceProviderType.GITLAB_HOSTED,
        api_url=forge.gitlab_api_url,
        http_url=forge.gitlab_http_url,
        oauth_token="glpat-not-issued-by-this-forge",
    )
    with pytest.raises(TFEError) as refusal:
        tfe.oauth_clients.create(org, refused)
    assert "refused the token" in str(refusal.value)
    assert [c.id for c in tfe.oauth_clients.list(org)] == [client.id]

    tfe.oauth_clients.delete(client.id)
    assert list(tfe.oauth_clients.list(org)) == []
