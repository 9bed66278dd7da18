"""Users and their API tokens. Tokens are stored only as a keyed hash."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("idp_issuer", "idp_subject"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    is_site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Team and organization tokens act as service accounts (as in HCP Terraform). A service
    # account belongs to its organization (and, for a team token, its team) and dies with it.
    is_service_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # People who log in through the IdP are identified by (issuer, sub), never by email.
    idp_issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idp_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r})"


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # HMAC-SHA256 of the token under a key derived from CAIRN_SECRET_KEY (crypto.Keyring).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "user": created by a person; "admin-env": CAIRN_ADMIN_TOKEN; "bootstrap": first start.
    kind: Mapped[str] = mapped_column(String(16), default="user")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Who created it (TFE's ``created-by``): the person whose token asked, or None (a token
    # cairn made itself, and those from before this column).
    created_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, user_id={self.user_id!r}, kind={self.kind!r})"


class OAuthCode(Base):
    """A ``terraform login`` authorization code: stored hashed, single-use (consumed by a
    conditional UPDATE), short-lived, bound to the PKCE challenge, redirect URI and client. In
    the database, so any replica can redeem a code another replica issued."""

    __tablename__ = "oauth_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(255))
    code_challenge: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginState(Base):
    """A pending login at the external IdP (RP-01): ``state`` (hashed key), ``nonce`` and the
    PKCE verifier (sealed), and the ``terraform login`` request to resume. Single-use."""

    __tablename__ = "login_states"
    __table_args__ = (Index("ix_login_states_client_key_expires_at", "client_key", "expires_at"),)
    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce_hash: Mapped[str] = mapped_column(String(64))
    sealed_verifier: Mapped[bytes] = mapped_column(LargeBinary)
    resume: Mapped[str] = mapped_column(String(2000))  # the original authorization query
    # Who asked (``throttle.client_key``): pending logins are bounded per address (L3).
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
