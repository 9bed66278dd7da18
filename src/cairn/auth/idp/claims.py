"""ID-token claim checks (OpenID Connect Core §3.1.3.7, RP-03), after the signature verified.

``now`` and ``leeway`` are passed in; every failure raises InvalidIdToken with a machine
``reason`` (wrong-issuer, wrong-audience, wrong-azp, expired, not-yet-valid, issued-in-future,
too-old, nonce-mismatch, at-hash-mismatch, bad-claim). Messages never quote the token, the
nonce or the access token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cairn.auth.idp.errors import InvalidIdToken
from cairn.crypto import b64url

MAX_SUBJECT = 255  # users.idp_subject


def _time(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidIdToken(f"the ID token has no '{name}' claim", reason="bad-claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidIdToken(f"the ID token's '{name}' is not a NumericDate", reason="bad-claim")
    return float(value)


def at_hash(access_token: str) -> str:
    """``at_hash`` for RS256/ES256: the left half of SHA-256, base64url (Core §3.1.3.6)."""
    return b64url(hashlib.sha256(access_token.encode("utf-8")).digest()[:16])


def check(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    now: datetime,
    leeway: timedelta,
    max_age: timedelta,
    nonce_matches: Callable[[str], bool],
    access_token: str | None,
) -> None:
    """Raise InvalidIdToken unless every claim holds.

    ``max_age`` bounds how old ``iat`` may be: an ID token is minted by the token request
    cairn just made, so an old one is a replay. ``at_hash`` is checked whenever present;
    it is not required, because cairn never uses the access token (Core §3.1.3.6 makes it
    optional in the code flow, and Entra ID and Auth0 omit it there)."""
    if claims.get("iss") != issuer:
        raise InvalidIdToken(
            f"the ID token was issued by another issuer, not {issuer!r}", reason="wrong-issuer"
        )

    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidIdToken("the ID token's 'aud' is missing or malformed", reason="bad-claim")
    if client_id not in audiences:
        raise InvalidIdToken(
            "the ID token is not meant for cairn: its audience does not contain cairn's client_id",
            reason="wrong-audience",
        )
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise InvalidIdToken(
            "the ID token has several audiences but no 'azp' naming cairn", reason="wrong-azp"
        )
    if azp is not None and azp != client_id:
        raise InvalidIdToken(
            "the ID token was issued to another client ('azp' is not cairn's client_id)",
            reason="wrong-azp",
        )

    t = now.timestamp()
    slack = leeway.total_seconds()
    exp = _time(claims, "exp", required=True)
    iat = _time(claims, "iat", required=True)
    nbf = _time(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if t >= exp + slack:
        raise InvalidIdToken("the ID token has expired", reason="expired")
    if iat > t + slack:
        raise InvalidIdToken(
            "the ID token claims to be issued in the future (check the IdP's and cairn's clocks)",
            reason="issued-in-future",
        )
    if iat < t - max_age.total_seconds() - slack:
        raise InvalidIdToken("the ID token was issued too long ago", reason="too-old")
    if nbf is not None and nbf > t + slack:
        raise InvalidIdToken("the ID token is not valid yet ('nbf')", reason="not-yet-valid")

    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not nonce_matches(nonce):
        raise InvalidIdToken(
            "the ID token's nonce does not belong to this login", reason="nonce-mismatch"
        )

    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT:
        raise InvalidIdToken(
            "the ID token's 'sub' is missing, empty or longer than 255 characters",
            reason="bad-claim",
        )

    expected = claims.get("at_hash")
    if (
        expected is not None
        and access_token is not None
        and (not isinstance(expected, str) or expected != at_hash(access_token))
    ):
        raise InvalidIdToken(
            "the ID token's at_hash does not match the access token", reason="at-hash-mismatch"
        )


def string_claim(claims: Mapping[str, Any], name: str) -> str:
    """An optional string claim ('' when absent); a non-string value is refused."""
    value = claims.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidIdToken(f"the ID token's '{name}' is not a string", reason="bad-claim")
    return value


def groups_claim(claims: Mapping[str, Any], name: str) -> list[str]:
    """The groups claim: a list of strings (a single string counts as one group); absent
    means no groups. Anything else fails closed: groups grant permissions."""
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return list(dict.fromkeys(value))
    raise InvalidIdToken(
        f"the ID token's '{name}' claim is not a list of group names", reason="bad-claim"
    )
