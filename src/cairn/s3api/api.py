"""HTTP: the S3 endpoint at ``/s3/`` (path style: ``/s3/<bucket>/<key>``), its SigV4
authenticator, and the credentials exchange ``POST /api/cairn/v1/s3-credentials``.

Every S3 route goes through the request pipeline (``tfeapi.http.route``) with the ``"sigv4"``
authenticator: ``credential(request)`` verifies the signature on the event loop (HMACs only;
the secret is derived, nothing is read), ``authenticate`` re-reads the source token in the
job's transaction. The handlers are ``stream`` handlers: a body is checked against its signed
payload hash (or its chunk signatures) while it arrives, before anything is committed.
Errors are S3's XML (``s3api.errors.render``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from sqlalchemy import select
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cairn.audit.log import Actor, record
from cairn.auth.tokens import TokenService
from cairn.authz.access import Access, WorkspaceGrant
from cairn.authz.permissions import (
    ORG_READ,
    STATE_READ,
    STATE_READ_OUTPUTS,
    STATE_WRITE,
    WORKSPACE_READ,
)
from cairn.authz.subject import RunJob, ServiceAccount, User
from cairn.blobs.store import CHUNK
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import BadRequest, Forbidden, Invalid, Unauthorized
from cairn.identity.issuer import Issuer
from cairn.organizations import store as orgs
from cairn.s3api import keys, sigv4, sts
from cairn.s3api.credentials import DEFAULT_TTL, MAX_TTL, MIN_TTL, Credentials, Issued, Session
from cairn.s3api.errors import S3Denied, S3Error, render, request_id
from cairn.s3api.service import Condition, S3Objects
from cairn.s3api.vhost import SIGNED_PATH
from cairn.tfeapi.http import Authenticated, Call, route
from cairn.workspaces.model import Workspace

PREFIX = "/s3"
MAX_KEYS = 1000
MAX_EXCHANGE_BODY = 4096
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


# ---- the authenticator --------------------------------------------------------------------------


def incoming(request: Request) -> sigv4.Incoming:
    signed = request.scope.get(SIGNED_PATH)  # a virtual-host request: the path as sent
    raw_path = signed.encode("latin-1") if signed else request.scope.get("raw_path")
    raw_path = raw_path or request.url.path.encode()
    query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), True)
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return sigv4.Incoming(request.method, raw_path.decode("latin-1"), query, headers)


class SigV4Authenticator:
    """The pipeline's ``"sigv4"`` authenticator (registered in ``app.py``)."""

    def __init__(
        self,
        credentials: Credentials,
        tokens: TokenService,
        clock: Clock,
        *,
        db: Database,
        issuer: Issuer,
    ) -> None:
        self._credentials = credentials
        self._tokens = tokens
        self._clock = clock
        self._db = db
        self._issuer = issuer

    def credential(self, request: Request) -> str | None:
        req = incoming(request)
        now = self._clock.now()
        try:
            claim = sigv4.claimed(req)
            if claim is None:
                return None
            self._credentials.check_key(claim.access_key_id)
            verified = sigv4.verify(
                req, claim, self._credentials.secret_for(claim.access_key_id), now
            )
            session = self._credentials.session(claim.session_token, claim.access_key_id, now)
        except sigv4.SigError as err:
            raise S3Error.of(err) from None
        request.state.s3_session = session
        request.state.s3_verified = verified
        if session.web is not None:
            return f"wi {claim.access_key_id} {claim.session_token}"
        return f"{session.token_id} {session.user_id}"

    def authenticate(self, credential: str) -> Authenticated:
        if credential.startswith("wi "):
            _, akid, token = credential.split(" ", 2)
            return self._web_identity(akid, token)
        token_id, _, user_id = credential.partition(" ")
        try:
            return self._tokens.authenticate_id(token_id, user_id)
        except Unauthorized as exc:
            raise S3Error(
                "InvalidToken",
                f"The provided token is no longer valid: {exc.detail}",
                403,
            ) from None

    def _web_identity(self, akid: str, token: str) -> Authenticated:
        """Credentials from STS act as the id-token's run phase; re-checked on every request:
        the signing key still published and unrevoked, the workspace still there."""
        try:
            session = self._credentials.session(token, akid, self._clock.now())
        except sigv4.SigError as err:
            raise S3Error.of(err) from None
        web = session.web
        assert web is not None
        if sts.usable_key(self._issuer, web.kid) is None:
            raise S3Error(
                "InvalidToken",
                "the id-token these credentials came from was signed by a key cairn revoked",
                403,
            )
        with self._db.read_transaction() as conn:
            found = conn.execute(
                select(Workspace.id).where(
                    Workspace.id == web.workspace_id,
                    Workspace.organization_id == web.organization_id,
                )
            ).first()
        if found is None:
            raise S3Error(
                "InvalidToken", "the workspace these credentials were for no longer exists", 403
            )
        perms = {WORKSPACE_READ, STATE_READ, STATE_READ_OUTPUTS, ORG_READ}
        if web.phase == "apply":
            perms.add(STATE_WRITE)
        grant = WorkspaceGrant(web.organization_id, frozenset(perms), workspace_id=web.workspace_id)
        return _Found(
            RunJob(
                id=f"s3-{akid}",
                run_id=web.run_id,
                workspace_id=web.workspace_id,
                organization_id=web.organization_id,
                phase="apply" if web.phase == "apply" else "plan",
                token_id="",
                access=Access(grants=(grant,)),
            )
        )

    def missing(self) -> S3Denied:
        return S3Denied(
            "Access Denied: sign the request with cairn S3 credentials (AWS Signature "
            "Version 4; get credentials with `cairn s3-credentials`)"
        )


@dataclass(frozen=True)
class _Found:
    subject: RunJob

    def after(self) -> None:
        return None


# ---- the S3 routes ------------------------------------------------------------------------------


def _session(call: Call) -> Session:
    session: Session = call.request.state.s3_session
    return session


def _bucket(call: Call) -> str:
    bucket = call.param("bucket")
    scope = _session(call).organization
    if scope is not None and scope != bucket:
        raise S3Error(
            "AccessDenied",
            f"these credentials are for organization {scope!r} only, not {bucket!r}",
            403,
            bucket,
        )
    return bucket


def _key(call: Call) -> keys.ObjectKey:
    try:
        return keys.parse(call.param("key"))
    except keys.BadKey as exc:
        raise S3Error("KeyTooLongError", str(exc), 400) from None


def _headers(etag: str | None = None) -> dict[str, str]:
    rid = request_id()
    found = {"x-amz-request-id": rid, "x-amz-id-2": rid}
    if etag is not None:
        found["ETag"] = f'"{etag}"'
    return found


def _http_date(at: datetime) -> str:
    return at.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml(body: str, status: int = 200) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode(),
        status_code=status,
        media_type="application/xml",
        headers=_headers(),
    )


_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "tagging", "retention", "legal-hold", "torrent", "uploads", "uploadId", "attributes"}
)


def _refuse_subresources(call: Call) -> None:
    found = _OBJECT_SUBRESOURCES.intersection(call.request.query_params)
    if found:
        raise S3Error(
            "NotImplemented",
            f"cairn's S3 endpoint does not implement ?{sorted(found)[0]} (only state objects "
            "and their lock objects)",
            501,
        )


async def _empty_body(call: Call) -> None:
    """A request without a body must not carry one (its payload hash is still checked)."""
    verified: sigv4.Verified = call.request.state.s3_verified
    hasher = sigv4.PayloadHasher(verified.payload_hash)
    async for chunk in call.stream(64 * 1024):
        hasher.feed(chunk)
    try:
        hasher.close()
    except sigv4.SigError as err:
        raise S3Error.of(err) from None


def _condition(call: Call) -> Condition:
    none_match = call.request.headers.get("if-none-match")
    match = call.request.headers.get("if-match")
    if none_match is not None and none_match.strip() != "*":
        raise S3Error(
            "NotImplemented", "If-None-Match on PutObject accepts only '*' (S3's rule)", 501
        )
    etag = match.strip().strip('"') if match is not None else None
    return Condition(absent=none_match is not None, etag=etag)


async def _body(call: Call, feed: Any, abort: Any, limit: int) -> None:
    """Feed the request body, decoded and checked against its signature, to ``feed``."""
    verified: sigv4.Verified = call.request.state.s3_verified
    ph = verified.payload_hash
    chunks = call.stream(limit * 2 + 64 * 1024 if ph.startswith("STREAMING") else limit)
    try:
        if ph in (sigv4.STREAMING, sigv4.STREAMING_UNSIGNED_TRAILER):
            decoder = sigv4.ChunkDecoder(feed, verified if ph == sigv4.STREAMING else None)
            await call.pump(_sized(chunks, limit, decoder), decoder.feed, abort, batch=CHUNK)
            decoder.close()
            declared = call.request.headers.get("x-amz-decoded-content-length")
            if declared is not None and declared != str(decoder.decoded):
                raise sigv4.SigError(
                    "IncompleteBody",
                    f"the chunks hold {decoder.decoded} bytes, not the "
                    f"x-amz-decoded-content-length of {declared}",
                    400,
                )
        else:
            hasher = sigv4.PayloadHasher(ph)

            def fed(data: bytes) -> None:
                feed(hasher.feed(data))

            await call.pump(chunks, fed, abort, batch=CHUNK)
            hasher.close()
    except sigv4.SigError as err:
        abort()
        raise S3Error.of(err) from None


async def _sized(
    chunks: AsyncIterator[bytes], limit: int, decoder: sigv4.ChunkDecoder
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if decoder.decoded > limit:
            raise S3Error("EntityTooLarge", f"the object is larger than {limit} bytes", 400)
        yield chunk


class S3Handlers:
    def __init__(self, objects: S3Objects, max_state: int) -> None:
        self.objects = objects
        self.max_state = max_state

    # -- buckets --

    async def bucket(self, call: Call) -> Response:
        await _empty_body(call)
        bucket = _bucket(call)
        q = call.request.query_params
        if call.request.method == "HEAD":
            await call.run(self.objects.check_bucket, call.caller, bucket)
            return Response(status_code=200, headers=_headers())
        if "location" in q:
            await call.run(self.objects.check_bucket, call.caller, bucket)
            return _xml(f'<LocationConstraint xmlns="{_XMLNS}"></LocationConstraint>')
        if "versioning" in q:
            await call.run(self.objects.check_bucket, call.caller, bucket)
            return _xml(f'<VersioningConfiguration xmlns="{_XMLNS}"/>')
        unknown = {"acl", "policy", "cors", "lifecycle", "tagging", "encryption", "uploads"}
        if unknown.intersection(q):
            raise S3Error("NotImplemented", "this bucket operation is not implemented", 501)
        return await self._list(call, bucket)

    async def _list(self, call: Call, bucket: str) -> Response:
        q = call.request.query_params
        v2 = q.get("list-type") == "2"
        prefix = q.get("prefix", "")
        url = q.get("encoding-type") == "url"
        delimiter = q.get("delimiter", "")
        max_keys_text = q.get("max-keys", str(MAX_KEYS))
        if not max_keys_text.isdigit():
            raise S3Error("InvalidArgument", "max-keys must be a number", 400)
        max_keys = min(int(max_keys_text), MAX_KEYS)
        if v2:
            token = q.get("continuation-token")
            after = _decode_token(token) if token else q.get("start-after", "")
        else:
            after = q.get("marker", "")
        found, next_after = await call.run(
            self.objects.list, call.caller, bucket, prefix, after, max(max_keys, 1)
        )
        if max_keys == 0:
            found, next_after = [], (after if found else None)
        more = next_after is not None

        def enc(value: str) -> str:
            return escape(quote(value, safe="/") if url else value)

        contents: list[str] = []
        prefixes: list[str] = []
        for item in found:
            rest = item.key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in prefixes:
                    prefixes.append(common)
                continue
            contents.append(
                f"<Contents><Key>{enc(item.key)}</Key>"
                f"<LastModified>{_iso(item.last_modified)}</LastModified>"
                f"<ETag>&quot;{item.md5}&quot;</ETag><Size>{item.size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts = [
            f'<ListBucketResult xmlns="{_XMLNS}"><Name>{escape(bucket)}</Name>',
            f"<Prefix>{enc(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        last = next_after or (found[-1].key if found else after)
        if v2:
            parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
            if "continuation-token" in q:
                parts.append(
                    f"<ContinuationToken>{escape(q['continuation-token'])}</ContinuationToken>"
                )
            if more:
                parts.append(
                    f"<NextContinuationToken>{_encode_token(last)}</NextContinuationToken>"
                )
            if "start-after" in q:
                parts.append(f"<StartAfter>{enc(q['start-after'])}</StartAfter>")
        else:
            parts.append(f"<Marker>{enc(after)}</Marker>")
            if more:
                parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
        parts.extend(contents)
        parts.extend(
            f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        parts.append("</ListBucketResult>")
        return _xml("".join(parts))

    # -- objects --

    async def get_object(self, call: Call) -> Response:
        await _empty_body(call)
        _refuse_subresources(call)
        bucket, key = _bucket(call), _key(call)
        head = call.request.method == "HEAD"
        if key.lock:
            body = await call.run(self.objects.lock_object, call.caller, bucket, key.state_key)
            etag = _md5(body)
            headers = _headers(etag)
            if head:
                headers["Content-Length"] = str(len(body))
                return Response(status_code=200, headers=headers, media_type="application/json")
            return Response(body, headers=headers, media_type="application/json")
        obj = await call.run(self.objects.get_state, call.caller, bucket, key.state_key)
        headers = _headers(obj.md5)
        headers["Last-Modified"] = _http_date(obj.last_modified)
        headers["Content-Length"] = str(obj.size)
        if_none = call.request.headers.get("if-none-match")
        if if_none is not None and if_none.strip().strip('"') == obj.md5:
            return Response(status_code=304, headers=headers)
        if_match = call.request.headers.get("if-match")
        if if_match is not None and if_match.strip().strip('"') not in ("*", obj.md5):
            raise S3Error("PreconditionFailed", "the object's ETag is not the one in If-Match", 412)
        if head:
            return Response(status_code=200, headers=headers, media_type="application/json")
        chunks = self.objects.iter_blob(obj.sha256)
        try:
            first = await call.run(next, chunks, b"")
        except FileNotFoundError:
            raise S3Error("InternalError", "the state's bytes are missing", 500) from None
        return StreamingResponse(
            _starting_with(first, chunks), media_type="application/json", headers=headers
        )

    async def put_object(self, call: Call) -> Response:
        _refuse_subresources(call)
        bucket, key = _bucket(call), _key(call)
        if "x-amz-copy-source" in call.request.headers:
            raise S3Error("NotImplemented", "CopyObject is not implemented", 501)
        condition = _condition(call)
        if key.lock:
            buffer = bytearray()

            def keep(data: bytes) -> None:
                buffer.extend(data)
                if len(buffer) > 16 * 1024:
                    raise S3Error("EntityTooLarge", "a lock object is at most 16384 bytes", 400)

            await _body(call, keep, lambda: None, 16 * 1024)
            _check_md5(call, _md5(bytes(buffer)))
            if not condition.absent:
                raise S3Error(
                    "NotImplemented",
                    "a lock object can only be created with If-None-Match: * (a lock)",
                    501,
                )
            etag = await call.run(
                self.objects.lock, call.caller, bucket, key.state_key, bytes(buffer), call.source
            )
            return Response(status_code=200, headers=_headers(etag))
        staged = self.objects.stage()
        await _body(call, staged.feed, staged.abort, self.max_state)
        _check_md5(call, staged.md5, staged.abort)
        etag = await call.run(
            self.objects.put_state,
            call.caller,
            bucket,
            key.state_key,
            staged,
            condition,
            call.source,
        )
        return Response(status_code=200, headers=_headers(etag))

    async def delete_object(self, call: Call) -> Response:
        await _empty_body(call)
        _refuse_subresources(call)
        bucket, key = _bucket(call), _key(call)
        if key.lock:
            await call.run(self.objects.unlock, call.caller, bucket, key.state_key, call.source)
        else:
            await call.run(self.objects.delete_state, call.caller, bucket, key.state_key)
        return Response(status_code=204, headers=_headers())


def _check_md5(call: Call, md5_hex: str, abort: Any = None) -> None:
    sent = call.request.headers.get("content-md5")
    if sent is None:
        return
    try:
        ok = base64.b64decode(sent, validate=True) == bytes.fromhex(md5_hex)
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        if abort is not None:
            abort()
        raise S3Error(
            "BadDigest", "The Content-MD5 you specified did not match what we received.", 400
        )


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error(
            "InvalidArgument", "The continuation token provided is incorrect", 400
        ) from None


async def _starting_with(first: bytes, rest: Iterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in iterate_in_threadpool(rest):
        yield chunk


def s3_routes(objects: S3Objects, max_state: int) -> list[Route]:
    h = S3Handlers(objects, max_state)
    common: dict[str, Any] = {"auth": "sigv4", "executor": "stream", "errors": render}
    return [
        route(PREFIX + "/{bucket}", h.bucket, ["GET", "HEAD"], **common),
        route(PREFIX + "/{bucket}/", h.bucket, ["GET", "HEAD"], **common),
        route(PREFIX + "/{bucket}/{key:path}", h.get_object, ["GET", "HEAD"], **common),
        route(PREFIX + "/{bucket}/{key:path}", h.put_object, ["PUT"], **common),
        route(PREFIX + "/{bucket}/{key:path}", h.delete_object, ["DELETE"], **common),
    ]


# ---- the credentials exchange -------------------------------------------------------------------


class Exchange:
    """``POST /api/cairn/v1/s3-credentials``: a cairn API token → S3 credentials."""

    def __init__(self, db: Database, clock: Clock, credentials: Credentials) -> None:
        self._db = db
        self._clock = clock
        self._credentials = credentials

    def issue(self, call: Call) -> Response:
        caller = call.caller
        if not isinstance(caller, User | ServiceAccount):
            raise Forbidden(
                "S3 credentials are issued for a person's, team's or organization's API token, "
                "not for a run's job token"
            )
        try:
            body = json.loads(call.raw) if call.raw.strip() else {}
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        seconds = body.get("duration-seconds", int(DEFAULT_TTL.total_seconds()))
        lo, hi = int(MIN_TTL.total_seconds()), int(MAX_TTL.total_seconds())
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not lo <= seconds <= hi:
            raise Invalid(
                f"duration-seconds must be a whole number of seconds from {lo} (15 minutes) to "
                f"{hi} (12 hours)",
                pointer="/duration-seconds",
            )
        organization = body.get("organization")
        if organization is not None and not isinstance(organization, str):
            raise Invalid("organization must be a name", pointer="/organization")
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            if organization is not None:
                orgs.readable(s, caller, organization)
            issued = self._credentials.issue(
                user_id=caller.id,
                token_id=caller.token_id,
                organization=organization,
                now=now,
                ttl=timedelta(seconds=seconds),
            )
            record(
                s,
                at=now,
                actor=Actor(caller.id, caller.name, call.source),
                action="s3.credentials.issue",
                subject=organization or caller.name,
                access_key_id=issued.access_key_id,
                token_id=caller.token_id,
                expires_at=issued.expires_at.isoformat(),
            )
            s.commit()
        return JSONResponse(issued.as_json(), headers={"Cache-Control": "no-store"})


def credential_routes(exchange: Exchange) -> list[Route]:
    return [route("/s3-credentials", exchange.issue, ["POST"], limit=MAX_EXCHANGE_BODY, write=True)]


__all__ = ["Issued", "SigV4Authenticator", "credential_routes", "s3_routes"]
