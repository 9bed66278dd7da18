"""Safe extraction of configuration archives: what is refused, and what a good one becomes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cairn.executor.archive import ArchiveRefused, extract, job_directory


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def test_a_good_archive_is_extracted_with_safe_modes(tmp_path: Path) -> None:
    data = _tar(
        _file("main.tf", b'output "a" { value = 1 }\n'),
        _file("./modules/m/main.tf", b"# m\n"),
        _file("scripts/run.sh", b"#!/bin/sh\n", mode=0o4777),
        _link("modules/current", "m"),
        _link("copy.tf", "main.tf", hard=True),
    )
    extract(data, tmp_path)
    assert (tmp_path / "main.tf").read_bytes() == b'output "a" { value = 1 }\n'
    assert (tmp_path / "modules/m/main.tf").read_text() == "# m\n"
    assert (tmp_path / "modules/current").resolve() == (tmp_path / "modules/m").resolve()
    assert (tmp_path / "copy.tf").read_bytes() == (tmp_path / "main.tf").read_bytes()
    assert stat.S_IMODE((tmp_path / "scripts/run.sh").stat().st_mode) == 0o755  # no setuid
    assert stat.S_IMODE((tmp_path / "main.tf").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("/etc/evil"), "absolute path"),
        (_file("../evil"), "'..'"),
        (_file("a/../../evil"), "'..'"),
        (_link("evil", "/etc/passwd"), "link leaving the tree"),
        (_link("a/evil", "../../etc"), "link leaving the tree"),
        (_link("evil", "../outside", hard=True), "link leaving the tree"),
        (_special("dev", tarfile.CHRTYPE), "device"),
        (_special("blk", tarfile.BLKTYPE), "device"),
        (_special("fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_unsafe_members_are_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveRefused, match=message):
        extract(_tar(_file("main.tf"), member), dest)
    assert list(dest.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "evil").exists()


def test_a_link_placed_through_an_earlier_link_is_checked_where_it_really_lands(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").mkdir()
    # "d/l -> ../outside" looks like "outside" inside the tree, but "d" is a link to the root,
    # so the link really lands at the root and points one level above it.
    data = _tar(_link("d", "."), _link("d/l", "../outside"), _file("d/l/pwned.tf"))
    with pytest.raises(ArchiveRefused, match="link leaving the tree"):
        extract(data, dest)
    assert not (tmp_path / "outside" / "pwned.tf").exists()
    assert not (dest / "l").exists()


def test_a_link_to_a_directory_inside_the_tree_is_kept(tmp_path: Path) -> None:
    extract(_tar(_link("sub", "."), _file("sub/ok.tf")), tmp_path)
    assert (tmp_path / "ok.tf").exists()


def test_size_and_member_limits(tmp_path: Path) -> None:
    big = _tar(_file("a.tf", b"a" * 600), _file("b.tf", b"b" * 600))
    with pytest.raises(ArchiveRefused, match="expands to more than"):
        extract(big, tmp_path, max_bytes=1000)
    many = _tar(*(_file(f"f{i}.tf") for i in range(11)))
    with pytest.raises(ArchiveRefused, match="more than 10 entries"):
        extract(many, tmp_path, max_members=10)


def test_not_a_tarball(tmp_path: Path) -> None:
    with pytest.raises(ArchiveRefused, match="not a readable"):
        extract(b"this is not gzip", tmp_path)


def test_job_directory_is_private_and_removed(tmp_path: Path) -> None:
    with job_directory(tmp_path) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        (path / "ro").mkdir()
        (path / "ro" / "f").write_text("x")
        os.chmod(path / "ro", 0o500)  # read-only, as provider caches sometimes are
    assert not path.exists()
