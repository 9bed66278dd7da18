"""S3's error answers: an XML ``<Error>`` with S3's code, its status, and request IDs.

``S3Error`` is an ``ApiError`` so that it travels through the request pipeline; the S3 routes
render every ``ApiError`` with ``render`` (cairn's own errors mapped onto S3's codes by status),
because S3 clients parse only S3's XML.
"""

from __future__ import annotations

import secrets
from xml.sax.saxutils import escape

from starlette.responses import Response

from cairn.errors import ApiError, Unauthorized
from cairn.s3api.sigv4 import SigError

# cairn's errors, by status, as S3 codes.
_BY_STATUS = {
    400: "InvalidRequest",
    401: "AccessDenied",
    403: "AccessDenied",
    404: "NoSuchKey",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "OperationAborted",
    411: "MissingContentLength",
    412: "PreconditionFailed",
    413: "EntityTooLarge",
    415: "InvalidRequest",
    422: "InvalidArgument",
    429: "SlowDown",
    503: "ServiceUnavailable",
    507: "ServiceUnavailable",
}


class S3Error(ApiError):
    """An error with S3's own code (``s3_code``) and status."""

    def __init__(self, s3_code: str, detail: str, status: int, resource: str = "") -> None:
        super().__init__(detail)
        self.s3_code = s3_code
        self.status = status  # type: ignore[misc]
        self.resource = resource

    @classmethod
    def of(cls, err: SigError) -> S3Error:
        return cls(err.code, err.message, err.status)


class S3Denied(Unauthorized):
    """A request without cairn S3 credentials: S3 answers 403 AccessDenied (not 401)."""

    s3_code = "AccessDenied"
    resource = ""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.status = 403  # type: ignore[misc]


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error(
        "NoSuchBucket",
        f"The specified bucket does not exist: no organization {bucket!r} that you may read",
        404,
        bucket,
    )


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, key)


def request_id() -> str:
    return secrets.token_hex(8).upper()


def render(err: ApiError, *, head: bool = False) -> Response:
    code = getattr(err, "s3_code", None) or _BY_STATUS.get(err.status, "InternalError")
    rid = request_id()
    resource = str(getattr(err, "resource", ""))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(err.detail)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{rid}</RequestId></Error>"
    ).encode()
    headers = {"x-amz-request-id": rid, "x-amz-id-2": rid, **err.headers}
    return Response(
        b"" if head else body,
        status_code=err.status,
        media_type="application/xml",
        headers=headers,
    )
