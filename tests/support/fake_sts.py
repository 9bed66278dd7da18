"""Local stand-ins for the services that consume cairn's workload identity tokens.

Each fake verifies a token the way its real service does — the issuer's discovery document,
then its JWKS, the key named by the header's ``kid``, RS256 only, ``iss``/``exp``/``nbf`` — and
then applies that service's own trust rules and error shapes, so that the real SDKs surface
the failures they would surface in production:

* ``FakeAwsSts`` — STS ``AssumeRoleWithWebIdentity`` (query protocol, XML): the OIDC provider's
  client IDs (``aud``), the role's trust policy (``StringEquals`` on ``aud``, ``StringLike`` on
  ``sub``), ``InvalidIdentityToken`` / ``AccessDenied`` errors; plus ``GetCallerIdentity`` for
  the temporary keys it issued.
* ``FakeGcp`` — STS ``/v1/token`` (RFC 8693 token exchange): the provider's audience (the
  ``//iam.googleapis.com/<provider>`` form or an allowed audience), an attribute condition on
  ``sub``; and IAM credentials ``generateAccessToken`` for service accounts the federated
  principal may impersonate.
* ``FakeVault`` — JWT auth ``login`` (a token with ``aud`` needs ``bound_audiences``;
  ``bound_claims`` with glob matching), ``renew-self``, ``revoke-self``, ``lookup-self``.

All of them listen on 127.0.0.1 only.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import httpx
import jwt

from cairn.tls import DevTls

DISCOVERY = "/.well-known/openid-configuration"


class TokenRejected(Exception):
    """The token failed verification; the message is what the service would say."""


@dataclass
class OidcVerifier:
    """Verifies tokens of one issuer through discovery + JWKS (fetched when a ``kid`` is
    unknown, as the clouds do)."""

    issuer: str
    ssl_context: ssl.SSLContext | None = None
    _keys: dict[str, Any] = field(default_factory=dict)
    fetches: int = 0

    def _refresh(self) -> None:
        verify: ssl.SSLContext | bool = self.ssl_context or True
        doc = httpx.get(self.issuer + DISCOVERY, verify=verify, timeout=10).json()
        if doc.get("issuer") != self.issuer:
            raise TokenRejected("the discovery document names another issuer")
        jwks = httpx.get(doc["jwks_uri"], verify=verify, timeout=10).json()
        self.fetches += 1
        self._keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks["keys"] if k.get("kid")}

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by the issuer; audience is checked by the caller."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        if header.get("alg") != "RS256" or not header.get("kid"):
            raise TokenRejected("the token is not RS256 with a kid")
        if header["kid"] not in self._keys:
            self._refresh()
        key = self._keys.get(header["kid"])
        if key is None:
            raise TokenRejected("no key of the issuer matches the token's kid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("Token signature invalid") from None
        except jwt.ExpiredSignatureError:
            raise TokenRejected("Token expired") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("Issuer does not match") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"Token invalid: {exc}") from None
        return claims


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else list(aud or [])


class _Server:
    """A threaded HTTP server on 127.0.0.1 calling ``self.handle(method, path, headers,
    body) -> (status, content_type, bytes)``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._tls = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, or ``https://localhost:<port>`` when serving TLS."""
        assert self._httpd is not None
        port = self._httpd.server_address[1]
        return f"https://localhost:{port}" if self._tls else f"http://127.0.0.1:{port}"

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        raise NotImplementedError

    @contextmanager
    def running(self, tls: DevTls | None = None) -> Iterator[_Server]:
        """Serve until the block ends; with ``tls`` (a certificate for ``localhost``), HTTPS."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > 1024 * 1024:
                    self.send_response(413)
                    self.end_headers()
                    return
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.calls.append(f"{self.command} {urlsplit(self.path).path}")
                status, ctype, data = fake.handle(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self._tls = True
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(timeout=5)


def _json(status: int, doc: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(doc).encode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- AWS STS ------------------------------------------------------------------------------------


@dataclass
class AwsRole:
    arn: str
    sub_like: str  # StringLike on "<provider>:sub"
    aud: str  # StringEquals on "<provider>:aud"


class FakeAwsSts(_Server):
    """STS with one IAM OIDC provider (``issuer``, ``client_ids``) and roles trusting it."""

    def __init__(self, verifier: OidcVerifier, client_ids: list[str], roles: list[AwsRole]):
        super().__init__()
        self.verifier = verifier
        self.client_ids = client_ids
        self.roles = {r.arn: r for r in roles}
        self.issued: dict[str, dict[str, str]] = {}  # access key id → session

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
        xml = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
            "</Error><RequestId>fake-request</RequestId></ErrorResponse>"
        )
        return status, "text/xml", xml.encode()

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = params.get("Action")
        if action == "AssumeRoleWithWebIdentity":
            return self._assume(params)
        if action == "GetCallerIdentity":
            auth = headers.get("authorization", "")
            key = auth.split("Credential=", 1)[-1].split("/", 1)[0] if "Credential=" in auth else ""
            session = self.issued.get(key)
            if session is None:
                return self._error(403, "InvalidClientTokenId", "The security token is invalid.")
            xml = (
                "<GetCallerIdentityResponse><GetCallerIdentityResult>"
                f"<Arn>{escape(session['assumed'])}</Arn><UserId>AROAFAKE:{escape(session['name'])}"
                "</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
                "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                "</GetCallerIdentityResponse>"
            )
            return 200, "text/xml", xml.encode()
        return self._error(400, "InvalidAction", f"Could not find operation {action}")

    def _assume(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        token = params.get("WebIdentityToken", "")
        role = self.roles.get(params.get("RoleArn", ""))
        name = params.get("RoleSessionName", "")
        try:
            claims = self.verifier.verify(token)
        except TokenRejected as exc:
            return self._error(400, "InvalidIdentityToken", str(exc))
        token_aud = audiences(claims)
        if not any(a in self.client_ids for a in token_aud):
            return self._error(400, "InvalidIdentityToken", "Incorrect token audience")
        if (
            role is None
            or role.aud not in token_aud
            or not fnmatch.fnmatchcase(str(claims["sub"]), role.sub_like)
        ):
            return self._error(
                403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
            )
        key_id = "ASIA" + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(30)
        session_token = secrets.token_urlsafe(60)
        assumed = (
            role.arn.replace(":role/", ":assumed-role/").replace(":iam:", ":sts:") + "/" + name
        )
        self.issued[key_id] = {"assumed": assumed, "name": name, "sub": str(claims["sub"])}
        expires = _iso(datetime.now(UTC) + timedelta(hours=1))
        xml = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{escape(str(claims['sub']))}</SubjectFromWebIdentityToken>"
            f"<Audience>{escape(token_aud[0])}</Audience>"
            f"<AssumedRoleUser><Arn>{escape(assumed)}</Arn><AssumedRoleId>AROAFAKE:{escape(name)}"
            "</AssumedRoleId></AssumedRoleUser>"
            f"<Credentials><SessionToken>{session_token}</SessionToken>"
            f"<SecretAccessKey>{secret}</SecretAccessKey><Expiration>{expires}</Expiration>"
            f"<AccessKeyId>{key_id}</AccessKeyId></Credentials>"
            f"<Provider>{escape(self.verifier.issuer)}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>fake-request</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return 200, "text/xml", xml.encode()


# -- Google STS and IAM credentials ---------------------------------------------------------------


@dataclass
class GcpProvider:
    name: str  # projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<prov>
    sub_like: str  # the attribute condition, as a glob on assertion.sub
    allowed_audiences: list[str] = field(default_factory=list)
    impersonators: dict[str, str] = field(default_factory=dict)  # SA e-mail → sub glob


class FakeGcp(_Server):
    def __init__(self, verifier: OidcVerifier, provider: GcpProvider):
        super().__init__()
        self.verifier = verifier
        self.provider = provider
        self.federated: dict[str, str] = {}  # federated access token → sub
        self.access_tokens: dict[str, str] = {}  # SA access token → e-mail

    @staticmethod
    def _oauth_error(error: str, description: str) -> tuple[int, str, bytes]:
        return _json(400, {"error": error, "error_description": description})

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        route = urlsplit(path).path
        if route == "/v1/token" and method == "POST":
            return self._exchange(headers, body)
        if route.startswith("/v1/projects/-/serviceAccounts/") and route.endswith(
            ":generateAccessToken"
        ):
            email = route.removeprefix("/v1/projects/-/serviceAccounts/").removesuffix(
                ":generateAccessToken"
            )
            return self._impersonate(email, headers)
        return _json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

    def _exchange(self, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if "json" in headers.get("content-type", ""):
            params = json.loads(body)
        else:
            params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if params.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return self._oauth_error("unsupported_grant_type", "grant_type is not token-exchange")
        if params.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
            return self._oauth_error("invalid_request", "subject_token_type must be jwt")
        expected = f"//iam.googleapis.com/{self.provider.name}"
        if params.get("audience") != expected:
            return self._oauth_error(
                "invalid_target", "The target service indicated by the audience is invalid."
            )
        try:
            claims = self.verifier.verify(str(params.get("subject_token", "")))
        except TokenRejected as exc:
            return self._oauth_error("invalid_grant", f"ID Token rejected: {exc}")
        allowed = self.provider.allowed_audiences or [
            expected,
            f"https://iam.googleapis.com/{self.provider.name}",
        ]
        if not any(a in allowed for a in audiences(claims)):
            return self._oauth_error(
                "invalid_grant",
                f"The audience in ID Token {audiences(claims)} does not match the expected "
                "audience.",
            )
        if not fnmatch.fnmatchcase(str(claims["sub"]), self.provider.sub_like):
            return self._oauth_error(
                "unauthorized_client",
                "The given credential is rejected by the attribute condition.",
            )
        access = "ya29.fed-" + secrets.token_urlsafe(24)
        self.federated[access] = str(claims["sub"])
        return _json(
            200,
            {
                "access_token": access,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def _impersonate(self, email: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        sub = self.federated.get(bearer)
        if sub is None:
            return _json(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        pattern = self.provider.impersonators.get(email)
        if pattern is None or not fnmatch.fnmatchcase(sub, pattern):
            return _json(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Permission 'iam.serviceAccounts."
                        "getAccessToken' denied on resource (or it may not exist).",
                        "status": "PERMISSION_DENIED",
                    }
                },
            )
        token = "ya29.sa-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = email
        expire = _iso(datetime.now(UTC) + timedelta(hours=1))
        return _json(200, {"accessToken": token, "expireTime": expire})


# -- Vault JWT auth ---------------------------------------------------------------------------


@dataclass
class VaultRole:
    name: str
    bound_audiences: list[str]
    bound_claims: dict[str, str]  # glob per claim (bound_claims_type = "glob")
    user_claim: str = "terraform_full_workspace"
    token_ttl_s: int = 1200
    renewable: bool = True


@dataclass
class VaultToken:
    role: str
    entity: str
    namespace: str
    expires: float
    renewable: bool
    ttl_s: int
    renewals: int = 0
    revoked: bool = False


class FakeVault(_Server):
    def __init__(
        self,
        verifier: OidcVerifier,
        roles: list[VaultRole],
        *,
        mount: str = "jwt",
        namespace: str = "",
    ):
        super().__init__()
        self.verifier = verifier
        self.roles = {r.name: r for r in roles}
        self.mount = mount
        self.namespace = namespace
        self.tokens: dict[str, VaultToken] = {}

    def _errors(self, status: int, *errors: str) -> tuple[int, str, bytes]:
        return _json(status, {"errors": list(errors)})

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        route = urlsplit(path).path
        namespace = headers.get("x-vault-namespace", "").strip("/")
        if route == f"/v1/auth/{self.mount}/login" and method in ("POST", "PUT"):
            if namespace != self.namespace:
                return self._errors(
                    400, f'no handler for route "{route[4:]}". route entry not found.'
                )
            return self._login(json.loads(body or b"{}"))
        token = self.tokens.get(headers.get("x-vault-token", ""))
        if token is None or token.revoked or token.expires < time.time():
            return self._errors(403, "permission denied")
        if route == "/v1/auth/token/renew-self":
            if not token.renewable:
                return self._errors(400, "lease is not renewable")
            token.renewals += 1
            token.expires = time.time() + token.ttl_s
            return _json(200, self._auth_doc(headers["x-vault-token"], token))
        if route == "/v1/auth/token/revoke-self":
            token.revoked = True
            return 204, "application/json", b""
        if route == "/v1/auth/token/lookup-self":
            return _json(
                200,
                {"data": {"ttl": int(token.expires - time.time()), "meta": {"role": token.role}}},
            )
        return self._errors(404, "unsupported path")

    def _auth_doc(self, value: str, token: VaultToken) -> dict[str, Any]:
        return {
            "auth": {
                "client_token": value,
                "policies": ["default"],
                "metadata": {"role": token.role},
                "lease_duration": token.ttl_s,
                "renewable": token.renewable,
                "entity_id": token.entity,
            }
        }

    def _login(self, doc: dict[str, Any]) -> tuple[int, str, bytes]:
        role = self.roles.get(str(doc.get("role", "")))
        if role is None:
            return self._errors(400, f'role "{doc.get("role")}" could not be found')
        try:
            claims = self.verifier.verify(str(doc.get("jwt", "")))
        except TokenRejected as exc:
            text = "failed to verify id token signature" if "signature" in str(exc) else str(exc)
            return self._errors(400, f"error validating token: {text}")
        token_aud = audiences(claims)
        if token_aud and not role.bound_audiences:
            return self._errors(
                400, "audience claim found in JWT but no audiences bound to the role"
            )
        if role.bound_audiences and not any(a in role.bound_audiences for a in token_aud):
            return self._errors(
                400,
                "error validating token: invalid audience (aud) claim: audience claim does "
                "not match any expected audience",
            )
        for claim, pattern in role.bound_claims.items():
            if not fnmatch.fnmatchcase(str(claims.get(claim, "")), pattern):
                return self._errors(
                    400,
                    f'error validating claims: claim "{claim}" does not match any '
                    "associated bound claim values",
                )
        value = "hvs." + secrets.token_urlsafe(24)
        token = VaultToken(
            role=role.name,
            entity=str(claims.get(role.user_claim, "")),
            namespace=self.namespace,
            expires=time.time() + role.token_ttl_s,
            renewable=role.renewable,
            ttl_s=role.token_ttl_s,
        )
        self.tokens[value] = token
        return _json(200, self._auth_doc(value, token))
