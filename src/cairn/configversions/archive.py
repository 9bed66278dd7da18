"""Checking a configuration ``.tar.gz`` while it streams in, before any of it is stored.

``ArchiveChecker.feed`` takes the compressed bytes a chunk at a time, inflates them (bounded:
never more than a chunk of output per step, never more than ``max_unpacked`` bytes in all)
and reads the tar headers as they go by; ``close`` finishes the checks that need the whole
listing. Nothing is ever whole in memory, and nothing is extracted: the executor unpacks the
archive later, so what it will create must be decided here. Refused (``ArchiveError``, a 422
whose message becomes the configuration version's ``error-message``):

* anything that is not a gzip stream holding a tar archive (bad checksum, truncated member,
  unknown member type, sparse or multi-volume members, bytes after the gzip stream);
* a member name that is absolute (``/x``, ``\\x``, ``C:x``), has a ``..`` component or holds
  a NUL byte;
* device files and FIFOs;
* a hard link that does not name a regular file archived before it;
* a symbolic link whose target is absolute or, followed through the archive's other links
  (the target directory may itself be a link), leaves the tree; link loops; any member that
  lies under a symbolic link (extracting it would write through the link). Links are compared
  case-insensitively, as an agent on macOS or Windows would resolve them;
* more than ``max_members`` members or ``max_unpacked`` bytes once inflated (a decompression
  bomb).

The reading follows Python's ``tarfile`` (the executor's extractor), so both see the same
members: ustar/GNU/PAX headers, ``prefix`` joined to ``name``, GNU long names (``L``/``K``),
PAX ``path``/``linkpath``/``size`` (global ``g`` headers included), and the first all-zero
block ends the archive (what follows it is inflated and bounded, but never read as members).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from cairn.errors import Invalid

BLOCK = 512
MAX_MEMBERS = 50_000
# A GNU long name or link name, or one PAX header, is at most this large.
MAX_META = 1024 * 1024
# Inflated bytes produced per step, so one small chunk cannot expand into gigabytes at once.
_STEP = 1024 * 1024
# Symbolic links followed while resolving one target (Linux's limit is 40).
_MAX_HOPS = 40
_GZIP_MAGIC = b"\x1f\x8b"

_REGULAR = {b"0", b"\x00", b"7"}
_HARDLINK, _SYMLINK, _DIRECTORY = b"1", b"2", b"5"
_DEVICES = {b"3": "a character device", b"4": "a block device", b"6": "a FIFO (named pipe)"}
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"
_UNSUPPORTED = {
    b"S": "a GNU sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume continuation",
    b"N": "an old GNU long-name record",
}
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(Invalid):
    """The upload is not a configuration cairn will run; ``detail`` says why."""


@dataclass(frozen=True)
class Summary:
    """What a checked archive holds."""

    members: int
    files: int
    unpacked_size: int  # inflated bytes, the tar structure included


@dataclass
class _Header:
    name: str
    linkname: str
    kind: bytes
    size: int


@dataclass
class _Listing:
    """What ``close`` needs of every member: names, regular files, symbolic links."""

    names: list[str] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    symlinks: dict[str, tuple[str, str]] = field(default_factory=dict)  # folded → (name, target)


def size_text(n: int) -> str:
    """``n`` bytes for a person: whole MiB, else KiB."""
    mib = 1024 * 1024
    return f"{n // mib} MiB" if n >= mib and n % mib == 0 else f"{n // 1024} KiB"


def components(path: str) -> list[str]:
    """The components of a member path ('/' and '\\' both separate; '' and '.' dropped)."""
    return [c for c in re.split(r"[/\\]", path) if c not in ("", ".")]


def _fold(parts: list[str]) -> str:
    return "/".join(parts).casefold()


def check_name(name: str, what: str = "member") -> list[str]:
    """The components of a member name that stays in the tree; ArchiveError otherwise."""
    if "\x00" in name:
        raise ArchiveError(f"{what} {name!r} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ArchiveError(
            f"{what} {name!r} has an absolute path; a configuration archive holds only paths "
            "relative to its root"
        )
    parts = components(name)
    if ".." in parts:
        raise ArchiveError(
            f"{what} {name!r} has a '..' component, which would leave the archive's root"
        )
    return parts


def _number(field_: bytes, what: str) -> int:
    """A tar number field: octal digits, or GNU base-256 (first byte 0x80 or 0xff)."""
    if field_[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field_[1:], "big")
        if field_[0] == 0xFF:
            n -= 256 ** (len(field_) - 1)
        return n
    text = field_.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise ArchiveError(f"the archive has a malformed tar header ({what} is not a number)")
    return int(text, 8)


def _string(field_: bytes) -> str:
    return field_.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156], "the checksum")
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)
    return stored in (unsigned, signed)


class _Tar:
    """The tar stream, fed inflated bytes in any slicing."""

    def __init__(self, max_members: int) -> None:
        self._max_members = max_members
        self._buffer = bytearray()
        self._skip = 0  # member data (and padding) still to pass over
        self._meta_kind: bytes | None = None  # collecting the data of an L/K/x/g record
        self._meta_size = 0
        self._meta = bytearray()
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._pax: dict[str, str] = {}
        self._pax_seen = False
        self._pax_global: dict[str, str] = {}
        self.ended = False
        self.in_member: str | None = None  # the member whose data is being read
        self.members = 0
        self.listing = _Listing()

    @property
    def truncated(self) -> bool:
        """Whether the bytes stopped inside a header or an extended record."""
        return bool(self._buffer) or self._meta_kind is not None

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i = 0
        while i < len(view) and not self.ended:
            if self._skip:
                take = min(self._skip, len(view) - i)
                if self._meta_kind is not None:
                    self._meta += view[i : i + take]
                self._skip -= take
                i += take
                if not self._skip:
                    self.in_member = None
                    if self._meta_kind is not None:
                        self._end_meta()
                continue
            need = BLOCK - len(self._buffer)
            self._buffer += view[i : i + need]
            i += min(need, len(view) - i)
            if len(self._buffer) == BLOCK:
                block, self._buffer = bytes(self._buffer), bytearray()
                self._header(block)

    def _header(self, block: bytes) -> None:
        if block.count(0) == BLOCK:
            self.ended = True  # as tarfile: the first zero block ends the archive
            return
        try:
            valid = _checksum_ok(block)
        except ArchiveError:
            valid = False
        if not valid:
            raise ArchiveError(
                "the archive has an invalid tar header (bad checksum): it is not a tar archive, "
                "or it is corrupt"
            )
        kind = block[156:157]
        name = _string(block[0:100])
        linkname = _string(block[157:257])
        size = _number(block[124:136], "a size")
        prefix = _string(block[345:500])
        if kind == b"\x00" and name.endswith("/"):
            kind = _DIRECTORY  # old tars: a directory is a regular file ending in '/'
        if kind == _DIRECTORY:
            name = name.rstrip("/")
        if prefix and kind not in (_GNU_LONGNAME, _GNU_LONGLINK, b"S"):
            name = prefix + "/" + name
        if size < 0:
            raise ArchiveError(f"member {name!r} has a negative size")
        if kind in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
            if size > MAX_META:
                raise ArchiveError(
                    f"the archive has an extended header of {size} bytes "
                    f"(at most {MAX_META} are accepted)"
                )
            self._meta_kind, self._meta_size, self._meta = kind, size, bytearray()
            self._skip = _padded(size)
            if not self._skip:
                self._end_meta()
            return
        header = self._apply_extensions(_Header(name, linkname, kind, size))
        self._member(header)

    def _end_meta(self) -> None:
        """An extended record is complete. Readers disagree on which of two records for one
        member wins (tarfile: the first; others: the last), so two of a kind, or a GNU long
        name beside a PAX path, are refused: the checked name is the one extracted."""
        kind, raw = self._meta_kind, bytes(self._meta[: self._meta_size])
        self._meta_kind, self._meta = None, bytearray()
        twice = ArchiveError("the archive has two extended headers for one member")
        if kind == _GNU_LONGNAME:
            if self._long_name is not None:
                raise twice
            self._long_name = _string(raw)
        elif kind == _GNU_LONGLINK:
            if self._long_link is not None:
                raise twice
            self._long_link = _string(raw)
        elif kind == _PAX_GLOBAL:
            records = _pax_records(raw)
            if {"path", "linkpath", "size"} & records.keys():
                # Readers differ on whether (and to which members) these apply: refused
                # rather than guessed.
                raise ArchiveError(
                    "the archive has a PAX global header that sets path, linkpath or size; "
                    "that is not supported"
                )
            self._pax_global.update(records)
        else:
            if self._pax_seen:
                raise twice
            self._pax_seen = True
            self._pax.update(_pax_records(raw))

    def _apply_extensions(self, h: _Header) -> _Header:
        pax = {**self._pax_global, **self._pax}
        if (self._long_name is not None and "path" in pax) or (
            self._long_link is not None and "linkpath" in pax
        ):
            raise ArchiveError(
                "the archive names a member both in a GNU long-name record and in a PAX header"
            )
        if self._long_name is not None:
            h.name = self._long_name
            if h.kind == _DIRECTORY:
                h.name = h.name.rstrip("/")
        if self._long_link is not None:
            h.linkname = self._long_link
        if any(k.startswith("GNU.sparse.") for k in pax):
            raise ArchiveError(f"member {h.name!r} is a sparse file, which is not supported")
        if "path" in pax:
            h.name = pax["path"]
        if "linkpath" in pax:
            h.linkname = pax["linkpath"]
        if "size" in pax:
            if not pax["size"].isdigit():
                raise ArchiveError(f"member {h.name!r} has a malformed PAX size")
            h.size = int(pax["size"])
        self._long_name = self._long_link = None
        self._pax, self._pax_seen = {}, False
        return h

    def _member(self, h: _Header) -> None:
        self.members += 1
        if self.members > self._max_members:
            raise ArchiveError(
                f"the archive has more than {self._max_members} members; a configuration "
                "archive holds at most that many files and directories"
            )
        if h.kind in _DEVICES:
            raise ArchiveError(
                f"member {h.name!r} is {_DEVICES[h.kind]}; only files, directories and links "
                "are accepted"
            )
        if h.kind in _UNSUPPORTED:
            raise ArchiveError(f"member {h.name!r} is {_UNSUPPORTED[h.kind]}, not supported")
        known = _REGULAR | {_HARDLINK, _SYMLINK, _DIRECTORY}
        if h.kind not in known:
            raise ArchiveError(f"member {h.name!r} has an unknown tar type {h.kind!r}")
        parts = check_name(h.name)
        listing = self.listing
        folded = _fold(parts)
        if h.kind in _REGULAR:
            listing.files.add(folded)
            self._skip = _padded(h.size)
            self.in_member = h.name if self._skip else None
        elif h.size:
            raise ArchiveError(f"member {h.name!r} is not a regular file but has data")
        if h.kind == _HARDLINK:
            target = check_name(h.linkname, f"the target of hard link {h.name!r},")
            if _fold(target) not in listing.files:
                raise ArchiveError(
                    f"hard link {h.name!r} points at {h.linkname!r}, which is not a regular "
                    "file archived before it"
                )
            listing.files.add(folded)
        elif h.kind == _SYMLINK:
            _check_symlink_target(h.name, h.linkname)
            previous = listing.symlinks.get(folded)
            if previous is not None and previous[0] != "/".join(parts):
                raise ArchiveError(
                    f"symbolic links {previous[0]!r} and {h.name!r} differ only in case"
                )
            listing.symlinks[folded] = ("/".join(parts), h.linkname)
        if parts:
            listing.names.append(folded)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(raw: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    pos = 0
    while pos < len(raw) and raw[pos] != 0:
        match = _PAX_RECORD.match(raw, pos)
        if match is None:
            raise ArchiveError("the archive has a malformed PAX header")
        length = int(match.group(1))
        end = pos + length
        if length < len(match.group(0)) + 1 or end > len(raw) or raw[end - 1 : end] != b"\n":
            raise ArchiveError("the archive has a malformed PAX header")
        key = match.group(2).decode("utf-8", "surrogateescape")
        found[key] = raw[match.end() : end - 1].decode("utf-8", "surrogateescape")
        pos = end
    return found


def _check_symlink_target(name: str, target: str) -> None:
    if not target:
        raise ArchiveError(f"symbolic link {name!r} has an empty target")
    if "\x00" in target:
        raise ArchiveError(f"symbolic link {name!r} has a NUL byte in its target")
    if target.startswith(("/", "\\")) or _DRIVE.match(target):
        raise ArchiveError(
            f"symbolic link {name!r} points at the absolute path {target!r}; links must stay "
            "inside the configuration"
        )


def _resolve(
    start: list[str], rest: list[str], symlinks: dict[str, tuple[str, str]], hops: int
) -> list[str]:
    """Walk ``rest`` from the directory ``start`` (both inside the tree), following the
    archive's symbolic links; the components reached, or ArchiveError when the walk leaves
    the tree or loops."""
    out = list(start)
    for part in rest:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise _Escape()
            out.pop()
            continue
        out.append(part)
        link = symlinks.get(_fold(out))
        if link is not None:
            if hops >= _MAX_HOPS:
                raise _Loop()
            out = _resolve(out[:-1], re.split(r"[/\\]", link[1]), symlinks, hops + 1)
    return out


class _Escape(Exception):
    pass


class _Loop(Exception):
    pass


def check_links(listing: _Listing) -> None:
    """Checks that need every member: nothing lies under a symbolic link, and every link's
    target, followed through the others, stays in the tree."""
    links = listing.symlinks
    if not links:
        return
    seen: set[str] = set()
    for folded in listing.names:
        if folded in links:
            if folded in seen:
                raise ArchiveError(
                    f"member {folded!r} has the name of the symbolic link {links[folded][0]!r}; "
                    "extracting it would write through the link"
                )
            seen.add(folded)
        parts = folded.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in links:
                raise ArchiveError(
                    f"member {folded!r} lies under the symbolic link {links[above][0]!r}; "
                    "extracting it would write through the link"
                )
    for name, target in links.values():
        parts = components(name)
        try:
            _resolve(parts[:-1], re.split(r"[/\\]", target), links, 0)
        except _Escape:
            raise ArchiveError(
                f"symbolic link {name!r} points at {target!r}, outside the configuration"
            ) from None
        except _Loop:
            raise ArchiveError(
                f"symbolic link {name!r} is part of a loop of links (or a chain longer than "
                f"{_MAX_HOPS})"
            ) from None


class ArchiveChecker:
    """A ``.tar.gz`` fed in chunks of compressed bytes (``feed``), then ``close``."""

    def __init__(self, *, max_unpacked: int, max_members: int = MAX_MEMBERS) -> None:
        self._max_unpacked = max_unpacked
        self._inflate: zlib._Decompress | None = None  # inside a gzip member
        self._head = b""  # the first bytes of a member, until its magic can be checked
        self._gzip_members = 0
        self._zeros = False  # zero padding after the last gzip member
        self._tar = _Tar(max_members)
        self.unpacked = 0
        self.compressed = 0

    def feed(self, data: bytes) -> None:
        self.compressed += len(data)
        while data:
            if self._inflate is None:
                if self._zeros:
                    if data.count(0) != len(data):
                        raise ArchiveError("the upload has bytes after its gzip stream")
                    return
                if self._gzip_members and not self._head and data[0] == 0:
                    self._zeros = True
                    continue
                self._head += data
                if len(self._head) < 2:
                    return
                data, self._head = self._head, b""
                if data[:2] != _GZIP_MAGIC:
                    if self._gzip_members:
                        raise ArchiveError("the upload has bytes after its gzip stream")
                    raise ArchiveError(
                        "the upload is not gzip-compressed; upload the configuration as a "
                        ".tar.gz (what 'terraform plan', go-slug and pytfe send)"
                    )
                self._inflate = zlib.decompressobj(wbits=31)
            data = self._inflate_member(self._inflate, data)

    def _inflate_member(self, inflate: zlib._Decompress, data: bytes) -> bytes:
        """Inflate ``data`` a step at a time; what follows the member when it ends."""
        while data:
            try:
                out = inflate.decompress(data, _STEP)
            except zlib.error:
                raise ArchiveError(
                    "the upload is not a valid gzip stream (corrupt or truncated)"
                ) from None
            self._unpacked(out)
            data = inflate.unconsumed_tail
            if inflate.eof:
                self._gzip_members += 1
                self._inflate = None
                return inflate.unused_data
        return b""

    def _unpacked(self, out: bytes) -> None:
        if not out:
            return
        self.unpacked += len(out)
        if self.unpacked > self._max_unpacked:
            raise ArchiveError(
                f"the archive inflates to more than {size_text(self._max_unpacked)}; "
                "that bound (ten times CAIRN_MAX_CONFIG_MB) stops decompression bombs"
            )
        self._tar.feed(out)

    def close(self) -> Summary:
        """The archive was all fed: check that it ended properly, and its links."""
        if self._inflate is not None:
            raise ArchiveError("the upload ends before its gzip stream does (truncated)")
        if self._head and not self._gzip_members:
            raise ArchiveError("the upload is too short to be a .tar.gz")
        if self._head:
            raise ArchiveError("the upload has bytes after its gzip stream")
        if not self._gzip_members:
            raise ArchiveError(
                "the upload is empty; upload the configuration as a gzip-compressed tar archive"
            )
        tar = self._tar
        if tar.in_member is not None:
            raise ArchiveError(f"the archive ends in the middle of member {tar.in_member!r}")
        if tar.truncated:
            raise ArchiveError("the archive ends in the middle of a tar header (truncated)")
        if self.unpacked == 0:
            raise ArchiveError("the gzip stream is empty: it holds no tar archive")
        check_links(tar.listing)
        return Summary(tar.members, len(tar.listing.files), self.unpacked)
