"""Signed URLs: self-authorising links (state uploads today; configuration versions and logs
next) that need no Authorization header, because the clients that follow them send none
(go-tfe ≥ 1.28 PUTs state to the upload URL bare).

A token is ``<field>.<field>….<expires>.<signature>``: the fields the URL's handler needs
back (e.g. the upload's kind and its single-use nonce), the expiry in Unix seconds on the
injected clock, and an HMAC-SHA256 (``crypto.Keyring.sign``) over a purpose, the resource the
URL is bound to (e.g. the state version's ID, which is elsewhere in the path) and the rest.
So a token works for one purpose, on one resource, until it expires; changing any part of it
(swapping a field, moving it to another resource) breaks the signature.

Tests move a ``FrozenClock`` past the expiry instead of waiting. Tokens never reach a log line:
``redact`` replaces them in a path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.errors import Unauthorized

# An HMAC-SHA256 in unpadded base64url: 43 characters.
_TOKEN: Final = re.compile(r"^(?:[A-Za-z0-9_-]+\.)+\d+\.[A-Za-z0-9_-]{43}$")
_FIELD: Final = re.compile(r"^[A-Za-z0-9_-]+$")


class Signer:
    """Signs and verifies URL tokens with a key derived from CAIRN_SECRET_KEY, on ``clock``."""

    def __init__(self, keyring: Keyring, clock: Clock) -> None:
        self._keys = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return "Signer(<redacted>)"

    def sign(self, purpose: str, bound_to: str, fields: Sequence[str], ttl: timedelta) -> str:
        """A token for ``fields`` (letters, digits, ``-`` and ``_``), valid for ``ttl``."""
        for f in fields:
            if not _FIELD.fullmatch(f):
                raise ValueError("a signed field holds only letters, digits, '-' and '_'")
        expires = int((self._clock.now() + ttl).timestamp())
        body = ".".join([*fields, str(expires)])
        return f"{body}.{self._keys.sign(purpose, f'{bound_to}.{body}')}"

    def verify(
        self, purpose: str, bound_to: str, token: str, *, fields: int, refused: str
    ) -> list[str]:
        """The fields of a valid, unexpired token signed for ``purpose`` and ``bound_to``;
        Unauthorized(``refused``) otherwise (the same answer for every reason, so a forger
        learns nothing)."""
        parts = token.split(".")
        if len(parts) != fields + 2 or not parts[-2].isdigit():
            raise Unauthorized(refused)
        body, signature = ".".join(parts[:-1]), parts[-1]
        if not self._keys.verify(purpose, f"{bound_to}.{body}", signature):
            raise Unauthorized(refused)
        if int(parts[-2]) < self._clock.now().timestamp():
            raise Unauthorized(refused)
        return parts[:fields]

    @staticmethod
    def redact(path: str) -> str:
        """``path`` with every signed token in it replaced by ``<redacted>``."""
        return redact(path)


def redact(path: str) -> str:
    """``path`` with every segment shaped like a signed token replaced by ``<redacted>``."""
    return "/".join("<redacted>" if _TOKEN.fullmatch(seg) else seg for seg in path.split("/"))
