"""aws-chunked bodies: STREAMING-AWS4-HMAC-SHA256-PAYLOAD (every chunk signed, chained from the
request's signature) and STREAMING-UNSIGNED-PAYLOAD-TRAILER (what botocore sends over HTTPS
with a checksum trailer)."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.api.s3api.conftest import S3Env
from tests.api.s3api.test_objects import state

STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
EMPTY = hashlib.sha256(b"").hexdigest()


class _Streaming(S3SigV4Auth):  # type: ignore[misc]
    def payload(self, request: AWSRequest) -> str:
        return STREAMING


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _chunked(s3: S3Env, key: str, data: bytes, *, tamper: bool = False) -> httpx.Response:
    creds = s3.credentials()
    sizes = [len(data) // 2, len(data) - len(data) // 2, 0]
    framing = sum(len(f"{n:x};chunk-signature=") + 64 + 4 + n for n in sizes)
    url = f"{s3.url}/s3/{s3.org}/{key}"
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "Content-Length": str(framing),
        },
    )
    auth = _Streaming(
        Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        "s3",
        "us-east-1",
    )
    auth.add_auth(request)
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    k = _hmac(("AWS4" + creds["SecretAccessKey"]).encode(), amz_date[:8])
    for part in ("us-east-1", "s3", "aws4_request"):
        k = _hmac(k, part)
    previous = str(request.headers["Authorization"]).rsplit("Signature=", 1)[1]
    body, offset = b"", 0
    for n in sizes:
        chunk = data[offset : offset + n]
        offset += n
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY,
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        previous = hmac.new(k, text.encode(), hashlib.sha256).hexdigest()
        sent = chunk if not (tamper and n) else chunk[:-1] + b" "
        body += f"{n:x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
    headers = {k2: str(v) for k2, v in request.headers.items()}
    return httpx.put(url, content=body, headers=headers)


def test_signed_chunks(s3: S3Env) -> None:
    response = _chunked(s3, "chunked.tfstate", state(1))
    assert response.status_code == 200, response.text
    stored = s3.client().get_object(Bucket=s3.org, Key="chunked.tfstate")["Body"].read()
    assert stored == state(1)
    refused = _chunked(s3, "chunked.tfstate", state(2), tamper=True)
    assert refused.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in refused.text
    # Nothing of the refused body was stored.
    assert s3.client().get_object(Bucket=s3.org, Key="chunked.tfstate")["Body"].read() == state(1)


def test_unsigned_trailer_chunks(s3: S3Env) -> None:
    creds = s3.credentials()
    data = state(5)
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    url = f"{s3.url}/s3/{s3.org}/trailer.tfstate"
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32",
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        },
    )

    class _Trailer(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: AWSRequest) -> str:
            return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    _Trailer(
        Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        "s3",
        "us-east-1",
    ).add_auth(request)
    headers = {k: str(v) for k, v in request.headers.items()}
    response = httpx.put(url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    got = s3.client().get_object(Bucket=s3.org, Key="trailer.tfstate")["Body"].read()
    assert json.loads(got)["serial"] == 5
