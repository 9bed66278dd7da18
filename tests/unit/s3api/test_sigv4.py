"""SigV4 verification against AWS's published S3 examples (the "Signature Calculations for
the Authorization Header", "… Query String" and "… Multiple Chunks" pages use the example key
below) and against requests botocore signs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cairn.s3api import sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AKID = "AKIAIOSFODNN7EXAMPLE"
WHEN = datetime(2013, 5, 24, tzinfo=UTC)
AUTH = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def _check(req: sigv4.Incoming, now: datetime = WHEN) -> sigv4.Verified:
    claim = sigv4.claimed(req)
    assert claim is not None
    return sigv4.verify(req, claim, SECRET, now)


def _get_object(signature: str) -> sigv4.Incoming:
    return sigv4.Incoming(
        "GET",
        "/test.txt",
        [],
        {
            "host": "examplebucket.s3.amazonaws.com",
            "range": "bytes=0-9",
            "x-amz-content-sha256": sigv4.EMPTY_SHA256,
            "x-amz-date": "20130524T000000Z",
            "authorization": f"{AUTH},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            f"Signature={signature}",
        },
    )


def test_aws_get_object_example() -> None:
    _check(_get_object("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))


def test_a_changed_signature_does_not_match() -> None:
    with pytest.raises(sigv4.SigError) as err:
        _check(_get_object("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb42"))
    assert err.value.code == "SignatureDoesNotMatch"


def test_clock_skew_is_refused() -> None:
    sig = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    _check(_get_object(sig), WHEN + timedelta(minutes=14))
    with pytest.raises(sigv4.SigError) as err:
        _check(_get_object(sig), WHEN + timedelta(minutes=16))
    assert err.value.code == "RequestTimeTooSkewed"


def _presigned(now: datetime) -> sigv4.Verified:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2F"
        "us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&"
        "X-Amz-SignedHeaders=host&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    req = sigv4.Incoming(
        "GET", "/test.txt", parse_qsl(query), {"host": "examplebucket.s3.amazonaws.com"}
    )
    return _check(req, now)


def test_aws_presigned_url_example_and_its_expiry() -> None:
    assert _presigned(WHEN + timedelta(hours=23)).claimed.payload_hash == sigv4.UNSIGNED
    with pytest.raises(sigv4.SigError) as err:
        _presigned(WHEN + timedelta(hours=24, seconds=1))
    assert err.value.code == "AccessDenied"


def test_aws_chunked_upload_example() -> None:
    """66560 bytes of 'a' in chunks of 65536, 1024 and 0 bytes, each signed."""
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    names = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
    names += "x-amz-decoded-content-length;x-amz-storage-class"
    req = sigv4.Incoming(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [],
        {
            "host": "s3.amazonaws.com",
            "x-amz-date": "20130524T000000Z",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": sigv4.STREAMING,
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560",
            "content-length": "66824",
            "authorization": f"{AUTH},SignedHeaders={names},Signature={seed}",
        },
    )
    verified = _check(req)
    signatures = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]
    body = b""
    for size, sig in zip([65536, 1024, 0], signatures, strict=True):
        body += f"{size:x};chunk-signature={sig}\r\n".encode() + b"a" * size + b"\r\n"
    assert len(body) == 66824
    out = bytearray()
    decoder = sigv4.ChunkDecoder(out.extend, verified)
    for i in range(0, len(body), 1000):  # fed in pieces that split headers and data
        decoder.feed(body[i : i + 1000])
    decoder.close()
    assert bytes(out) == b"a" * 66560

    tampered = body.replace(b"a" * 10, b"b" * 10, 1)
    decoder = sigv4.ChunkDecoder(bytearray().extend, verified)
    with pytest.raises(sigv4.SigError) as err:
        decoder.feed(tampered)
    assert err.value.code == "SignatureDoesNotMatch"

    decoder = sigv4.ChunkDecoder(bytearray().extend, verified)
    decoder.feed(body[:-40])
    with pytest.raises(sigv4.SigError) as err:
        decoder.close()
    assert err.value.code == "IncompleteBody"


def _from_botocore(request: AWSRequest) -> sigv4.Incoming:
    url = urlsplit(request.url)
    headers = {k.lower(): str(v) for k, v in request.headers.items()}
    headers["host"] = url.netloc
    return sigv4.Incoming(request.method, url.path, parse_qsl(url.query, True), headers)


def test_botocore_header_signature_with_a_payload_hash() -> None:
    body = b'{"version": 4}'
    request = AWSRequest(
        method="PUT", url="https://cairn.test/s3/acme/env%3A/dev/a%20b+c.tfstate?x=1&y", data=body
    )
    S3SigV4Auth(Credentials(AKID, SECRET, "tok"), "s3", "eu-west-1").add_auth(request)
    req = _from_botocore(request)
    verified = _check(req, datetime.now(UTC))
    assert verified.claimed.session_token == "tok"
    hasher = sigv4.PayloadHasher(verified.payload_hash)
    hasher.feed(body)
    hasher.close()
    wrong = sigv4.PayloadHasher(verified.payload_hash)
    wrong.feed(body + b" ")
    with pytest.raises(sigv4.SigError) as err:
        wrong.close()
    assert err.value.code == "XAmzContentSHA256Mismatch"
    assert verified.payload_hash == hashlib.sha256(body).hexdigest()


def test_botocore_presigned_url() -> None:
    request = AWSRequest(method="GET", url="https://cairn.test/s3/acme/k~1.tfstate")
    S3SigV4QueryAuth(Credentials(AKID, SECRET, "tok"), "s3", "us-east-1", expires=60).add_auth(
        request
    )
    req = _from_botocore(request)
    assert isinstance(req.headers, dict)
    req.headers.pop("x-amz-content-sha256", None)
    now = datetime.now(UTC)
    assert _check(req, now).claimed.session_token == "tok"
    with pytest.raises(sigv4.SigError):
        _check(req, now + timedelta(seconds=120))


def test_presigned_expiry_above_seven_days_is_refused() -> None:
    request = AWSRequest(method="GET", url="https://cairn.test/s3/acme/k")
    S3SigV4QueryAuth(
        Credentials(AKID, SECRET), "s3", "us-east-1", expires=7 * 24 * 3600 + 1
    ).add_auth(request)
    with pytest.raises(sigv4.SigError) as err:
        sigv4.claimed(_from_botocore(request))
    assert err.value.code == "AuthorizationQueryParametersError"
