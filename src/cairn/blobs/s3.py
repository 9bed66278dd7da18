"""Blobs as objects in an S3 bucket (AWS S3, MinIO, Ceph RGW, …): replicas share a bucket.

Layout under ``CAIRN_S3_PREFIX``::

    <prefix>sha256/<sha256>                 a blob, under its content address
    <prefix>tmp/upload-<start>-<random>     an upload on its way (a multipart upload, or for
                                            a moment the object it completed into)
    <prefix>gc/<sha256>/<start>-<random>    a sweep deleting that blob (and ``….done`` once
                                            it is done; see delete)

How a write keeps the filesystem store's discipline (written → verified → addressed → only
then may the caller commit its row):

* Bytes are hashed (SHA-256, MD5) as they arrive and held in memory up to one part (8 MiB).
  Every request that carries bytes sends their Content-MD5, so S3 itself refuses a body that
  was damaged on the way (``BadDigest``).
* A blob that fits in one part (nearly every state) is hashed completely before anything is
  sent, so it is PUT straight to its content address: a PutObject is atomic (the key shows
  all the bytes or none), there is no temporary object to clean up, and one request is the
  cheapest publication there is.
* A larger blob cannot know its address until its last byte, and S3 has no rename. It is
  streamed as a multipart upload to a temporary key, one part at a time (memory stays at a
  part or two, never the whole blob), completed, verified, then published by a server-side
  copy (no byte passes through cairn twice) and the temporary object deleted.
* Verification reads the object's metadata, never its bytes (a re-download would only
  re-read what S3 already checked against each request's Content-MD5): HeadObject's size
  must be the size received, and its ETag the MD5 of the bytes (a single PUT, and S3's copy)
  or the MD5 of the parts' MD5s (the multipart upload), unless the bucket encrypts with KMS,
  whose ETags are opaque.
* Publishing always writes the content address, even when the blob is already there: that
  refreshes its last-written time (``x-amz-meta-cairn-written``, from the store's clock),
  which is what the garbage collector's grace period reads. S3 cannot delete "only if not
  written since", so a sweep records each deletion and writers look for such records
  (``S3BlobStore.delete``).
* ``abort`` aborts the multipart upload (S3 discards its parts) and deletes any temporary
  object; ``purge_temporaries`` does the same for uploads a crash left behind.

Region and credentials come from boto3's standard chain (environment, shared config and
credentials files, SSO, container and instance roles); cairn never reads or keeps them. Every
S3 failure (throttling, 5xx, the endpoint unreachable, access denied) becomes
``BlobStoreUnavailable``, a 503 the client may retry, never a 500 with a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cairn.blobs.filesystem import BlobCorrupted
from cairn.blobs.store import CHUNK, BlobRef, Hasher
from cairn.clock import Clock, SystemClock
from cairn.errors import ConfigError, Unavailable

log = logging.getLogger("cairn.blobs.s3")

MiB = 1024 * 1024
# S3 wants every part but the last to be at least 5 MiB; 8 MiB is boto3's own default.
PART = 8 * MiB
# A single CopyObject copies at most 5 GiB; a larger blob is copied part by part.
COPY_LIMIT = 5 * 1024 * MiB
RETRY_AFTER_SECONDS = 5
# A sweep deletes a blob only this soon after announcing it; a writer that finds a sweep's
# announcement waits up to GC_WAIT for it to finish (see S3BlobStore.delete).
GC_GUARD = 5.0
GC_WAIT = 30.0

_UPLOAD = "upload-"
_DONE = ".done"
# Object metadata holding a blob's last-written time (x-amz-meta-cairn-written).
WRITTEN = "cairn-written"
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})

T = TypeVar("T")


class BlobStoreUnavailable(Unavailable):
    """S3 did not do what was asked (throttled, a 5xx, unreachable, refused): the request is
    answered 503 with Retry-After, and nothing was committed."""

    code = "blob-store-unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class S3Location:
    """Where the blobs live. Holds no credentials (they stay in boto3's chain)."""

    bucket: str
    endpoint: str | None = None
    prefix: str = ""

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint}" if self.endpoint else where


def _error_code(exc: BaseException) -> str:
    """S3's error code (``SlowDown``, ``AccessDenied``, ``404``…) or the exception's name."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return str(
            err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
    return type(exc).__name__


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _error_code(exc) in _MISSING


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3BlobWriter:
    """One upload. Not thread-safe (one request writes it, one piece at a time)."""

    def __init__(self, store: S3BlobStore, max_size: int) -> None:
        self._store = store
        self._hasher = Hasher(max_size)
        self._buf = bytearray()
        self._tmp_key = store.tmp_key(f"{_UPLOAD}{store.stamp()}-{secrets.token_hex(12)}")
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._part_md5s: list[bytes] = []
        self._tmp_object = False
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._hasher.update(data)
            self._buf += data
            part = self._store.part_size
            while len(self._buf) >= part:
                self._upload_part(bytes(self._buf[:part]))
                del self._buf[:part]
        except BaseException:
            self.abort()
            raise

    def _upload_part(self, body: bytes) -> None:
        s = self._store
        if self._upload_id is None:
            created = s.call(
                "start an upload",
                s.client.create_multipart_upload,
                Bucket=s.location.bucket,
                Key=self._tmp_key,
                ContentType="application/octet-stream",
            )
            self._upload_id = str(created["UploadId"])
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        number = len(self._parts) + 1
        answer = s.call(
            "upload a part",
            s.client.upload_part,
            Bucket=s.location.bucket,
            Key=self._tmp_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ContentMD5=_b64(md5),
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._part_md5s.append(md5)

    def commit(self) -> BlobRef:
        try:
            if self._upload_id is None:
                ref = self._hasher.ref()
                self._put_small(ref)
            else:
                if self._buf:
                    self._upload_part(bytes(self._buf))
                    self._buf.clear()
                ref = self._hasher.ref()
                self._complete_and_publish(ref)
            self._done = True
            return ref
        except BaseException:
            self.abort()
            raise

    def _put_small(self, ref: BlobRef) -> None:
        """The whole blob is in memory and hashed: PUT it to its address, then verify."""
        s = self._store
        key = s.key(ref.sha256)
        body = bytes(self._buf)
        self._buf.clear()

        def publish() -> bool:
            s.call(
                "store a blob",
                s.client.put_object,
                Bucket=s.location.bucket,
                Key=key,
                Body=body,
                ContentMD5=_b64(bytes.fromhex(ref.md5)),
                ContentType="application/octet-stream",
                Metadata=s.written_now(),
            )
            try:
                return s.verify(key, ref, ref.md5)
            except BlobCorrupted:
                # S3 checks Content-MD5; a store that does not kept damaged bytes at the
                # address: remove them rather than leave them for the next reader.
                with contextlib.suppress(BlobStoreUnavailable):
                    s.delete_key(key)
                raise

        s.settle(ref.sha256, publish, publish())

    def _complete_and_publish(self, ref: BlobRef) -> None:
        s = self._store
        s.call(
            "complete an upload",
            s.client.complete_multipart_upload,
            Bucket=s.location.bucket,
            Key=self._tmp_key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        self._tmp_object = True
        # A multipart object's ETag: the MD5 of its parts' MD5s, and their count.
        digest = hashlib.md5(b"".join(self._part_md5s), usedforsecurity=False).hexdigest()
        multipart_etag = f"{digest}-{len(self._part_md5s)}"
        if not s.verify(self._tmp_key, ref, multipart_etag):
            raise BlobStoreUnavailable("the completed upload vanished from S3; try again")
        key = s.key(ref.sha256)

        def publish() -> bool:
            s.copy(self._tmp_key, key, ref.size)
            # S3 gives a copy the MD5 of its bytes as ETag (some compatible stores keep the
            # source's); a copy made part by part (over 5 GiB) has ETags of parts we never saw.
            etags = (ref.md5, multipart_etag) if ref.size <= COPY_LIMIT else ()
            return s.verify(key, ref, *etags)

        s.settle(ref.sha256, publish, publish())
        self._tmp_object = False
        with contextlib.suppress(BlobStoreUnavailable):  # published: purge_temporaries retries
            s.delete_key(self._tmp_key)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf.clear()
        s = self._store
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(BlobStoreUnavailable):  # purge_temporaries retries it
                s.call(
                    "abort an upload",
                    s.client.abort_multipart_upload,
                    Bucket=s.location.bucket,
                    Key=self._tmp_key,
                    UploadId=upload_id,
                )
        if self._tmp_object:
            self._tmp_object = False
            with contextlib.suppress(BlobStoreUnavailable):
                s.delete_key(self._tmp_key)


class S3BlobStore:
    """Blobs in ``bucket`` under ``prefix``, through one thread-safe boto3 client."""

    name = "s3"

    def __init__(
        self,
        location: S3Location,
        *,
        client: Any | None = None,
        clock: Clock | None = None,
        part_size: int = PART,
    ) -> None:
        self.location = location
        self.client = client if client is not None else s3_client(location)
        # Stamps blobs' last-written times (object metadata) and temporaries' names.
        self.clock: Clock = clock or SystemClock()
        self.part_size = part_size
        self._guarded: Any | None = None

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location.describe()})"

    # ---- keys ---------------------------------------------------------------------------------

    def key(self, sha256: str) -> str:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return f"{self.location.prefix}sha256/{sha256}"

    def tmp_key(self, name: str) -> str:
        return f"{self.location.prefix}tmp/{name}"

    def stamp(self) -> int:
        """Now, in whole seconds: temporaries' names start with it."""
        return int(self.clock.now().timestamp())

    # ---- calls --------------------------------------------------------------------------------

    def call(self, what: str, method: Callable[..., T], **kwargs: Any) -> T:
        """One S3 request (boto3 retries throttling and 5xx itself, with backoff); whatever
        still fails is a BlobStoreUnavailable naming the operation and S3's error code."""
        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: BaseException) -> BlobStoreUnavailable:
        code = _error_code(exc)
        # botocore's messages name the bucket, key and endpoint, never credentials.
        log.warning(
            "S3 request failed",
            extra={"operation": what, "s3_error": code, "bucket": self.location.bucket},
        )
        if isinstance(exc, NoCredentialsError):
            hint = "cairn found no AWS credentials; an operator must configure them"
        else:
            hint = "try again shortly"
        return BlobStoreUnavailable(f"the S3 blob store could not {what} ({code}); {hint}")

    def verify(self, key: str, ref: BlobRef, *etags: str) -> bool:
        """The stored object has the size received and, when ``etags`` are given and S3's
        ETag is an MD5 (not with KMS or customer keys), one of them. False when it is gone
        (a sweep deleted it right after it was written: ``settle`` sorts that out)."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            if _is_missing(exc):
                return False
            raise self._unavailable("verify a blob", exc) from None
        size = int(head["ContentLength"])
        found = str(head.get("ETag", "")).strip('"')
        opaque = head.get("ServerSideEncryption") in _KMS or head.get("SSECustomerAlgorithm")
        if size != ref.size or (etags and not opaque and found not in etags):
            raise BlobCorrupted(
                f"blob {ref.sha256} was not stored as written (S3 holds {size} bytes, ETag "
                f"{found}; expected {ref.size} bytes, ETag {' or '.join(etags)})"
            )
        return True

    def copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy (CopyObject; part by part above its 5 GiB limit)."""
        bucket = self.location.bucket
        src = {"Bucket": bucket, "Key": source}
        if size <= COPY_LIMIT:
            self.call(
                "publish a blob",
                self.client.copy_object,
                Bucket=bucket,
                Key=target,
                CopySource=src,
                MetadataDirective="REPLACE",  # a fresh last-written time when target exists
                Metadata=self.written_now(),
                ContentType="application/octet-stream",
            )
            return
        created = self.call(
            "publish a blob",
            self.client.create_multipart_upload,
            Bucket=bucket,
            Key=target,
            Metadata=self.written_now(),
        )
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        step = COPY_LIMIT // 2
        try:
            for number, start in enumerate(range(0, size, step), start=1):
                end = min(start + step, size) - 1
                answer = self.call(
                    "publish a blob",
                    self.client.upload_part_copy,
                    Bucket=bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=src,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            self.call(
                "publish a blob",
                self.client.complete_multipart_upload,
                Bucket=bucket,
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(BlobStoreUnavailable):
                self.call(
                    "abort an upload",
                    self.client.abort_multipart_upload,
                    Bucket=bucket,
                    Key=target,
                    UploadId=upload_id,
                )
            raise

    def written_now(self) -> dict[str, str]:
        """Object metadata: the blob's last-written time, from the store's clock."""
        return {WRITTEN: self.clock.now().astimezone(UTC).isoformat()}

    def delete_key(self, key: str) -> None:
        self.call(
            "delete an object", self.client.delete_object, Bucket=self.location.bucket, Key=key
        )

    # ---- the BlobStore protocol ---------------------------------------------------------------

    def writer(self, *, max_size: int) -> S3BlobWriter:
        return S3BlobWriter(self, max_size)

    def iter_chunks(self, sha256: str) -> Iterator[bytes]:
        """The object's body, streamed from one GetObject in pieces of at most CHUNK bytes."""
        key = self.key(sha256)
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"blob {sha256} is not in the S3 blob store") from None
            raise self._unavailable("read a blob", exc) from None
        body = answer["Body"]
        try:
            while True:
                try:
                    chunk = body.read(CHUNK)
                except (BotoCoreError, ClientError, OSError) as exc:
                    raise self._unavailable("read a blob", exc) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def local_path(self, sha256: str) -> Path | None:
        return None

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.key(sha256))
        except (BotoCoreError, ClientError) as exc:
            if _is_missing(exc):
                return False
            raise self._unavailable("look up a blob", exc) from None
        return True

    def check(self) -> None:
        """At start: the bucket answers, and cairn may list, write and delete under its
        prefix (and list multipart uploads, which housekeeping needs)."""
        bucket = self.location.bucket
        where = self.location.describe()
        probe = self.tmp_key(".write-probe-" + secrets.token_hex(8))
        steps: list[tuple[str, Callable[[], object]]] = [
            ("reach the bucket", lambda: self.client.head_bucket(Bucket=bucket)),
            (
                "list objects (s3:ListBucket)",
                lambda: self.client.list_objects_v2(
                    Bucket=bucket, Prefix=self.location.prefix, MaxKeys=1
                ),
            ),
            (
                "write an object (s3:PutObject)",
                lambda: self.client.put_object(Bucket=bucket, Key=probe, Body=b"ok"),
            ),
            (
                "delete an object (s3:DeleteObject)",
                lambda: self.client.delete_object(Bucket=bucket, Key=probe),
            ),
            (
                "list multipart uploads (s3:ListBucketMultipartUploads)",
                lambda: self.client.list_multipart_uploads(
                    Bucket=bucket, Prefix=self.tmp_key(""), MaxUploads=1
                ),
            ),
        ]
        for what, step in steps:
            try:
                step()
            except NoCredentialsError:
                raise ConfigError(
                    f"the S3 blob store {where} needs AWS credentials and found none: set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with "
                    "an instance or container role"
                ) from None
            except (BotoCoreError, ClientError) as exc:
                code = _error_code(exc)
                hint = {
                    "404": "the bucket does not exist: create it or fix CAIRN_S3_BUCKET",
                    "NoSuchBucket": "the bucket does not exist: create it or fix CAIRN_S3_BUCKET",
                    "403": "access denied: grant the permissions listed in the README",
                    "AccessDenied": "access denied: grant the permissions listed in the README",
                    "503": "S3 is throttling or unavailable: start again when it answers",
                    "SlowDown": "S3 is throttling: start again when it answers",
                }.get(code, "check CAIRN_S3_ENDPOINT, the region and the credentials")
                raise ConfigError(
                    f"the S3 blob store {where} is not usable: cairn could not {what} "
                    f"({code}); {hint}"
                ) from None

    # ---- reclaiming (blobs.collector) -----------------------------------------------------

    def iter_stored(self) -> Iterator[tuple[str, datetime]]:
        """Every blob under ``<prefix>sha256/`` with its last-written time, a listing page
        (1,000 keys) at a time. The time is in each object's metadata (S3 listings carry
        none), so each is looked up with a HeadObject, eight at once: a sweep costs one
        request per blob."""
        start = f"{self.location.prefix}sha256/"
        token: str | None = None
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="cairn-s3-list") as pool:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": start}
                if token:
                    kwargs["ContinuationToken"] = token
                page = self.call("list blobs", self.client.list_objects_v2, **kwargs)
                names = [
                    name
                    for item in page.get("Contents", [])
                    if _is_sha256(name := str(item["Key"])[len(start) :])
                ]
                for name, written in zip(names, pool.map(self._written, names), strict=True):
                    if written is not None:  # deleted since the listing
                        yield name, written
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return

    def _written(self, sha256: str) -> datetime | None:
        """A blob's last-written time, or None when it is gone."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.key(sha256))
        except (BotoCoreError, ClientError) as exc:
            if _is_missing(exc):
                return None
            raise self._unavailable("look up a blob", exc) from None
        stamp = head.get("Metadata", {}).get(WRITTEN)
        if stamp:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(stamp)
        modified: datetime = head["LastModified"]  # written by something other than cairn
        return modified

    def delete(self, sha256: str, *, older_than: datetime) -> bool:
        """Delete a blob last written before ``older_than``.

        S3 has no delete-if-unmodified-since, so a sweep leaves a record: before its final look
        at the blob it writes a mark ``<prefix>gc/<sha256>/<start>-<random>``, and once done
        (deleted or kept) a ``….done`` beside it; both stay until ``purge_temporaries`` (the
        grace period). A writer, after publishing, lists the marks (``settle``). A deletion
        that could hit its bytes is one whose final look came before the writer's refresh,
        hence whose mark was written before it: the writer sees that mark, waits until every
        mark is done, and publishes again if the blob is gone. The DELETE is sent without
        retries and only within ``GC_GUARD`` of the mark, far inside the ``GC_WAIT`` a writer
        gives a sweep that never says it is done, so it cannot land after the writer looked.
        """
        key = self.key(sha256)
        if not self._written_before(sha256, older_than):
            return False
        mark = f"{self._gc_prefix(sha256)}{self.stamp()}-{secrets.token_hex(8)}"
        bucket = self.location.bucket
        self.call("mark a blob for deletion", self.client.put_object, Bucket=bucket, Key=mark)
        marked = time.monotonic()
        settled = True
        try:
            if not self._written_before(sha256, older_than):
                return False  # refreshed since the sweep listed it
            if time.monotonic() - marked > GC_GUARD:
                return False  # too slow to be sure no writer gave up waiting: next sweep
            settled = False
            self.call("delete a blob", self._deleter().delete_object, Bucket=bucket, Key=key)
            settled = True
            return True
        finally:
            # A DELETE that failed may still be carried out by S3 later: its mark stays
            # without a .done, so writers wait out GC_WAIT and then check the blob.
            if settled:
                with contextlib.suppress(BlobStoreUnavailable):
                    self.call(
                        "finish a deletion",
                        self.client.put_object,
                        Bucket=bucket,
                        Key=mark + _DONE,
                    )

    def _written_before(self, sha256: str, older_than: datetime) -> bool:
        written = self._written(sha256)
        return written is not None and written < older_than

    def _gc_prefix(self, sha256: str) -> str:
        return f"{self.location.prefix}gc/{sha256}/"

    def _deleter(self) -> Any:
        """A client that never retries and gives up quickly (the sweep's one DELETE)."""
        if self._guarded is None:
            self._guarded = s3_client(self.location, attempts=1, timeout=GC_GUARD / 2)
        return self._guarded

    def settle(self, sha256: str, publish: Callable[[], bool], present: bool) -> None:
        """After publishing ``sha256`` (``present``: it was there right after): when sweeps
        have marked it, wait until they are done and publish again if one deleted it (see
        ``delete``). ``publish`` returns whether the blob was there right after."""
        prefix = self._gc_prefix(sha256)
        for _ in range(3):
            marks, active = self._marks(prefix)
            if not marks:
                if present:
                    return
                raise BlobStoreUnavailable(
                    "a blob vanished from S3 right after it was stored; try again"
                )
            deadline = time.monotonic() + GC_WAIT
            while active and time.monotonic() < deadline:
                time.sleep(0.05)
                _, active = self._marks(prefix)
            if self.exists(sha256):
                return
            present = publish()
        raise BlobStoreUnavailable(
            "the S3 blob store is busy reclaiming storage; try again shortly"
        )

    def _marks(self, prefix: str) -> tuple[int, int]:
        """How many sweeps marked the blob, and how many of them are not done yet."""
        listing = self.call(
            "look for sweeps",
            self.client.list_objects_v2,
            Bucket=self.location.bucket,
            Prefix=prefix,
        )
        keys = {str(item["Key"]) for item in listing.get("Contents", [])}
        marks = {k for k in keys if not k.endswith(_DONE)}
        return len(marks), sum(1 for k in marks if k + _DONE not in keys)

    def purge_temporaries(self, older_than: datetime) -> int:
        """Abort the multipart uploads and delete the temporary objects that writers started
        before ``older_than`` (killed mid-upload, or between completing and publishing)."""
        bucket, tmp = self.location.bucket, self.tmp_key("")
        removed = 0
        key_marker: str | None = None
        upload_marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": tmp}
            if key_marker is not None:
                kwargs["KeyMarker"] = key_marker
                kwargs["UploadIdMarker"] = upload_marker or ""
            page = self.call("list uploads", self.client.list_multipart_uploads, **kwargs)
            for upload in page.get("Uploads", []):
                if _started(str(upload["Key"]), upload["Initiated"]) < older_than:
                    self.call(
                        "abort an upload",
                        self.client.abort_multipart_upload,
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    removed += 1
            if not page.get("IsTruncated"):
                break
            key_marker = page.get("NextKeyMarker")
            upload_marker = page.get("NextUploadIdMarker")
        removed += self._delete_older(tmp, older_than)
        # Sweeps' records (not counted: they hold no blob bytes).
        self._delete_older(f"{self.location.prefix}gc/", older_than)
        return removed

    def _delete_older(self, prefix: str, older_than: datetime) -> int:
        removed = 0
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            listing = self.call("list temporaries", self.client.list_objects_v2, **kwargs)
            for item in listing.get("Contents", []):
                if _started(str(item["Key"]), item["LastModified"]) < older_than:
                    self.delete_key(str(item["Key"]))
                    removed += 1
            token = listing.get("NextContinuationToken")
            if not listing.get("IsTruncated") or not token:
                return removed


def _started(key: str, otherwise: datetime) -> datetime:
    """When a temporary was started: the stamp its name begins with (``upload-<stamp>-…``,
    ``gc/<sha256>/<stamp>-…``), else what S3 says."""
    name = key.rsplit("/", 1)[-1].removeprefix(_UPLOAD)
    stamp, sep, _ = name.partition("-")
    if sep and stamp.isdigit():
        return datetime.fromtimestamp(int(stamp), UTC)
    return otherwise


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def s3_client(location: S3Location, *, attempts: int = 4, timeout: float = 60.0) -> Any:
    """A boto3 S3 client: region and credentials from the standard chain."""
    config = Config(
        # Standard mode retries throttling (SlowDown, 503) and 5xx with jittered backoff.
        retries={"mode": "standard", "max_attempts": attempts},
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        max_pool_connections=32,  # uploads and downloads run on the server's worker threads
        # Every body already carries its Content-MD5, which every S3-compatible server checks;
        # botocore's newer default trailing CRC32 (aws-chunked) is not understood by all.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # A custom endpoint (MinIO, moto, Ceph) usually has no per-bucket DNS names.
        s3={"addressing_style": "path"} if location.endpoint else {},
        user_agent_appid="cairn",
    )
    # botocore logs request headers (signed) at DEBUG: keep it out of cairn's logs.
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=location.endpoint, config=config)
