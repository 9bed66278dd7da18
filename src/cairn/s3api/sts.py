"""STS ``AssumeRoleWithWebIdentity`` at ``POST /s3/sts``: a cairn workload-identity token (an
id-token of a run phase, or one minted with ``cairn id-token`` for a CI job) → S3 credentials,
so the AWS SDKs' web-identity chain (``AWS_WEB_IDENTITY_TOKEN_FILE``, ``AWS_ROLE_ARN``,
``AWS_ENDPOINT_URL_STS``) works unchanged.

Trust rule: the id-token must be signed by one of cairn's published (not revoked) keys, be
issued by this cairn (``iss`` = the public URL), name ``AUDIENCE`` (``<public URL>/s3``) in
its ``aud`` and not be expired; the ``RoleArn`` must be
``arn:cairn:iam::<organization>:role/workspace/<workspace>`` naming the token's own
organization and workspace. The credentials then act as that run phase (``authz.RunJob``):
state read on that workspace, state write too for an ``apply`` token, holding locks as the
token's run; they expire after ``DurationSeconds`` (default 1 h, 15 min to 12 h) and end early
if the signing key is revoked or the workspace deleted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import jwt
from starlette.responses import Response
from starlette.routing import Route

from cairn.clock import Clock
from cairn.errors import ApiError
from cairn.identity.issuer import Issuer
from cairn.s3api.credentials import DEFAULT_TTL, MAX_TTL, MIN_TTL, Credentials, WebIdentity
from cairn.s3api.errors import request_id
from cairn.tfeapi.http import Call, route

PATH = "/s3/sts"
MAX_BODY = 16 * 1024
_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_LEEWAY = 30  # seconds of clock difference allowed on the id-token's expiry
_ROLE = re.compile(r"^arn:cairn:iam::([A-Za-z0-9_-]+):role/workspace/([A-Za-z0-9_-]+)$")


def audience(public_url: str) -> str:
    return public_url.rstrip("/") + "/s3"


class StsError(ApiError):
    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.sts_code = code
        self.status = status  # type: ignore[misc]


def render(err: ApiError) -> Response:
    code = getattr(err, "sts_code", None) or (
        "InvalidParameterValue" if err.status < 500 else "InternalFailure"
    )
    rid = request_id()
    body = (
        f'<ErrorResponse xmlns="{_NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(err.detail)}</Message></Error><RequestId>{rid}</RequestId>"
        "</ErrorResponse>"
    )
    return Response(
        body.encode(),
        status_code=err.status,
        media_type="text/xml",
        headers={"x-amzn-RequestId": rid},
    )


def usable_key(issuer: Issuer, kid: str) -> Mapping[str, Any] | None:
    """The public JWK of ``kid`` if it is a published, unrevoked signing key."""
    for key in issuer.snapshot().keys:
        if key.kid == kid and key.state != "revoked" and key.published_at is not None:
            return key.public_jwk
    return None


class Sts:
    def __init__(self, issuer: Issuer, credentials: Credentials, clock: Clock) -> None:
        self._issuer = issuer
        self._credentials = credentials
        self._clock = clock

    def handle(self, call: Call) -> Response:
        form = dict(parse_qsl(call.raw.decode("utf-8", "replace"), keep_blank_values=True))
        form.update(call.request.query_params)
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            raise StsError(
                "InvalidAction",
                "cairn's STS serves only Action=AssumeRoleWithWebIdentity",
            )
        if form.get("Version") != "2011-06-15":
            raise StsError("InvalidParameterValue", "Version must be 2011-06-15")
        token = form.get("WebIdentityToken", "")
        role = form.get("RoleArn", "")
        session_name = form.get("RoleSessionName", "")
        if not token or not role or not session_name:
            raise StsError(
                "MissingParameter", "RoleArn, RoleSessionName and WebIdentityToken are required"
            )
        seconds_text = form.get("DurationSeconds", str(int(DEFAULT_TTL.total_seconds())))
        lo, hi = int(MIN_TTL.total_seconds()), int(MAX_TTL.total_seconds())
        if not seconds_text.isdigit() or not lo <= int(seconds_text) <= hi:
            raise StsError("ValidationError", f"DurationSeconds must be from {lo} to {hi}")
        claims, kid = self._verify(token)
        found = _ROLE.fullmatch(role)
        if found is None:
            raise StsError(
                "ValidationError",
                "RoleArn must be arn:cairn:iam::<organization>:role/workspace/<workspace>",
            )
        org, ws = found.group(1), found.group(2)
        if (
            claims.get("terraform_organization_name") != org
            or claims.get("terraform_workspace_name") != ws
        ):
            raise StsError(
                "AccessDenied",
                f"the id-token is not for workspace {org}/{ws}: the role trusts only tokens of "
                "its own organization and workspace",
                403,
            )
        phase = str(claims.get("terraform_run_phase", ""))
        if phase not in ("plan", "apply"):
            raise StsError("InvalidIdentityToken", "the id-token has no run phase")
        web = WebIdentity(
            organization_id=str(claims["terraform_organization_id"]),
            workspace_id=str(claims["terraform_workspace_id"]),
            run_id=str(claims["terraform_run_id"]),
            phase=phase,
            kid=kid,
            subject=str(claims["sub"]),
        )
        issued = self._credentials.issue_web_identity(
            web, org, now=self._clock.now(), ttl=timedelta(seconds=int(seconds_text))
        )
        body = (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{_NS}">'
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{escape(web.subject)}</SubjectFromWebIdentityToken>"
            f"<Audience>{escape(audience(self._issuer.issuer_url))}</Audience>"
            "<AssumedRoleUser>"
            f"<Arn>{escape(role)}/{escape(session_name)}</Arn>"
            f"<AssumedRoleId>{issued.access_key_id}:{escape(session_name)}</AssumedRoleId>"
            "</AssumedRoleUser>"
            "<Credentials>"
            f"<AccessKeyId>{issued.access_key_id}</AccessKeyId>"
            f"<SecretAccessKey>{issued.secret_access_key}</SecretAccessKey>"
            f"<SessionToken>{issued.session_token}</SessionToken>"
            f"<Expiration>{issued.expires_at:%Y-%m-%dT%H:%M:%SZ}</Expiration>"
            "</Credentials>"
            f"<Provider>{escape(self._issuer.issuer_url)}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{request_id()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return Response(body.encode(), media_type="text/xml", headers={"Cache-Control": "no-store"})

    def _verify(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", ""))
        except jwt.PyJWTError:
            raise StsError("InvalidIdentityToken", "the web identity token is not a JWT") from None
        jwk = usable_key(self._issuer, kid)
        if jwk is None:
            raise StsError(
                "InvalidIdentityToken",
                "the web identity token is not signed by one of this cairn's published keys",
            )
        key = jwt.PyJWK(dict(jwk))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(jwk.get("alg", "RS256"))],
                audience=audience(self._issuer.issuer_url),
                issuer=self._issuer.issuer_url,
                # Expiry on cairn's clock, below.
                options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False},
            )
        except jwt.InvalidAudienceError:
            raise StsError(
                "InvalidIdentityToken",
                f"the web identity token's audience must include "
                f"{audience(self._issuer.issuer_url)}",
            ) from None
        except jwt.PyJWTError as exc:
            raise StsError(
                "InvalidIdentityToken", f"the web identity token is invalid: {exc}"
            ) from None
        if int(claims["exp"]) + _LEEWAY <= self._clock.now().timestamp():
            raise StsError("ExpiredTokenException", "the web identity token has expired")
        return claims, kid


def routes(sts: Sts) -> list[Route]:
    return [
        route(PATH, sts.handle, ["POST"], auth=None, limit=MAX_BODY, errors=render, write=False)
    ]
