"""VCS connections (``oauth_clients``), the projects a connection is limited to, and the
tokens cairn holds for them (``oauth_tokens``): their rows and the kind rules.

A **connection** (TFE's "OAuth client") is one way cairn talks to a forge. Its ``kind`` is
cairn's and decides how tokens are obtained and kept (see ``derive_kind``):

===============  ====================================================================
``gitlab_oauth``  GitLab OAuth application (``key``/``secret``); tokens from the browser
                  authorization-code flow (``vcs.connect``), refreshed (``vcs.tokens``)
``gitlab_token``  a GitLab personal/group/project access token given at create
``github_oauth``  GitHub OAuth app (``key``/``secret``); browser flow, no refresh
``github_token``  a GitHub personal access token given at create
``github_app``    a GitHub App (``app_id`` + sealed private key); one token row per
                  installation, minted on demand
===============  ====================================================================

Secrets are sealed with ``crypto.Keyring`` under an ``aad`` naming the row and the field
(``secret_aad`` and friends below); the token pair's aad names its ``generation``, so a pair
half-written by a lost race is undecryptable rather than mixed. ``generation`` moves by one
each time a new pair is stored (compare-and-set: ``vcs.tokens``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime

ServiceProvider = Literal[
    "github",
    "github_enterprise",
    "gitlab_hosted",
    "gitlab_community_edition",
    "gitlab_enterprise_edition",
]
SERVICE_PROVIDERS: Final[tuple[str, ...]] = (
    "github",
    "github_enterprise",
    "gitlab_hosted",
    "gitlab_community_edition",
    "gitlab_enterprise_edition",
)
GITLAB_PROVIDERS: Final = frozenset(
    {"gitlab_hosted", "gitlab_community_edition", "gitlab_enterprise_edition"}
)
GITHUB_PROVIDERS: Final = frozenset({"github", "github_enterprise"})

Kind = Literal["gitlab_oauth", "gitlab_token", "github_app", "github_oauth", "github_token"]
KINDS: Final[tuple[str, ...]] = (
    "gitlab_oauth",
    "gitlab_token",
    "github_app",
    "github_oauth",
    "github_token",
)
# Kinds whose tokens come from the browser authorization-code flow (``vcs.connect``).
OAUTH_KINDS: Final = frozenset({"gitlab_oauth", "github_oauth"})
# Kinds whose one token is given at create (``oauth-token-string``).
TOKEN_KINDS: Final = frozenset({"gitlab_token", "github_token"})

TOKEN_STATUSES: Final[tuple[str, ...]] = ("ok", "needs_reauth")


class KindError(ValueError):
    """The attributes given do not describe one kind of connection; the message says why."""


def derive_kind(
    service_provider: str,
    *,
    has_token: bool,
    has_app: bool,
    has_oauth_app: bool,
) -> Kind:
    """The connection kind from TFE's ``service-provider`` and which attributes were given.

    - ``app-id`` + ``private-key`` (GitHub providers only) → ``github_app``;
    - ``oauth-token-string`` → ``gitlab_token`` / ``github_token``;
    - ``key`` + ``secret`` → ``gitlab_oauth`` / ``github_oauth``.

    Exactly one of the three must be given (HCP requires ``oauth-token-string`` or
    ``key``/``secret``; the App is cairn's extension)."""
    given = [has_token, has_app, has_oauth_app]
    if sum(given) != 1:
        raise KindError(
            "give exactly one of: oauth-token-string (personal/group access token), "
            "key and secret (OAuth application), or app-id and private-key (GitHub App)"
        )
    gitlab = service_provider in GITLAB_PROVIDERS
    if has_app:
        if gitlab:
            raise KindError("app-id and private-key (a GitHub App) need a GitHub service-provider")
        return "github_app"
    if has_token:
        return "gitlab_token" if gitlab else "github_token"
    return "gitlab_oauth" if gitlab else "github_oauth"


def forge_of(kind: str) -> Literal["gitlab", "github"]:
    """Which forge a connection kind speaks to (webhooks: how deliveries are verified)."""
    return "gitlab" if kind.startswith("gitlab") else "github"


def secret_aad(client_id: str) -> str:
    return f"oauth_clients:{client_id}:secret"


def app_key_aad(client_id: str) -> str:
    return f"oauth_clients:{client_id}:app_key"


def webhook_secret_aad(client_id: str) -> str:
    return f"oauth_clients:{client_id}:webhook_secret"


def access_aad(token_id: str, generation: int) -> str:
    return f"oauth_tokens:{token_id}:access:{generation}"


def refresh_aad(token_id: str, generation: int) -> str:
    return f"oauth_tokens:{token_id}:refresh:{generation}"


def ssh_key_aad(token_id: str) -> str:
    return f"oauth_tokens:{token_id}:ssh_key"


class OAuthClient(Base):
    """A VCS connection. Sealed fields are bytes; ``repr`` shows none of them."""

    __tablename__ = "oauth_clients"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    service_provider: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    http_url: Mapped[str] = mapped_column(String(500))
    api_url: Mapped[str] = mapped_column(String(500))
    # OAuth application's client ID (OAuth kinds) or a GitHub App's client ID.
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    app_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    app_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # GitLab X-Gitlab-Token / GitHub HMAC secret: generated by cairn, or a GitHub App's own.
    webhook_secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    organization_scoped: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_fork_plans: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)

    def __repr__(self) -> str:
        return f"OAuthClient(id={self.id!r}, kind={self.kind!r}, org={self.organization_id!r})"


class OAuthClientProject(Base):
    """A project a connection that is not organization-scoped may be used in."""

    __tablename__ = "oauth_client_projects"
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class OAuthToken(Base):
    """A token cairn holds for a connection (TFE's "OAuth token"); for a GitHub App, one per
    installation (``github_installation_id``, shown as ``ghain_id``)."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (UniqueConstraint("oauth_client_id", "github_installation_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[str] = mapped_column(String(32), index=True)
    service_provider_user: Mapped[str] = mapped_column(String(255), default="")
    access_token_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    refresh_token_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    status_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    github_installation_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The installation's ``ghain-…`` ID (GitHub App tokens only).
    ghain_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    # Installation's account (GitHub App tokens only): login and type (User | Organization).
    github_account: Mapped[str | None] = mapped_column(String(255), nullable=True)
    github_account_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ssh_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return (
            f"OAuthToken(id={self.id!r}, client={self.oauth_client_id!r}, "
            f"generation={self.generation!r}, status={self.status!r})"
        )


class ConnectState(Base):
    """One browser authorization of an OAuth connection (``vcs.connect``).

    Made by ``POST …/connect`` for a user (``id``: the hash of the one-time URL's nonce);
    opening the URL sets ``opened_at`` once and stores the hash of the ``state`` sent to the
    forge and of a cookie binding the callback to that browser; the callback sets ``used_at``
    once. Both are conditional UPDATEs: a replayed URL or state changes nothing."""

    __tablename__ = "vcs_connect_states"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(32))
    # Re-authorisation of this token (None: a new token).
    oauth_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    browser_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
