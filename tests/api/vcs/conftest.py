"""VCS connection tests in-process: the ``app`` fixtures, and forge stand-ins for the two calls
the connection API makes to a forge (``whoami`` on a token given at create, and a GitHub App's
installations).

The stand-in answers like the forges' user endpoints (GitLab ``GET /api/v4/user``, GitHub
``GET /user``): a known token → its username and expiry; an unknown one → the forge's 401,
which the forge clients turn into a 4xx naming the connection, never the token. It replaces
``VcsConnections.check_token`` per test (the real one goes through ``vcs.forges``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cairn.errors import Invalid
from cairn.vcs.github_app import GitHubApp, Installation
from tests.api.conftest import admin, any_app, anyio_backend, app
from tests.support.app import InProcessCairn

__all__ = [
    "FakeForgeUsers",
    "FakeInstallations",
    "admin",
    "any_app",
    "anyio_backend",
    "app",
    "forge_users",
    "installations",
]


@dataclass
class FakeForgeUsers:
    """Tokens the stand-in forge knows: value → (username, expiry)."""

    known: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (kind, api_url)

    def __call__(
        self, kind: str, service_provider: str, api_url: str, http_url: str, token: str
    ) -> tuple[str, datetime | None]:
        self.asked.append((kind, api_url))
        if token not in self.known:
            raise Invalid(
                f"the forge at {api_url} refused the token (401 Unauthorized): check that it "
                "is valid and not expired, and has the api (GitLab) or repo (GitHub) scope",
                pointer="/data/attributes/oauth-token-string",
            )
        return self.known[token]


def forge_users(app: InProcessCairn) -> FakeForgeUsers:
    fake = FakeForgeUsers()
    app.ctx.vcs.check_token = fake
    return fake


@dataclass
class FakeInstallations:
    """GitHub's ``GET /app/installations`` for one App: what it lists, and the apps asked."""

    listed: list[Installation] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # app IDs

    def __call__(self, app: GitHubApp, now: datetime) -> list[Installation]:
        self.asked.append(app.app_id)
        assert "PRIVATE KEY" in app.private_key  # the sealed key came back intact
        return list(self.listed)


def installations(app: InProcessCairn) -> FakeInstallations:
    fake = FakeInstallations()
    app.ctx.vcs.list_installations = fake
    return fake
