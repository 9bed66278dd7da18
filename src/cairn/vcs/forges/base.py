"""The HTTP plumbing both forge clients share: bearer auth, timeouts, bounded answers, errors
that never carry the token, and archive streaming under a size cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from cairn.errors import PayloadTooLarge
from cairn.vcs.tokens import ForgeCredential, ForgeError, ForgeUnreachable

TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
ARCHIVE_TIMEOUT: Final = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_ARCHIVE_BYTES: Final = 100 * 1024 * 1024  # CAIRN_MAX_CONFIG_MB's default
MAX_JSON_BYTES: Final = 16 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class CommitInfo:
    message: str
    html_url: str | None
    author: str | None


class ForgeUnauthorized(ForgeError):
    """The forge answered 401: the token was rotated or revoked since it was read."""


def segment(value: str) -> str:
    """One URL path segment (``group/project`` becomes ``group%2Fproject``)."""
    return quote(value, safe="")


class ForgeHttp:
    """Requests to one forge API with one credential."""

    def __init__(
        self,
        credential: ForgeCredential,
        *,
        http: httpx.Client | None,
        max_archive_bytes: int,
        headers: dict[str, str],
    ) -> None:
        self.credential = credential
        self._http = http
        self.max_archive_bytes = max_archive_bytes
        self._headers = {"Authorization": f"Bearer {credential.token}", **headers}
        self._base = credential.api_url.rstrip("/")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(api_url={self._base!r}, token_id={self.credential.token_id!r})"
        )

    def url(self, path: str) -> str:
        return f"{self._base}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        """One call; None for a 404 when ``missing_ok``. Raises on every other error."""
        client = self._http if self._http is not None else httpx.Client(timeout=TIMEOUT)
        try:
            response = client.request(
                method,
                self.url(path),
                params=params,
                json=body,
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            raise ForgeUnreachable(
                f"the forge at {self._base} did not answer {what} ({type(exc).__name__})"
            ) from None
        finally:
            if self._http is None:
                client.close()
        if response.status_code == 404 and missing_ok:
            return None
        self.check(response, what)
        return response

    def json(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        response = self.request(method, path, what=what, **kwargs)
        if response is None:
            return None
        if len(response.content) > MAX_JSON_BYTES:
            raise ForgeError(f"the forge's answer to {what} is too large")
        try:
            return response.json()
        except json.JSONDecodeError:
            raise ForgeError(f"the forge answered {what} with something that is not JSON") from None

    def check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status >= 500:
            raise ForgeUnreachable(f"the forge at {self._base} answered {status} to {what}")
        message = _message(response)
        if status == 401:
            raise ForgeUnauthorized(
                f"the forge refused the connection's token for {what} (401{message}); "
                "re-authorise the connection or give it a new token",
                forge_status=status,
            )
        if status in (403, 404):
            raise ForgeError(
                f"the forge answered {status} to {what}{message}: the repository does not exist "
                "or the connection's token may not access it",
                forge_status=status,
            )
        raise ForgeError(f"the forge answered {status} to {what}{message}", forge_status=status)

    def stream(
        self, path: str, *, what: str, params: dict[str, Any] | None = None
    ) -> Iterator[bytes]:
        """The body of a GET in chunks, following redirects (the bearer is dropped on a
        redirect to another host by httpx), refused past ``max_archive_bytes``."""
        client = self._http if self._http is not None else httpx.Client(timeout=ARCHIVE_TIMEOUT)
        try:
            with client.stream(
                "GET",
                self.url(path),
                params=params,
                headers=self._headers,
                follow_redirects=True,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self.check(response, what)
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > self.max_archive_bytes:
                    raise self._too_large(what)
                seen = 0
                for chunk in response.iter_bytes(_CHUNK):
                    seen += len(chunk)
                    if seen > self.max_archive_bytes:
                        raise self._too_large(what)
                    yield chunk
        except httpx.HTTPError as exc:
            raise ForgeUnreachable(
                f"the forge at {self._base} did not answer {what} ({type(exc).__name__})"
            ) from None
        finally:
            if self._http is None:
                client.close()

    def _too_large(self, what: str) -> PayloadTooLarge:
        mib = self.max_archive_bytes // (1024 * 1024)
        return PayloadTooLarge(
            f"{what} is larger than {mib} MiB (CAIRN_MAX_CONFIG_MB); trim the repository or "
            "raise the limit"
        )


def _message(response: httpx.Response) -> str:
    """The forge's own error message, cut short (forges do not echo the bearer)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if isinstance(body, dict):
        for key in ("message", "error", "error_description"):
            value = body.get(key)
            if isinstance(value, str | list | dict) and value:
                text = value if isinstance(value, str) else json.dumps(value)
                return f": {text[:200]}"
    return ""
