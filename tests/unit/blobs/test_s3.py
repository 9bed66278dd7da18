"""The S3 blob store against a real S3 API (moto's server): multipart streaming with bounded
memory, verification from HeadObject, publication under the content address, clean aborts,
housekeeping, the sweep/writer handshake, start-up checks, and S3 failures as 503s that never
show a credential. (The behaviour every store shares is in test_blobs.py.)"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cairn.blobs.filesystem import BlobCorrupted
from cairn.blobs.s3 import PART, BlobStoreUnavailable, S3BlobStore, S3Location, s3_client
from cairn.blobs.store import BlobRef
from cairn.config import Settings, from_environment
from cairn.errors import ConfigError, PayloadTooLarge
from tests.support import processes
from tests.support.s3 import ACCESS_KEY, FaultyS3, MotoS3, environment

MiB = 1024 * 1024
# 2.5 parts: two full 8 MiB parts and a short last one.
LARGE = bytes(range(256)) * (PART * 5 // 2 // 256)


def pieces(data: bytes, size: int = MiB) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
def faulty(moto_s3: MotoS3) -> Iterator[FaultyS3]:
    proxy = FaultyS3(moto_s3)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def faulty_store(moto_s3: MotoS3, faulty: FaultyS3) -> S3BlobStore:
    location = S3Location(moto_s3.create_bucket(), faulty.endpoint, "x/")
    # Two attempts per request (production makes four): the failures come sooner.
    store = S3BlobStore(location, client=s3_client(location, attempts=2))
    store.check()
    return store


def later() -> datetime:
    """A cutoff after everything written so far (S3 stamps LastModified with its own clock)."""
    return datetime.now(UTC) + timedelta(minutes=5)


def earlier() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


# ---- writing ----------------------------------------------------------------------------------


def test_a_small_blob_is_put_straight_to_its_address(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    writer = s3_store.writer(max_size=100)
    writer.write(b"hello")
    ref = writer.commit()
    assert moto_s3.keys(s3_store.location.bucket) == [f"cairn/sha256/{ref.sha256}"]
    assert moto_s3.uploads(s3_store.location.bucket) == []
    assert b"".join(s3_store.iter_chunks(ref.sha256)) == b"hello"


def test_a_large_blob_streams_as_a_multipart_upload_in_bounded_memory(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    bucket = s3_store.location.bucket
    writer = s3_store.writer(max_size=len(LARGE))
    for piece in pieces(LARGE):
        writer.write(piece)
        # Never more than one part held in memory.
        assert len(writer._buf) < PART
    # Two full parts are already in S3 under a temporary key; nothing has an address yet.
    [upload] = moto_s3.uploads(bucket)
    assert upload["Key"].startswith("cairn/tmp/upload-") and upload["parts"] == 2
    assert moto_s3.keys(bucket, "cairn/sha256/") == []

    ref = writer.commit()
    assert ref.sha256 == hashlib.sha256(LARGE).hexdigest()
    assert ref.md5 == hashlib.md5(LARGE, usedforsecurity=False).hexdigest()
    assert ref.size == len(LARGE)
    assert moto_s3.keys(bucket) == [f"cairn/sha256/{ref.sha256}"]  # temporary object gone
    assert moto_s3.uploads(bucket) == []
    chunks = list(s3_store.iter_chunks(ref.sha256))
    assert b"".join(chunks) == LARGE
    assert max(len(c) for c in chunks) <= MiB


def test_abort_mid_multipart_leaves_nothing(s3_store: S3BlobStore, moto_s3: MotoS3) -> None:
    writer = s3_store.writer(max_size=len(LARGE))
    for piece in pieces(LARGE[: 2 * PART]):
        writer.write(piece)
    assert moto_s3.uploads(s3_store.location.bucket)
    writer.abort()
    writer.abort()
    assert moto_s3.uploads(s3_store.location.bucket) == []
    assert moto_s3.keys(s3_store.location.bucket) == []


def test_too_large_aborts_the_multipart_upload(s3_store: S3BlobStore, moto_s3: MotoS3) -> None:
    writer = s3_store.writer(max_size=PART + MiB)
    with pytest.raises(PayloadTooLarge):
        for piece in pieces(LARGE):
            writer.write(piece)
    assert moto_s3.uploads(s3_store.location.bucket) == []
    assert moto_s3.keys(s3_store.location.bucket) == []


@pytest.mark.parametrize("data", [b"small state", LARGE], ids=["put", "multipart"])
def test_bytes_damaged_on_the_way_are_refused(
    faulty_store: S3BlobStore, faulty: FaultyS3, moto_s3: MotoS3, data: bytes
) -> None:
    """A store that ignored Content-MD5 kept other bytes: HeadObject's ETag gives it away,
    and nothing is left under the content address."""
    faulty.corrupting = True
    writer = faulty_store.writer(max_size=len(data))
    for piece in pieces(data):
        writer.write(piece)
    with pytest.raises(BlobCorrupted, match="not stored as written"):
        writer.commit()
    faulty.corrupting = False
    assert moto_s3.keys(faulty_store.location.bucket) == []
    assert moto_s3.uploads(faulty_store.location.bucket) == []


def test_a_blob_already_stored_is_written_again_to_refresh_it(
    faulty_store: S3BlobStore, faulty: FaultyS3, moto_s3: MotoS3
) -> None:
    """Writing the address again is what moves S3's LastModified, the last-written time the
    sweep's grace period reads."""
    first = faulty_store.writer(max_size=100)
    first.write(b"same")
    ref = first.commit()
    faulty.seen.clear()
    second = faulty_store.writer(max_size=100)
    second.write(b"same")
    assert second.commit() == ref
    key = faulty_store.key(ref.sha256)
    assert ("PUT", f"/{faulty_store.location.bucket}/{key}") in faulty.seen
    assert moto_s3.keys(faulty_store.location.bucket) == [key]


# ---- reading ----------------------------------------------------------------------------------


def test_missing_blob_is_file_not_found(s3_store: S3BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        next(iter(s3_store.iter_chunks("0" * 64)))
    assert not s3_store.exists("0" * 64)
    assert s3_store.local_path("0" * 64) is None


def test_keys_refuse_anything_but_a_sha256(s3_store: S3BlobStore) -> None:
    for bad in ("../x", "A" * 64, "0" * 63, ""):
        with pytest.raises(ValueError):
            s3_store.key(bad)


# ---- S3 failing -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500])
def test_s3_errors_are_503_with_retry_after_and_no_secret(
    faulty_store: S3BlobStore, faulty: FaultyS3, moto_s3: MotoS3, status: int
) -> None:
    writer = faulty_store.writer(max_size=len(LARGE))
    writer.write(LARGE[:PART])  # the first part is in S3
    faulty.failing = status
    with pytest.raises(BlobStoreUnavailable) as caught:
        for piece in pieces(LARGE[PART:]):
            writer.write(piece)
    err = caught.value
    assert err.status == 503 and err.headers["Retry-After"]
    assert "S3 blob store could not" in err.detail and "try again" in err.detail
    assert "SlowDown" in err.detail or "InternalError" in err.detail
    assert faulty.failed >= 2, "boto3 retries before giving up"
    for text in (err.detail, str(err), repr(err), repr(faulty_store)):
        assert moto_s3.secret not in text and ACCESS_KEY not in text

    with pytest.raises(BlobStoreUnavailable):
        next(iter(faulty_store.iter_chunks("0" * 64)))
    with pytest.raises(BlobStoreUnavailable):
        faulty_store.exists("0" * 64)

    # The upload the failure interrupted could not be aborted; housekeeping removes it.
    faulty.failing = None
    assert moto_s3.uploads(faulty_store.location.bucket)
    assert faulty_store.purge_temporaries(later()) == 1
    assert moto_s3.uploads(faulty_store.location.bucket) == []


# ---- housekeeping and the sweep -----------------------------------------------------------


def test_purge_temporaries_respects_the_cutoff(s3_store: S3BlobStore, moto_s3: MotoS3) -> None:
    bucket = s3_store.location.bucket
    stale = s3_store.writer(max_size=len(LARGE))
    for piece in pieces(LARGE[: PART + 1]):
        stale.write(piece)
    leftover = s3_store.tmp_key("upload-left-by-a-crash")
    moto_s3.client().put_object(Bucket=bucket, Key=leftover, Body=b"x")
    kept = s3_store.writer(max_size=10)
    kept.write(b"blob")
    ref = kept.commit()

    assert s3_store.purge_temporaries(earlier()) == 0
    assert len(moto_s3.uploads(bucket)) == 1
    assert s3_store.purge_temporaries(later()) == 2
    assert moto_s3.uploads(bucket) == []
    assert moto_s3.keys(bucket) == [f"cairn/sha256/{ref.sha256}"]  # blobs are not temporaries


def test_delete_only_blobs_written_before_the_cutoff(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    writer = s3_store.writer(max_size=10)
    writer.write(b"old")
    ref = writer.commit()
    assert [s for s, _ in s3_store.iter_stored()] == [ref.sha256]
    assert not s3_store.delete(ref.sha256, older_than=earlier())
    assert s3_store.exists(ref.sha256)
    assert s3_store.delete(ref.sha256, older_than=later())
    assert not s3_store.exists(ref.sha256)
    assert not s3_store.delete(ref.sha256, older_than=later())  # already gone
    assert list(s3_store.iter_stored()) == []
    # The one deletion left its record (mark and .done) for writers until housekeeping.
    [mark, done] = moto_s3.keys(s3_store.location.bucket, f"cairn/gc/{ref.sha256}/")
    assert done == mark + ".done"


def test_a_writer_publishes_again_when_a_sweep_deleted_its_blob(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    """A sweep announced itself (its mark under gc/<sha256>/) and deletes the blob right after
    the writer published it: the writer waits for the sweep and publishes again."""
    data = b"contested state"
    sha256 = hashlib.sha256(data).hexdigest()
    bucket, key = s3_store.location.bucket, s3_store.key(sha256)
    s3 = moto_s3.client()
    mark = f"cairn/gc/{sha256}/sweep"
    s3.put_object(Bucket=bucket, Key=mark, Body=b"")

    writer = s3_store.writer(max_size=100)
    writer.write(data)
    waiting = threading.Event()
    real_marks = s3_store._marks

    def marks(prefix: str) -> tuple[int, int]:
        found = real_marks(prefix)
        if found[1]:
            waiting.set()  # the writer published, saw the sweep and is waiting for it
        return found

    s3_store._marks = marks  # type: ignore[method-assign]
    done = threading.Event()
    result: list[object] = []

    def commit() -> None:
        try:
            result.append(writer.commit())
        except BaseException as exc:
            result.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=commit)
    thread.start()
    try:
        assert waiting.wait(timeout=60), "the writer never saw the sweep's mark"
        assert not done.is_set(), "the writer must wait while a sweep is on"
        assert s3_store.exists(sha256)  # it published before looking
        s3.delete_object(Bucket=bucket, Key=key)  # the sweep deletes...
        s3.put_object(Bucket=bucket, Key=mark + ".done", Body=b"")  # ...and is done
        assert done.wait(timeout=60)
    finally:
        s3.put_object(Bucket=bucket, Key=mark + ".done", Body=b"")
        thread.join(timeout=60)
    assert result and not isinstance(result[0], BaseException), result
    assert b"".join(s3_store.iter_chunks(sha256)) == data


def test_a_sweep_done_before_the_writer_looks_still_makes_it_publish_again(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    """The interleaving a sweep racing uploads met: the sweep marks the blob, takes its last
    look (old), the writer refreshes it, the sweep deletes it and is done, and only then does
    the writer look for sweeps. The sweep's record is still there, so the writer stores its
    bytes again."""
    data = b"refreshed between the sweep's last look and its delete"
    sha256 = hashlib.sha256(data).hexdigest()
    bucket, s3 = s3_store.location.bucket, moto_s3.client()
    mark = f"cairn/gc/{sha256}/1-sweep"
    s3.put_object(Bucket=bucket, Key=mark, Body=b"")
    real_marks = s3_store._marks
    looked: list[tuple[int, int]] = []

    def marks(prefix: str) -> tuple[int, int]:
        if not looked:  # the writer has published; the sweep now deletes and finishes
            s3.delete_object(Bucket=bucket, Key=s3_store.key(sha256))
            s3.put_object(Bucket=bucket, Key=mark + ".done", Body=b"")
        looked.append(real_marks(prefix))
        return looked[-1]

    s3_store._marks = marks  # type: ignore[method-assign]
    writer = s3_store.writer(max_size=100)
    writer.write(data)
    writer.commit()
    assert looked[0] == (1, 0)  # a finished sweep, seen
    assert b"".join(s3_store.iter_chunks(sha256)) == data


def test_a_blob_deleted_before_the_writer_verified_it_is_stored_again(
    s3_store: S3BlobStore, moto_s3: MotoS3
) -> None:
    """The sweep's DELETE lands between the writer's PUT and its HeadObject: not an error
    for the client, the writer finds the sweep's record and stores the bytes again."""
    data = b"deleted between put and verify"
    sha256 = hashlib.sha256(data).hexdigest()
    bucket, s3 = s3_store.location.bucket, moto_s3.client()
    mark = f"cairn/gc/{sha256}/1-sweep"
    s3.put_object(Bucket=bucket, Key=mark, Body=b"")
    real_verify = s3_store.verify
    calls: list[bool] = []

    def verify(key: str, ref: BlobRef, *etags: str) -> bool:
        if not calls:
            s3.delete_object(Bucket=bucket, Key=key)
            s3.put_object(Bucket=bucket, Key=mark + ".done", Body=b"")
        calls.append(real_verify(key, ref, *etags))
        return calls[-1]

    s3_store.verify = verify  # type: ignore[method-assign]
    writer = s3_store.writer(max_size=100)
    writer.write(data)
    assert writer.commit().sha256 == sha256
    assert calls == [False, True]
    assert b"".join(s3_store.iter_chunks(sha256)) == data


def test_a_sweep_whose_delete_failed_leaves_its_mark_for_writers(
    faulty_store: S3BlobStore, faulty: FaultyS3, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 may still carry out a DELETE whose answer was lost: the sweep's mark stays, so a
    writer of the same bytes waits (GC_WAIT) and then checks the blob is there."""
    monkeypatch.setattr("cairn.blobs.s3.GC_WAIT", 0.2)
    writer = faulty_store.writer(max_size=100)
    writer.write(b"old bytes")
    ref = writer.commit()
    faulty.failing, faulty.failing_methods = 503, {"DELETE"}
    with pytest.raises(BlobStoreUnavailable):
        faulty_store.delete(ref.sha256, older_than=later())
    faulty.failing = None
    bucket = faulty_store.location.bucket
    assert len(moto_s3.keys(bucket, f"x/gc/{ref.sha256}/")) == 1  # a mark, never done
    again = faulty_store.writer(max_size=100)
    again.write(b"old bytes")
    assert again.commit() == ref
    assert b"".join(faulty_store.iter_chunks(ref.sha256)) == b"old bytes"
    assert faulty_store.purge_temporaries(later()) == 0  # no writer's temporaries...
    assert moto_s3.keys(bucket) == [faulty_store.key(ref.sha256)]  # ...but the mark went too


# ---- start-up checks and settings ---------------------------------------------------------


def test_check_names_a_missing_bucket_and_its_endpoint(moto_s3: MotoS3) -> None:
    store = S3BlobStore(S3Location("no-such-bucket-here", moto_s3.endpoint))
    with pytest.raises(ConfigError) as caught:
        store.check()
    message = str(caught.value)
    assert "s3://no-such-bucket-here/" in message and moto_s3.endpoint in message
    assert "does not exist" in message and "CAIRN_S3_BUCKET" in message


def test_check_refuses_an_unreachable_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{processes.free_port()}"
    with pytest.raises(ConfigError) as caught:
        S3BlobStore(S3Location("some-bucket", endpoint)).check()
    assert endpoint in str(caught.value) and "CAIRN_S3_ENDPOINT" in str(caught.value)


def test_check_without_credentials_says_what_to_set(moto_s3: MotoS3) -> None:
    bucket = moto_s3.create_bucket()
    no_creds = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    with environment(no_creds):
        store = S3BlobStore(S3Location(bucket, moto_s3.endpoint))
        with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
            store.check()


def test_check_refuses_a_throttling_s3(moto_s3: MotoS3, faulty: FaultyS3) -> None:
    bucket = moto_s3.create_bucket()
    faulty.failing = 503
    with pytest.raises(ConfigError, match=r"could not reach the bucket \(503\); S3 is throttling"):
        S3BlobStore(S3Location(bucket, faulty.endpoint)).check()


def test_check_leaves_no_probe_behind(s3_store: S3BlobStore, moto_s3: MotoS3) -> None:
    s3_store.check()
    assert moto_s3.keys(s3_store.location.bucket) == []


def test_settings_need_a_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_BLOB_STORE", "s3")
    monkeypatch.delenv("CAIRN_S3_BUCKET", raising=False)
    with pytest.raises(ConfigError, match="CAIRN_S3_BUCKET"):
        from_environment(data_dir=tmp_path)
    monkeypatch.setenv("CAIRN_S3_BUCKET", "Not_A_Bucket")
    with pytest.raises(ConfigError, match="not a bucket name"):
        from_environment(data_dir=tmp_path)


def test_settings_read_bucket_endpoint_and_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_BLOB_STORE", "s3")
    monkeypatch.setenv("CAIRN_S3_BUCKET", "team-state")
    monkeypatch.setenv("CAIRN_S3_ENDPOINT", "https://minio.example:9000")
    monkeypatch.setenv("CAIRN_S3_PREFIX", "/prod/cairn/")
    s = from_environment(data_dir=tmp_path)
    assert (s.blob_store, s.s3_bucket, s.s3_endpoint, s.s3_prefix) == (
        "s3",
        "team-state",
        "https://minio.example:9000",
        "prod/cairn/",
    )


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("minio.example:9000", "http(s) URL"),
        ("https://key:secret@minio.example", "must not carry credentials"),
    ],
)
def test_settings_refuse_a_bad_endpoint(tmp_path: Path, endpoint: str, why: str) -> None:
    s = Settings(data_dir=tmp_path, blob_store="s3", s3_bucket="b-1", s3_endpoint=endpoint)
    with pytest.raises(ConfigError) as caught:
        s.with_defaults().validate()
    assert why in str(caught.value) and "secret" not in str(caught.value)
