"""Signing-key rows. The private key is sealed (AES-256-GCM, kid as associated data) and erased
once the key can never sign again; the public JWK is stored in clear so serving the JWKS never
touches the cipher. Partial unique indexes allow one ``active`` and one ``next`` key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime, partial_index


class OidcSigningKey(Base):
    __tablename__ = "oidc_signing_keys"
    __table_args__ = (
        partial_index(
            "uq_oidc_signing_keys_one_active",
            "state",
            unique=True,
            where="state = 'active'",
        ),
        partial_index(
            "uq_oidc_signing_keys_one_next",
            "state",
            unique=True,
            where="state = 'next'",
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    alg: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(8))
    public_jwk: Mapped[str] = mapped_column(Text)
    sealed_private_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retire_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __repr__(self) -> str:
        return f"OidcSigningKey(version={self.version}, kid={self.kid!r}, state={self.state!r})"
