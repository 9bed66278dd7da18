"""HTTP Basic authentication with a cairn token as the password: what Terraform's ``http``
backend sends (``username``/``password``, or ``TF_HTTP_USERNAME``/``TF_HTTP_PASSWORD``), as do
GitLab-style setups. ``Authorization: Bearer <token>`` works too.

The token is checked by the pipeline's ``"token"`` authenticator (``auth.tokens``): this one
only finds it on the request. The username is ignored (GitLab setups put a user name or
``gitlab-ci-token`` there; the token alone names its owner). A missing or refused credential
is a 401 with ``WWW-Authenticate: Basic realm="cairn"`` (RFC 7617 section 2).
"""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from cairn.errors import Unauthorized
from cairn.tfeapi.http import Authenticated, Authenticator, bearer_token

CHALLENGE = 'Basic realm="cairn", charset="UTF-8"'
MAX_HEADER = 2048  # a token is far shorter; bounds the base64 decoded per request


def challenge(err: Unauthorized) -> Unauthorized:
    err.headers["WWW-Authenticate"] = CHALLENGE
    return err


def basic_password(request: Request) -> str | None:
    """The password of an ``Authorization: Basic`` header, or None (absent, malformed or
    empty)."""
    header = request.headers.get("authorization")
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _username, sep, password = decoded.partition(":")
    if not sep or not password:
        return None
    return password


class BasicTokenAuthenticator:
    """The pipeline's ``"http-basic"`` authenticator: a cairn token as the Basic password
    (or a Bearer token), checked by ``tokens`` (the ``"token"`` authenticator)."""

    def __init__(self, tokens: Authenticator) -> None:
        self._tokens = tokens

    def credential(self, request: Request) -> str | None:
        return basic_password(request) or bearer_token(request)

    def authenticate(self, credential: str) -> Authenticated:
        try:
            return self._tokens.authenticate(credential)
        except Unauthorized as err:
            raise challenge(err) from None

    def missing(self) -> Unauthorized:
        return challenge(
            Unauthorized(
                "a cairn API token is required: set it as the backend's password "
                '(password = "<token>", or TF_HTTP_PASSWORD; any username), or send '
                "'Authorization: Bearer <token>'"
            )
        )
