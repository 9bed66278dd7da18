"""The S3 store in the shared blob-store suite (`harness.HARNESSES["s3"]`).

The store runs against moto's server (`conftest.moto_s3`) on a fresh bucket, on the suite's
`FrozenClock`, with 1 MiB parts so that the suite's few-MiB blobs take the multipart path (the
production part size is 8 MiB; `test_s3.py` runs that). Looking under the store means looking
in the bucket: its multipart uploads and temporary objects are the leftovers, its objects the
bytes it holds (the parts of an unfinished upload cannot be read back from S3; the empty
records sweeps leave under gc/ hold no bytes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from cairn.blobs.s3 import S3BlobStore, S3Location
from cairn.blobs.store import BlobStore
from cairn.clock import FrozenClock
from tests.support.s3 import MotoS3

PREFIX = "suite/"


class S3Harness:
    def __init__(self, moto: MotoS3, start: datetime) -> None:
        self.clock = FrozenClock(start)
        self.moto = moto
        self.bucket = moto.create_bucket("suite")
        self.s3 = S3BlobStore(
            S3Location(self.bucket, moto.endpoint, PREFIX), clock=self.clock, part_size=1 << 20
        )
        self.s3.check()
        self.store: BlobStore = self.s3

    def leftovers(self) -> list[str]:
        # (Sweeps' records under gc/ are empty objects, not temporary bytes.)
        uploads = [u["Key"] for u in self.moto.uploads(self.bucket)]
        objects = self.moto.keys(self.bucket, f"{PREFIX}tmp/")
        return sorted(k.rsplit("/", 1)[-1] for k in uploads + objects)

    def stored(self) -> int:
        return len(self.moto.keys(self.bucket, f"{PREFIX}sha256/"))

    def holds(self, needle: bytes) -> bool:
        client = self.moto.client()
        return any(
            needle in client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            for key in self.moto.keys(self.bucket)
        )

    @contextlib.contextmanager
    def fill_disk(self) -> Iterator[None]:
        pytest.skip("S3 has no disk to fill; its refusals are 503s (test_s3.py)")
        yield


def s3_harness(request: pytest.FixtureRequest, tmp_path: Path) -> S3Harness:
    from tests.unit.blobs.harness import START  # harness.py imports this module

    return S3Harness(request.getfixturevalue("moto_s3"), START)
