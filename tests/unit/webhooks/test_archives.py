"""Re-packing a forge's archive at the repository's root (webhooks/archives.py)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.configversions.archive import ArchiveError
from cairn.configversions.service import ConfigUpload
from cairn.webhooks.archives import repack
from cairn.webhooks.model import DeliveryFailed


def forge_archive(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A tar.gz: (name, file data | None for a directory, symlink target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunks(raw: bytes, size: int = 7) -> Iterator[bytes]:
    for i in range(0, len(raw), size):
        yield raw[i : i + size]


def unpack(store: FilesystemBlobStore, sha256: str) -> dict[str, bytes | str | None]:
    raw = b"".join(store.iter_chunks(sha256))
    out: dict[str, bytes | str | None] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f else (m.linkname if m.issym() else None)
    return out


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.check()  # makes its directories
    return store


def run(store: FilesystemBlobStore, raw: bytes, max_bytes: int = 1 << 20) -> str:
    upload = ConfigUpload("cv-test", store, max_bytes=max_bytes)
    try:
        repack(chunks(raw), upload, max_in=max_bytes, max_unpacked=max_bytes * 10)
        upload.close()
        sha, _ = upload.commit()
        return sha
    finally:
        upload.abort()  # as store_archive does: nothing left behind on a refusal


def test_the_top_directory_is_stripped(store: FilesystemBlobStore) -> None:
    raw = forge_archive(
        [
            ("infra-abc/", None, None),
            ("infra-abc/main.tf", b"x", None),
            ("infra-abc/mod/", None, None),
            ("infra-abc/mod/a.tf", b"y", None),
            ("infra-abc/.hidden", b"z", None),
            ("infra-abc/link.tf", None, "main.tf"),
        ]
    )
    assert unpack(store, run(store, raw)) == {
        "main.tf": b"x",
        "mod": None,
        "mod/a.tf": b"y",
        ".hidden": b"z",
        "link.tf": "main.tf",
    }


def test_more_than_one_top_directory_is_refused(store: FilesystemBlobStore) -> None:
    raw = forge_archive([("a/x.tf", b"1", None), ("b/y.tf", b"2", None)])
    with pytest.raises(DeliveryFailed, match="one top directory"):
        run(store, raw)


def test_a_link_out_of_the_repository_is_refused(store: FilesystemBlobStore) -> None:
    raw = forge_archive([("top/", None, None), ("top/evil", None, "../../etc/passwd")])
    with pytest.raises(ArchiveError):
        run(store, raw)


def test_too_large_downloads_and_unpacked_sizes_are_refused(store: FilesystemBlobStore) -> None:
    raw = forge_archive([("top/big", b"\0" * 50_000, None)])
    with pytest.raises(DeliveryFailed, match="larger than"):
        run(store, raw + b"\0" * 2000, max_bytes=len(raw) + 100)
    with pytest.raises(DeliveryFailed, match="too large once unpacked"):
        run(store, raw, max_bytes=4000)


def test_garbage_is_unreadable(store: FilesystemBlobStore) -> None:
    with pytest.raises(DeliveryFailed, match="unreadable"):
        run(store, b"not a tarball at all")
