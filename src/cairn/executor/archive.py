"""Safe extraction of a configuration version's ``.tar.gz`` into a job's working directory.

The tarball is user input: a member may try to escape the tree (an absolute path, ``..``, a
link pointing outside), be a device or a FIFO, or expand to far more than it weighs. Every
member is checked before anything is written; a refused archive raises ``ArchiveRefused`` with
a message naming the member, and the caller's directory is left to be removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import CairnError

MiB = 1024 * 1024
MAX_ARCHIVE_BYTES = 512 * MiB  # uncompressed total of the members
MAX_MEMBERS = 50_000


class ArchiveRefused(CairnError):
    """The configuration archive is unsafe or too large; nothing of it may be used."""

    code = "archive-refused"


def _member_path(name: str) -> str:
    """The member's normalised relative path, or raise when it leaves the tree."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"the configuration archive holds an absolute path: {name!r}")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"the configuration archive holds a path with '..': {name!r}")
    return "/".join(parts)


def _check_link(member: tarfile.TarInfo, path: str) -> str:
    """The link target relative to the tree root, or raise when it leaves the tree."""
    target = member.linkname
    if not target or target.startswith("/"):
        raise ArchiveRefused(
            "the configuration archive holds a link leaving the tree: "
            f"{member.name!r} -> {target!r}"
        )
    base = posixpath.dirname(path) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ArchiveRefused(
            "the configuration archive holds a link leaving the tree: "
            f"{member.name!r} -> {target!r}"
        )
    return resolved


def check_members(
    members: list[tarfile.TarInfo], *, max_bytes: int, max_members: int
) -> list[tuple[tarfile.TarInfo, str]]:
    """Validate every member; return ``(member, relative path)`` pairs to extract."""
    if len(members) > max_members:
        raise ArchiveRefused(
            f"the configuration archive holds more than {max_members} entries; "
            "leave generated or vendored files out of it (.terraformignore)"
        )
    total = 0
    checked: list[tuple[tarfile.TarInfo, str]] = []
    for member in members:
        path = _member_path(member.name)
        if (
            member.isdev()
            or member.isfifo()
            or not (member.isfile() or member.isdir() or member.issym() or member.islnk())
        ):
            raise ArchiveRefused(
                f"the configuration archive holds a device, FIFO or special file: {member.name!r}"
            )
        if member.issym() or member.islnk():
            _check_link(member, path)
        if member.isfile():
            total += member.size
            if total > max_bytes:
                raise ArchiveRefused(
                    f"the configuration archive expands to more than {max_bytes // MiB} MiB"
                )
        if path:
            checked.append((member, path))
    return checked


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def extract(
    data: bytes,
    dest: Path,
    *,
    max_bytes: int = MAX_ARCHIVE_BYTES,
    max_members: int = MAX_MEMBERS,
) -> None:
    """Extract the gzip'd tar ``data`` into the existing directory ``dest``.

    Files get mode 0644 or 0755 (no setuid, no other users' write), directories 0755, links are
    re-checked against the real tree before they are made, and a file is never written through
    a link (a later member cannot use an earlier symlink to write outside ``dest``).
    """
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveRefused(
            f"the configuration archive is not a readable .tar.gz: {exc}"
        ) from None
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveRefused(f"the configuration archive is damaged: {exc}") from None
        checked = check_members(members, max_bytes=max_bytes, max_members=max_members)
        root = dest.resolve()
        for member, rel in checked:
            target = root / rel
            parent = target.parent
            parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            if not _inside(root, parent):
                raise ArchiveRefused(
                    f"the configuration archive writes through a link: {member.name!r}"
                )
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            if member.isdir():
                target.mkdir(exist_ok=True, mode=0o755)
            elif member.issym():
                os.symlink(member.linkname, target)
                if not _inside(root, target):
                    target.unlink()
                    raise ArchiveRefused(
                        "the configuration archive holds a link leaving the tree: "
                        f"{member.name!r} -> {member.linkname!r}"
                    )
            elif member.islnk():
                source = root / _check_link(member, rel)
                if not source.is_file() or not _inside(root, source):
                    raise ArchiveRefused(
                        f"the configuration archive holds a hard link to a missing or outside "
                        f"file: {member.name!r} -> {member.linkname!r}"
                    )
                shutil.copyfile(source, target)
            else:
                stream = archive.extractfile(member)
                if stream is None:  # pragma: no cover - isfile() members always have data
                    raise ArchiveRefused(f"cannot read {member.name!r} from the archive")
                with stream, open(target, "xb") as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
                os.chmod(target, 0o755 if member.mode & stat.S_IXUSR else 0o644)


def _force_remove(func: object, path: str, _exc: object) -> None:
    """rmtree's error hook: make a read-only entry's parent writable and retry."""
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


@contextlib.contextmanager
def job_directory(parent: Path | None = None) -> Iterator[Path]:
    """A fresh private (0700) directory for one job, removed with everything in it afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cairn-job-", dir=parent))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, onerror=_force_remove)
