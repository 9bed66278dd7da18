"""Short-lived S3 credentials, stateless: nothing is stored when they are issued.

* access key id: ``CAIRN`` + 15 random upper-case letters/digits (the 20 characters of an AWS
  key id, so tools that check the shape accept it);
* secret access key: derived from the server's key ring and the access key id
  (``Keyring.sign``: HMAC-SHA256 under a key HKDF-derived from CAIRN_SECRET_KEY for this
  purpose), so any replica re-derives it and none stores it;
* session token: a JWT, HS256 under another purpose-derived key (issuer and verifier are the
  same server: an asymmetric key would buy nothing), naming the subject (user id, the cairn
  token it came from), the organization scope (or none), the access key id it belongs to and
  the expiry (default 1 h, at most 12 h).

A credential is only as good as what it came from: every request re-reads the source token
(``TokenService.authenticate_id``), so revoking that token or disabling its user ends the
credentials at once.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt

from cairn.crypto import Keyring
from cairn.s3api.sigv4 import SigError

ACCESS_KEY_PREFIX = "CAIRN"
DEFAULT_TTL = timedelta(hours=1)
MAX_TTL = timedelta(hours=12)
MIN_TTL = timedelta(minutes=15)  # AWS STS's minimum too
_ALPHABET = string.ascii_uppercase + string.digits
_ISSUER = "cairn-s3"
_SECRET_PURPOSE = "s3-secret-access-key"  # noqa: S105 - a derivation label
_JWT_PURPOSE = "s3-session-token"


@dataclass(frozen=True)
class WebIdentity:
    """Credentials from STS ``AssumeRoleWithWebIdentity``: what the cairn id-token said."""

    organization_id: str
    workspace_id: str
    run_id: str
    phase: str  # plan | apply
    kid: str  # the key that signed the id-token (re-checked: a revoked key ends them)
    subject: str


@dataclass(frozen=True)
class Session:
    """What a session token says: the API token it came from (``token_id``), or the id-token
    (``web``)."""

    access_key_id: str
    user_id: str
    token_id: str
    organization: str | None  # None: every organization the source reaches
    expires_at: datetime
    web: WebIdentity | None = None


@dataclass(frozen=True)
class Issued:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The shape AWS's credential_process and STS answers use."""
        return {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class Credentials:
    """Issues and checks S3 credentials with keys derived from the key ring."""

    def __init__(self, keyring: Keyring) -> None:
        self._keys = keyring
        self._jwt_key = keyring.sign(_JWT_PURPOSE, "v1").encode()

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def secret_for(self, access_key_id: str) -> str:
        return self._keys.sign(_SECRET_PURPOSE, access_key_id)

    def issue(
        self,
        *,
        user_id: str,
        token_id: str,
        organization: str | None,
        now: datetime,
        ttl: timedelta = DEFAULT_TTL,
    ) -> Issued:
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"duration must be from {MIN_TTL} to {MAX_TTL}")
        akid = ACCESS_KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(15))
        expires = now + ttl
        claims: dict[str, Any] = {
            "iss": _ISSUER,
            "sub": user_id,
            "tid": token_id,
            "akid": akid,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        if organization is not None:
            claims["org"] = organization
        token = jwt.encode(claims, self._jwt_key, algorithm="HS256")
        return Issued(akid, self.secret_for(akid), token, expires.replace(microsecond=0))

    def issue_web_identity(
        self, web: WebIdentity, organization: str, *, now: datetime, ttl: timedelta
    ) -> Issued:
        """Credentials for an id-token's workspace (STS ``AssumeRoleWithWebIdentity``)."""
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"duration must be from {MIN_TTL} to {MAX_TTL}")
        akid = ACCESS_KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(15))
        expires = now + ttl
        claims: dict[str, Any] = {
            "iss": _ISSUER,
            "sub": web.subject,
            "tid": "",
            "akid": akid,
            "org": organization,
            "wi": {
                "org_id": web.organization_id,
                "ws": web.workspace_id,
                "run": web.run_id,
                "phase": web.phase,
                "kid": web.kid,
            },
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(claims, self._jwt_key, algorithm="HS256")
        return Issued(akid, self.secret_for(akid), token, expires.replace(microsecond=0))

    @staticmethod
    def check_key(access_key_id: str) -> None:
        """InvalidAccessKeyId for an access key id cairn never issues."""
        if not access_key_id.startswith(ACCESS_KEY_PREFIX) or len(access_key_id) != 20:
            raise SigError(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records: cairn's "
                "access keys start with CAIRN (get some with `cairn s3-credentials`)",
            )

    def session(self, token: str | None, access_key_id: str, now: datetime) -> Session:
        """The session of ``token``, checked against the access key id it must belong to;
        SigError with S3's codes otherwise."""
        self.check_key(access_key_id)
        if not token:
            raise SigError(
                "InvalidToken",
                "cairn's credentials always have a session token; send it "
                "(AWS_SESSION_TOKEN / x-amz-security-token)",
                400,
            )
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=["HS256"],
                issuer=_ISSUER,
                options={"verify_exp": False, "require": ["exp", "sub", "tid", "akid"]},
            )
        except jwt.PyJWTError:
            raise SigError(
                "InvalidToken", "The provided token is malformed or otherwise invalid.", 400
            ) from None
        if claims["akid"] != access_key_id:
            raise SigError(
                "InvalidAccessKeyId", "the session token does not belong to this access key id"
            )
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
        if expires <= now:
            raise SigError(
                "ExpiredToken",
                "The provided token has expired: get new credentials (cairn s3-credentials)",
                400,
            )
        org = claims.get("org")
        wi = claims.get("wi")
        web = None
        if isinstance(wi, dict):
            web = WebIdentity(
                organization_id=str(wi["org_id"]),
                workspace_id=str(wi["ws"]),
                run_id=str(wi["run"]),
                phase=str(wi["phase"]),
                kid=str(wi["kid"]),
                subject=str(claims["sub"]),
            )
        return Session(
            access_key_id=access_key_id,
            user_id=str(claims["sub"]),
            token_id=str(claims["tid"]),
            organization=str(org) if org is not None else None,
            expires_at=expires,
            web=web,
        )
