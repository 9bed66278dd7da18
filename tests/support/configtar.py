"""Configuration archives (``.tar.gz``) for tests: good ones and each kind of bad one."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

MAIN_TF = b'output "hello" {\n  value = "world"\n}\n'


@dataclass(frozen=True)
class Entry:
    """One member: a file (``data``), a directory, a link (``target``) or a device/FIFO."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    target: str = ""


def file(name: str, data: bytes = MAIN_TF) -> Entry:
    return Entry(name, data)


def directory(name: str) -> Entry:
    return Entry(name, kind=tarfile.DIRTYPE)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.SYMTYPE, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.LNKTYPE, target=target)


def tar_bytes(entries: Iterable[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """The uncompressed tar of ``entries`` (in order)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.kind
            info.mode = 0o755 if e.kind == tarfile.DIRTYPE else 0o644
            if e.kind == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                info.linkname = e.target
                tar.addfile(info)
    return out.getvalue()


def targz(entries: Iterable[Entry] = (), *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A ``.tar.gz`` of ``entries`` (a one-file configuration by default)."""
    entries = list(entries) or [file("main.tf")]
    return gzip.compress(tar_bytes(entries, fmt=fmt), mtime=0)


def members(archive: bytes) -> list[str]:
    """The member names of a ``.tar.gz``, as Python's tarfile reads them."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getnames()
