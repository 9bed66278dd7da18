"""cairn's error tree, and the one table that maps it to JSON:API error objects.

CairnError                    root; never shown with a secret in its message
├── ConfigError               startup: refuse to run rather than fall back silently
│   └── SecretKeyMismatch     CAIRN_SECRET_KEY differs from the one the data was sealed with
├── SealError                 sealed data failed to open (tampered, swapped, wrong key)
└── ApiError                  answered to a client as a JSON:API error document
    ├── BadRequest        400
    ├── Unauthorized      401
    ├── Forbidden         403
    ├── NotFound          404  (also "exists, but you may not read it": no existence leak)
    ├── MethodNotAllowed  405
    ├── RequestTimeout    408  (the body came too slowly; the connection is closed)
    ├── Conflict          409
    ├── PayloadTooLarge   413
    ├── UnsupportedMedia  415
    ├── Invalid           422  (with a JSON pointer to the offending attribute)
    ├── TooManyRequests   429  (with Retry-After: an anonymous client's login attempts)
    ├── Unavailable       503
    └── InsufficientStorage 507  (the server's disk is full; nothing was stored)
"""

from __future__ import annotations

from typing import Any, ClassVar


class CairnError(Exception):
    """Root of every error cairn raises on purpose. ``code`` is stable and machine-readable."""

    code: ClassVar[str] = "error"


class ConfigError(CairnError):
    """The configuration cannot work; cairn refuses to start and says what to change."""

    code = "config"


class SecretKeyMismatch(ConfigError):
    """CAIRN_SECRET_KEY is not the key this database was initialised with."""

    code = "secret-key-mismatch"


class SealError(CairnError):
    """A sealed secret could not be opened: it was altered, moved to another row, or the key
    is wrong. The message never contains the secret or the key."""

    code = "seal"


class ApiError(CairnError):
    """An error answered to an API client. ``detail`` tells the user what happened and what to
    do; ``pointer`` names the offending part of the request body (JSON pointer)."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __init__(self, detail: str, *, pointer: str | None = None, parameter: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.headers: dict[str, str] = {}

    def to_jsonapi(self) -> dict[str, Any]:
        """One JSON:API error object (https://jsonapi.org/format/#error-objects)."""
        obj: dict[str, Any] = {
            "status": str(self.status),
            "title": self.title,
            "detail": self.detail,
        }
        if self.pointer:
            obj["source"] = {"pointer": self.pointer}
        elif self.parameter:
            obj["source"] = {"parameter": self.parameter}
        return obj


class BadRequest(ApiError):
    """The request is malformed (not JSON, not a JSON:API document, bad query parameter)."""

    status, title, code = 400, "Bad Request", "bad-request"


class Unauthorized(ApiError):
    """No valid API token was presented."""

    status, title, code = 401, "Unauthorized", "unauthorized"


class Forbidden(ApiError):
    """The caller may see the resource but not change it this way."""

    status, title, code = 403, "Forbidden", "forbidden"


class NotFound(ApiError):
    """The resource does not exist, or the caller may not read it (indistinguishable on purpose)."""

    status, title, code = 404, "Not Found", "not-found"


class MethodNotAllowed(ApiError):
    """The path exists but not with this HTTP method."""

    status, title, code = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(ApiError):
    """The request contradicts the current state (a lock held by someone else, an older serial)."""

    status, title, code = 409, "Conflict", "conflict"


class RequestTimeout(ApiError):
    """The client sent the request body too slowly (``CAIRN_BODY_TIMEOUT`` between chunks).
    The answer closes the connection: the rest of the body is not read."""

    status, title, code = 408, "Request Timeout", "request-timeout"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers["Connection"] = "close"


class PayloadTooLarge(ApiError):
    """The body exceeds its limit."""

    status, title, code = 413, "Payload Too Large", "too-large"


class UnsupportedMedia(ApiError):
    """The body's content type is not one this endpoint takes."""

    status, title, code = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(ApiError):
    """The document is well-formed but a value breaks a rule."""

    status, title, code = 422, "Unprocessable Entity", "invalid"


class TooManyRequests(ApiError):
    """A client sent more requests of a rate-limited kind than its budget (failed logins from
    one address); ``retry_after`` seconds until the next one is accepted (``Retry-After``)."""

    status, title, code = 429, "Too Many Requests", "too-many-requests"

    def __init__(self, detail: str, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = max(1, retry_after)
        self.headers["Retry-After"] = str(self.retry_after)


class Unavailable(ApiError):
    """cairn cannot serve this now (database unreachable, shutting down)."""

    status, title, code = 503, "Service Unavailable", "unavailable"


class InsufficientStorage(ApiError):
    """The server's disk (or database) is full: nothing was stored; retry once space is freed
    (RFC 4918 §11.5)."""

    status, title, code = 507, "Insufficient Storage", "insufficient-storage"
