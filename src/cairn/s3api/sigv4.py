"""AWS Signature Version 4, verified exactly (pure: no I/O, the time passed in).

What is checked, from AWS's "Signature Version 4 signing process" and the S3 pages
"Authenticating Requests: Using the Authorization Header", "… Query Parameters" (presigned
URLs) and "… Transferring Payload in Multiple Chunks":

* the *canonical request*: method, canonical URI (each path segment URI-encoded once, as S3
  does: no double encoding), canonical query (pairs URI-encoded then sorted; a presigned URL's
  ``X-Amz-Signature`` left out), the signed headers (lower-cased names, values trimmed and
  inner runs of spaces collapsed), the list of signed headers and the payload hash;
* the *string to sign* ``AWS4-HMAC-SHA256\\n<amz-date>\\n<scope>\\n<sha256(canonical)>`` and
  the *signing key* ``HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
  "aws4_request")``; signatures compared with ``hmac.compare_digest``;
* time: the request's ``X-Amz-Date`` within ``MAX_SKEW`` of now (``RequestTimeTooSkewed``);
  a presigned URL's ``X-Amz-Expires`` at most 7 days and not past;
* the payload: a hex SHA-256 (``PayloadHasher`` checks it against the bytes received),
  ``UNSIGNED-PAYLOAD``, or ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (``ChunkDecoder`` checks every
  chunk's signature, chained from the seed signature) and ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``
  (aws-chunked without chunk signatures, what newer SDKs send with a checksum trailer).

Errors are ``SigError`` with S3's code; the HTTP layer renders them as S3 XML.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SPACES = re.compile(r" +")


class SigError(Exception):
    """A request refused by the signature check: ``code`` and ``status`` are S3's."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Incoming:
    """What of an HTTP request the signature covers. ``path``: the path as sent (still
    percent-encoded); ``query``: the decoded query pairs in order; ``headers``: lower-cased
    names (a repeated header joined with commas, as HTTP allows)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Claimed:
    """The signature's claims, before anything is verified."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    amz_date: str
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str
    presigned: bool
    session_token: str | None
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Verified:
    """A request whose signature matched: what the body checks need."""

    claimed: Claimed
    signing_key: bytes = field(repr=False)

    @property
    def payload_hash(self) -> str:
        return self.claimed.payload_hash


def _uri_encode(value: str, *, slash: bool) -> str:
    return quote(value, safe="-_.~/" if slash else "-_.~")


def canonical_uri(raw_path: str) -> str:
    """Each segment decoded and encoded again once (S3 signs the path as it is sent, encoded
    once; clients differ on which characters they leave alone, decoding evens that out)."""
    return _uri_encode(unquote(raw_path), slash=True) or "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted(
        (_uri_encode(k, slash=False), _uri_encode(v, slash=False))
        for k, v in pairs
        if k != "X-Amz-Signature"
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    req: Incoming, signed: Iterable[str], payload_hash: str, *, as_sent: bool = False
) -> str:
    """``as_sent``: the path exactly as the client sent it (botocore signs that) instead of
    re-encoded (what the SDKs that encode every reserved character produce)."""
    names = list(signed)
    lines = [f"{name}:{_SPACES.sub(' ', req.headers.get(name, '').strip())}\n" for name in names]
    return "\n".join(
        [
            req.method,
            req.path if as_sent else canonical_uri(req.path),
            canonical_query(req.query),
            "".join(lines),
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


# ---- parsing ------------------------------------------------------------------------------------


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise SigError(
            "AuthorizationQueryParametersError" if "/" in value else "InvalidArgument",
            "the credential must be <access-key-id>/<YYYYMMDD>/<region>/<service>/aws4_request",
            400,
        )
    return parts[0], parts[1], parts[2], parts[3]


def claimed(req: Incoming) -> Claimed | None:
    """The signature's claims (header or presigned form), or None when the request carries
    no SigV4 signature at all."""
    header = req.headers.get("authorization")
    query = dict(req.query)
    if header is not None:
        return _from_header(req, header)
    if "X-Amz-Algorithm" in query or "X-Amz-Signature" in query:
        return _from_query(req, query)
    if "AWSAccessKeyId" in query:
        raise SigError(
            "InvalidRequest",
            "Signature Version 2 is not supported: sign with Signature Version 4 (boto3: "
            "Config(signature_version='s3v4'))",
            400,
        )
    return None


def _from_header(req: Incoming, header: str) -> Claimed:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigError(
            "InvalidArgument",
            f"only {ALGORITHM} (Signature Version 4) is supported; got {algorithm[:40]!r}",
            400,
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if f not in fields]
    if missing:
        raise SigError(
            "AuthorizationHeaderMalformed",
            f"the Authorization header lacks {', '.join(missing)}",
            400,
        )
    akid, date, region, service = _credential(fields["Credential"])
    amz_date = req.headers.get("x-amz-date", "")
    payload = req.headers.get("x-amz-content-sha256")
    if payload is None:
        raise SigError(
            "InvalidRequest", "the x-amz-content-sha256 header is required by this endpoint", 400
        )
    return Claimed(
        access_key_id=akid,
        date=date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        payload_hash=payload,
        presigned=False,
        session_token=req.headers.get("x-amz-security-token"),
    )


def _from_query(req: Incoming, query: dict[str, str]) -> Claimed:
    needed = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders"]
    needed += ["X-Amz-Signature", "X-Amz-Expires"]
    missing = [n for n in needed if n not in query]
    if missing:
        raise SigError(
            "AuthorizationQueryParametersError",
            f"the presigned URL lacks {', '.join(missing)}",
            400,
        )
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise SigError(
            "AuthorizationQueryParametersError", f"X-Amz-Algorithm must be {ALGORITHM}", 400
        )
    expires = query["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_EXPIRES:
        raise SigError(
            "AuthorizationQueryParametersError",
            f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGN_EXPIRES} (7 days)",
            400,
        )
    akid, date, region, service = _credential(query["X-Amz-Credential"])
    return Claimed(
        access_key_id=akid,
        date=date,
        region=region,
        service=service,
        amz_date=query["X-Amz-Date"],
        signed_headers=tuple(query["X-Amz-SignedHeaders"].split(";")),
        signature=query["X-Amz-Signature"],
        payload_hash=req.headers.get("x-amz-content-sha256", UNSIGNED),
        presigned=True,
        session_token=query.get("X-Amz-Security-Token"),
        expires=int(expires),
    )


# ---- verifying ----------------------------------------------------------------------------------


def _parse_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise SigError(
            "AccessDenied", "X-Amz-Date is missing or not in the form YYYYMMDDTHHMMSSZ"
        ) from None


def verify(
    req: Incoming, claim: Claimed, secret: str, now: datetime, *, service: str = "s3"
) -> Verified:
    """Check the claims against the request and ``secret`` at ``now``; SigError otherwise.
    The payload itself is checked while it is read (``PayloadHasher`` / ``ChunkDecoder``)."""
    if claim.service != service:
        raise SigError(
            "SignatureDoesNotMatch",
            f"the credential scope names service {claim.service!r}, this endpoint is {service!r}",
        )
    when = _parse_date(claim.amz_date)
    if claim.amz_date[:8] != claim.date:
        raise SigError(
            "SignatureDoesNotMatch", "the credential scope's date is not the date of X-Amz-Date"
        )
    if claim.presigned:
        assert claim.expires is not None
        if now < when - MAX_SKEW:
            raise SigError("AccessDenied", "the presigned URL is not valid yet")
        if now > when + timedelta(seconds=claim.expires):
            raise SigError("AccessDenied", "Request has expired: the presigned URL has expired")
    elif abs(now - when) > MAX_SKEW:
        raise SigError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large "
            "(more than 15 minutes); check the client's clock",
        )
    if "host" not in claim.signed_headers:
        raise SigError("AccessDenied", "the Host header must be signed")
    for name in req.headers:
        if (
            name.startswith("x-amz-")
            and name not in claim.signed_headers
            and not (claim.presigned or name in ("x-amz-content-sha256",))
        ):
            # AWS requires every x-amz-* header to be signed (header form).
            raise SigError("AccessDenied", f"the header {name} must be signed")
    ph = claim.payload_hash
    if not (_HEX64.match(ph) or ph in (UNSIGNED, STREAMING, STREAMING_UNSIGNED_TRAILER)):
        raise SigError("InvalidArgument", "x-amz-content-sha256 is not a valid value", 400)
    key = signing_key(secret, claim.date, claim.region, claim.service)
    # Two spellings of one path (as sent, or each segment encoded once): both name the same
    # key, so either signature is the client's.
    matched = False
    for as_sent in (False, True):
        canonical = canonical_request(req, claim.signed_headers, ph, as_sent=as_sent)
        expected = sign(key, string_to_sign(claim.amz_date, claim.scope, canonical))
        matched = hmac.compare_digest(expected, claim.signature) or matched
        if matched or canonical_uri(req.path) == req.path:
            break
    if not matched:
        raise SigError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    return Verified(claim, key)


# ---- the payload --------------------------------------------------------------------------------


class PayloadHasher:
    """Checks a plain body against its claimed hex SHA-256 (or lets an unsigned one pass)."""

    def __init__(self, payload_hash: str) -> None:
        self._want = payload_hash if _HEX64.match(payload_hash) else None
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> bytes:
        if self._want is not None:
            self._hash.update(data)
        return data

    def close(self) -> None:
        if self._want is not None and not hmac.compare_digest(self._hash.hexdigest(), self._want):
            raise SigError(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                400,
            )


_MAX_CHUNK_HEADER = 4096


class ChunkDecoder:
    """Decodes an ``aws-chunked`` body fed in arbitrary pieces, handing each chunk's data to
    ``out``. With ``verified`` (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) every chunk's
    signature is checked, each chained to the previous one from the seed (the request's)
    signature; without, chunk signatures are absent and a trailer may follow."""

    def __init__(self, out: Callable[[bytes], None], verified: Verified | None) -> None:
        self._out = out
        self._verified = verified
        self._previous = verified.claimed.signature if verified is not None else ""
        self._buffer = b""
        self._need: int | None = None  # bytes of chunk data (+ CRLF) still expected
        self._sig = ""
        self._hash = hashlib.sha256()
        self._done = False
        self.decoded = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self._done:
            # After the last chunk: only an optional trailer and the final CRLF.
            if len(self._buffer) > _MAX_CHUNK_HEADER:
                raise SigError("IncompleteBody", "unexpected bytes after the last chunk", 400)
            return False
        if self._need is None:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_CHUNK_HEADER:
                    raise SigError("IncompleteBody", "a chunk header is too long", 400)
                return False
            header = self._buffer[:end].decode("ascii", "replace")
            self._buffer = self._buffer[end + 2 :]
            size_text, _, ext = header.partition(";")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise SigError("IncompleteBody", "a chunk header is malformed", 400) from None
            if self._verified is not None:
                name, _, sig = ext.partition("=")
                if name.strip() != "chunk-signature" or not sig:
                    raise SigError("IncompleteBody", "a chunk lacks its chunk-signature", 400)
                self._sig = sig.strip()
            self._need = size
            self._hash = hashlib.sha256()
            if size == 0:
                self._check()
                self._done = True
                return False
            return True
        take = min(self._need, len(self._buffer))
        if take:
            part = self._buffer[:take]
            self._buffer = self._buffer[take:]
            self._need -= take
            self._hash.update(part)
            self.decoded += len(part)
            self._out(part)
        if self._need == 0:
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise SigError("IncompleteBody", "a chunk is longer than its declared size", 400)
            self._buffer = self._buffer[2:]
            self._check()
            self._need = None
            return True
        return False

    def _check(self) -> None:
        if self._verified is None:
            return
        claim = self._verified.claimed
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                claim.amz_date,
                claim.scope,
                self._previous,
                EMPTY_SHA256,
                self._hash.hexdigest(),
            ]
        )
        expected = sign(self._verified.signing_key, text)
        if not hmac.compare_digest(expected, self._sig):
            raise SigError(
                "SignatureDoesNotMatch",
                "a chunk's signature does not match what was computed for it",
            )
        self._previous = self._sig

    def close(self) -> None:
        if not self._done:
            raise SigError("IncompleteBody", "the body ended before its last (empty) chunk", 400)
