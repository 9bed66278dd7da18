"""Blob-store fixtures: a real S3 API (moto's server, started once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cairn.blobs.s3 import S3BlobStore, S3Location
from tests.support.s3 import MotoS3, running_moto


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server on a loopback port, with the test credentials in the environment
    (boto3's standard chain reads them, as it would in production). It takes parts down to
    1 MiB, so the shared suite's few-MiB blobs can go through multipart uploads too (the
    integration tests' server keeps S3's 5 MiB minimum)."""
    yield from running_moto(tmp_path_factory, S3_UPLOAD_PART_MIN_SIZE=str(1024 * 1024))


@pytest.fixture
def s3_store(moto_s3: MotoS3) -> S3BlobStore:
    """An S3 store on a fresh bucket, under a prefix, checked."""
    store = S3BlobStore(S3Location(moto_s3.create_bucket(), moto_s3.endpoint, "cairn/"))
    store.check()
    return store
