"""What cairn needs to know about the team's IdP, and the HTTP client that talks to it.

The issuer must be ``https://`` except on a loopback address (a local test IdP); a private CA
is trusted through ``ca_file`` (CAIRN_OIDC_CA_FILE) and then *only* that CA.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from cairn.auth.idp.errors import IdpConfigError

DEFAULT_SCOPES = ("openid", "email", "profile")
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True, kw_only=True)
class IdpSettings:
    """The relying-party configuration (CAIRN_OIDC_*). ``redirect_uri`` is
    ``{public_url}/auth/oidc/callback``. The client secret never appears in a repr."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    groups_claim: str = "groups"
    ca_file: Path | None = None

    def validate(self) -> None:
        """Raise IdpConfigError naming every setting that cannot work."""
        problems: list[str] = []
        try:
            check_url(self.issuer, what="CAIRN_OIDC_ISSUER")
        except IdpConfigError as exc:
            problems.append(str(exc))
        parts = urlsplit(self.issuer)
        if parts.query or parts.fragment:
            problems.append("CAIRN_OIDC_ISSUER must not have a query or fragment")
        if not self.client_id:
            problems.append("CAIRN_OIDC_CLIENT_ID is empty")
        if not self.client_secret:
            problems.append("CAIRN_OIDC_CLIENT_SECRET is empty")
        if "openid" not in self.scopes:
            problems.append("CAIRN_OIDC_SCOPES must include 'openid'")
        if any(not s or any(c.isspace() for c in s) for s in self.scopes):
            problems.append("CAIRN_OIDC_SCOPES contains an empty or blank scope")
        if not self.groups_claim:
            problems.append("the groups claim name is empty")
        redirect = urlsplit(self.redirect_uri)
        if redirect.scheme not in ("https", "http") or not redirect.hostname or redirect.fragment:
            problems.append(
                f"redirect URI {self.redirect_uri!r} is not an absolute http(s) URL "
                "(it is derived from CAIRN_PUBLIC_URL)"
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            problems.append(f"CAIRN_OIDC_CA_FILE {str(self.ca_file)!r} is not a readable file")
        if problems:
            raise IdpConfigError("; ".join(problems))


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, what: str) -> str:
    """An absolute URL that is https, or plain http on a loopback host only (a local IdP):
    anything else would let a network attacker swap keys or read codes."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise IdpConfigError(f"{what} {url!r} is not an absolute https URL")
    if parts.username or parts.password:
        raise IdpConfigError(f"{what} {url!r} must not contain credentials")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise IdpConfigError(
            f"{what} {url!r} uses plain http on a non-loopback host; the IdP must be "
            "reached over https (plain http is allowed only for 127.0.0.1/localhost test IdPs)"
        )
    return url


def make_http_client(settings: IdpSettings) -> httpx.Client:
    """The client for the IdP: TLS verified against the system store, or against
    ``ca_file`` alone; no redirects followed (discovery, token and JWKS URLs are exact)."""
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise IdpConfigError(
                f"CAIRN_OIDC_CA_FILE {str(settings.ca_file)!r} cannot be loaded as PEM "
                f"certificates: {exc.__class__.__name__}"
            ) from None
    return httpx.Client(
        verify=verify,
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
        headers={"User-Agent": "cairn-oidc-rp"},
    )
