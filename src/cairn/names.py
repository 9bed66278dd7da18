"""Name rules shared by organizations, projects and workspaces.

Names appear in URL paths (go-tfe validates ``^[a-zA-Z0-9\\-\\._]+$`` client-side) and in
workload-identity subjects (``organization:{org}:project:{project}:workspace:{ws}:…``), so a
``/`` or ``:`` is refused when the resource is created, never later.
"""

from __future__ import annotations

import re

from cairn.errors import Invalid

# Characters no text column can hold: PostgreSQL text refuses NUL, and a lone surrogate (JSON
# "\ud800") cannot be encoded as UTF-8 for either database.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a NUL byte or a lone surrogate), or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return "a NUL byte" if found.group() == "\x00" else "an unpaired surrogate"


_SLUG = re.compile(r"^[A-Za-z0-9_-]+$")
_PROJECT = re.compile(r"^[A-Za-z0-9 _-]+$")


def _explain(kind: str, value: str, allowed: str) -> str:
    bad = sorted({c for c in value if not (c.isalnum() and c.isascii()) and c not in allowed})
    shown = " ".join(repr(c) for c in bad[:5])
    words = allowed_words(allowed)
    return f"{kind} name {value!r} contains {shown}; use only letters, numbers, {words}"


def allowed_words(allowed: str) -> str:
    words = {"-": "'-'", "_": "'_'", " ": "spaces"}
    return " and ".join(words[c] for c in allowed if c in words)


def check_slug(
    kind: str, value: str, *, max_len: int, pointer: str = "/data/attributes/name"
) -> str:
    if not value:
        raise Invalid(f"{kind} name must not be empty", pointer=pointer)
    if len(value) > max_len:
        raise Invalid(f"{kind} name must be at most {max_len} characters", pointer=pointer)
    if not _SLUG.fullmatch(value):
        raise Invalid(_explain(kind, value, "-_"), pointer=pointer)
    return value


def check_project_name(value: str, *, pointer: str = "/data/attributes/name") -> str:
    if not value.strip():
        raise Invalid("project name must not be empty", pointer=pointer)
    if len(value) > 40:
        raise Invalid("project name must be at most 40 characters", pointer=pointer)
    if not _PROJECT.fullmatch(value):
        raise Invalid(_explain("project", value, "-_ "), pointer=pointer)
    return value


_TAG = re.compile(r"^[a-z0-9][a-z0-9:_-]*$")


def check_tag(value: str, *, pointer: str) -> str:
    value = value.strip()
    if not value or len(value) > 255 or not _TAG.fullmatch(value):
        raise Invalid(
            f"tag {value!r} is not valid: use lowercase letters, numbers, ':', '-' and '_' "
            "(at most 255 characters, starting with a letter or number)",
            pointer=pointer,
        )
    return value
