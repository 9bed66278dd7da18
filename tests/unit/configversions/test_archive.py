"""The configuration archive checker: good archives in every tar dialect pass whatever the
chunking; each kind of bad archive is refused with a message naming the problem."""

from __future__ import annotations

import gzip
import os
import tarfile

import pytest

from cairn.configversions.archive import ArchiveChecker, ArchiveError, Summary
from tests.support.configtar import (
    Entry,
    directory,
    file,
    hardlink,
    members,
    symlink,
    tar_bytes,
    targz,
)

MiB = 1024 * 1024


def check(
    archive: bytes, *, chunk: int = 1 << 20, max_unpacked: int = 64 * MiB, **kw: int
) -> Summary:
    checker = ArchiveChecker(max_unpacked=max_unpacked, **kw)
    for i in range(0, len(archive), chunk):
        checker.feed(archive[i : i + chunk])
    return checker.close()


def refused(archive: bytes, *, chunk: int = 1 << 20, **kw: int) -> str:
    with pytest.raises(ArchiveError) as caught:
        check(archive, chunk=chunk, **kw)
    return caught.value.detail


GOOD = [
    file("main.tf"),
    directory("modules"),
    directory("modules/net"),
    file("modules/net/main.tf", b"variable x {}\n" * 100),
    file("./dot/prefixed.tf"),
    symlink("modules/alias", "net"),
    symlink("shared.tf", "modules/net/main.tf"),
    symlink("up", "modules/../main.tf"),
    hardlink("copy.tf", "main.tf"),
    file("d" * 150 + "/" + "long-name-" * 20 + ".tf"),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_good_archives_pass_in_any_dialect_and_chunking(fmt: int, chunk: int) -> None:
    entries = GOOD if fmt != tarfile.USTAR_FORMAT else GOOD[:-1]  # ustar: names ≤ 255
    archive = targz(entries, fmt=fmt)
    summary = check(archive, chunk=chunk)
    assert summary.members == len(members(archive))
    assert summary.files == 5 if fmt != tarfile.USTAR_FORMAT else 4


def test_an_empty_configuration_and_concatenated_gzip_members_pass() -> None:
    assert check(gzip.compress(tar_bytes([]))).members == 0
    raw = tar_bytes([file("a.tf"), file("b.tf")])
    two = gzip.compress(raw[:1024]) + gzip.compress(raw[1024:]) + b"\0" * 100
    assert check(two, chunk=3).members == 2


def test_what_pytfe_and_terraform_pack(tmp_path: os.PathLike[str]) -> None:
    from pytfe.utils import pack_contents

    root = os.fspath(tmp_path)
    os.makedirs(os.path.join(root, "modules", "m"))
    for rel in ("main.tf", "modules/m/main.tf"):
        with open(os.path.join(root, rel), "w") as f:
            f.write('output "x" { value = 1 }\n')
    os.symlink("modules/m/main.tf", os.path.join(root, "alias.tf"))
    assert check(pack_contents(root).getvalue()).members == 3


# ---- not a .tar.gz ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"\x1f", "too short"),
        (b"PK\x03\x04 a zip", "not gzip-compressed"),
        (tar_bytes([file("main.tf")]), "not gzip-compressed"),
        (targz()[:-12], "truncated"),
        (targz()[:20] + b"x" * 40 + targz()[60:], "not a valid gzip stream"),
        (gzip.compress(b"plain text, not a tar archive" * 40), "not a tar archive"),
        (gzip.compress(b""), "holds no tar archive"),
        (gzip.compress(tar_bytes([file("main.tf", b"x" * 5000)])[:2048]), "middle of member"),
        (gzip.compress(tar_bytes([file("main.tf")])[:300]), "middle of a tar header"),
        (targz() + b"trailing junk", "bytes after its gzip stream"),
    ],
)
def test_what_is_not_a_tar_gz_is_refused(body: bytes, says: str) -> None:
    assert says in refused(body)
    assert says in refused(body, chunk=5)


# ---- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("/etc/cron.d/x", "absolute path"),
        ("\\windows\\x", "absolute path"),
        ("C:/x.tf", "absolute path"),
        ("../outside.tf", "'..' component"),
        ("a/../../outside.tf", "'..' component"),
        ("a\\..\\..\\outside.tf", "'..' component"),
    ],
)
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_paths_that_leave_the_tree_are_refused(name: str, says: str, fmt: int) -> None:
    detail = refused(targz([file("main.tf"), file(name)], fmt=fmt))
    assert says in detail and repr(name) in detail


def test_a_long_pax_path_with_dot_dot_is_refused() -> None:
    name = "a/" * 80 + "../" * 90 + "x.tf"
    assert "'..' component" in refused(targz([file(name)], fmt=tarfile.PAX_FORMAT))


# ---- special files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_devices_and_fifos_are_refused(kind: bytes, says: str) -> None:
    assert says in refused(targz([file("main.tf"), Entry("dev/x", kind=kind)]))


def test_an_unknown_member_type_is_refused() -> None:
    assert "unknown tar type" in refused(targz([Entry("odd", kind=b"Z")]))


# ---- links --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([symlink("x", "/etc/passwd")], "absolute path '/etc/passwd'"),
        ([symlink("x", "../outside")], "outside the configuration"),
        ([symlink("a/b/x", "../../../outside")], "outside the configuration"),
        # Each link stays inside on its own; followed through "up", "escape" leaves.
        ([symlink("up", "sub/.."), symlink("escape", "up/..")], "outside the configuration"),
        ([symlink("sub/deep", ".."), symlink("x", "sub/deep/../..")], "outside the configuration"),
        ([symlink("a", "b"), symlink("b", "a/c")], "loop"),
        ([symlink("link", "."), file("link/../../x.tf")], "'..' component"),
        ([symlink("dir", "sub"), file("dir/main.tf")], "under the symbolic link 'dir'"),
        ([file("DIR/main.tf"), symlink("dir", "sub")], "under the symbolic link 'dir'"),
        ([symlink("f.tf", "main.tf"), file("f.tf")], "name of the symbolic link"),
        ([symlink("L", "a"), symlink("l", "b")], "differ only in case"),
        ([hardlink("h", "/etc/shadow")], "absolute path"),
        ([hardlink("h", "../x")], "'..' component"),
        ([hardlink("h", "later.tf"), file("later.tf")], "not a regular file archived before"),
        ([directory("d"), hardlink("h", "d")], "not a regular file archived before"),
    ],
)
def test_links_that_leave_the_tree_are_refused(entries: list[Entry], says: str) -> None:
    assert says in refused(targz([file("main.tf"), *entries]))


# ---- bombs ---------------------------------------------------------------------------------


def test_a_decompression_bomb_is_stopped_at_the_bound() -> None:
    bomb = targz([file("zeros.bin", b"\0" * (30 * MiB))])
    assert len(bomb) < 100 * 1024
    checker = ArchiveChecker(max_unpacked=10 * MiB)
    with pytest.raises(ArchiveError, match="inflates to more than 10 MiB"):
        checker.feed(bomb)
    assert checker.unpacked <= 10 * MiB + 1024 * 1024  # stopped within one step


def test_one_small_chunk_never_inflates_at_once() -> None:
    """A 10 KiB chunk that inflates to 10 MiB is inflated a step at a time and stopped."""
    bomb = gzip.compress(b"\0" * (10 * MiB))
    assert len(bomb) < 20 * 1024
    checker = ArchiveChecker(max_unpacked=MiB)
    with pytest.raises(ArchiveError, match="inflates to more than 1 MiB"):
        checker.feed(bomb)
    assert checker.unpacked <= 2 * MiB


def test_too_many_members_are_refused() -> None:
    archive = targz([file(f"f{i}.tf", b"") for i in range(30)])
    assert "more than 20 members" in refused(archive, max_members=20)
    assert check(archive, max_members=30).members == 30


# ---- extended headers readers disagree on ----------------------------------------------------


def _member(name: str, data: bytes = b"") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    padded = data + b"\0" * (-len(data) % 512)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + padded


def _pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    make = getattr(tarfile.TarInfo, "_create_pax_generic_header")  # noqa: B009 (private)
    raw: bytes = make(records, kind, "utf-8")
    return raw


def _gnu_long(name: str) -> bytes:
    make = getattr(tarfile.TarInfo, "_create_gnu_long_header")  # noqa: B009 (private)
    raw: bytes = make(name, tarfile.GNUTYPE_LONGNAME, "utf-8", "strict")
    return raw


def _gz(*parts: bytes) -> bytes:
    return gzip.compress(b"".join(parts) + b"\0" * 1024)


@pytest.mark.parametrize(
    ("archive", "says"),
    [
        # tarfile extracts "../evil.tf" (the first record wins); another reader the PAX path.
        (_gz(_gnu_long("../evil.tf"), _pax({"path": "ok.tf"}), _member("x")), "both"),
        (_gz(_pax({"path": "ok.tf"}), _gnu_long("../evil.tf"), _member("x")), "both"),
        (_gz(_gnu_long("ok.tf"), _gnu_long("../evil.tf"), _member("x")), "two extended"),
        (_gz(_pax({"path": "ok.tf"}), _pax({"path": "../e.tf"}), _member("x")), "two extended"),
        (_gz(_pax({"path": "ok.tf"}, tarfile.XGLTYPE), _member("../evil.tf")), "global header"),
        (_gz(_pax({"GNU.sparse.major": "1"}), _member("s")), "sparse"),
    ],
)
def test_ambiguous_extended_headers_are_refused(archive: bytes, says: str) -> None:
    assert says in refused(archive)


def test_a_pax_path_is_what_is_checked_and_what_tarfile_extracts() -> None:
    archive = _gz(_pax({"path": "../evil.tf"}), _member("innocent.tf"))
    assert members(archive) == ["../evil.tf"]
    assert "'..' component" in refused(archive)
    fine = _gz(
        _pax({"path": "deep/" * 40 + "ok.tf"}), _member("x"), _gnu_long("l" * 200), _member("y")
    )
    assert check(fine).members == 2
    assert members(fine) == ["deep/" * 40 + "ok.tf", "l" * 200]
