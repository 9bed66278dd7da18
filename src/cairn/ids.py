"""Resource identifiers, minted in one place.

TFC style: a type prefix, a dash and 16 alphanumerics (``ws-3fQz…``). pytfe recognises a
workspace ID only by ``^ws-[A-Za-z0-9]+$``, so the random part never contains ``-`` or ``_``.
"""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

PREFIXES = {
    "organization": "org",
    "project": "prj",
    "workspace": "ws",
    "state_version": "sv",
    "state_version_output": "wsout",
    "user": "user",
    "token": "at",
    "tag": "tag",
    "run": "run",
    "signing_key": "key",
    "audit_event": "evt",
    "team": "team",
    "role": "role",
    "grant": "grant",
    "team_workspace": "tws",
    "team_project": "tprj",
    "organization_membership": "ou",
    "configuration_version": "cv",
    "variable": "var",
    "variable_set": "varset",
    "agent_pool": "apool",
    "agent": "agent",
    "agent_token": "at",  # HCP's agent tokens share the at- prefix of API tokens
    "plan": "plan",
    "apply": "apply",
    "job": "job",
    "job_token": "jt",
    "run_event": "re",
    "oauth_client": "oc",
    "oauth_token": "ot",
    "github_app_installation": "ghain",
    "vcs_delivery": "vcsd",
    "vcs_status": "vcss",
    "s3_credentials": "s3c",
}

_ID_RE = re.compile(r"^[a-z]+-[A-Za-z0-9]{16}$")
_PREFIX_SET = frozenset(PREFIXES.values())


def new_id(kind: str) -> str:
    """A fresh random ID for a resource of ``kind`` (a key of PREFIXES): 16 base62 characters
    (≈95 bits) from one draw of the system's random source."""
    prefix = PREFIXES[kind]
    n = int.from_bytes(secrets.token_bytes(12), "big")  # 96 bits ≥ 62**16
    chars = []
    for _ in range(16):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return f"{prefix}-" + "".join(chars)


def looks_like(kind: str, value: str) -> bool:
    """True when ``value`` has the shape of an ID of ``kind`` (no database lookup)."""
    return bool(_ID_RE.fullmatch(value)) and value.startswith(PREFIXES[kind] + "-")


def looks_like_any(value: str) -> bool:
    """True when ``value`` has the shape of an ID of any kind cairn mints (``user-…``,
    ``team-…``, …), ignoring case. Names people choose (usernames) must never pass this: the
    API accepts "a name or an ID" in places, and a name shaped like someone's ID would be
    taken for it."""
    prefix, dash, rest = value.partition("-")
    return (
        bool(dash)
        and prefix.lower() in _PREFIX_SET
        and len(rest) == 16
        and rest.isascii()
        and rest.isalnum()
    )
