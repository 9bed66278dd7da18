"""State bytes on their way in, checked before anything is committed.

``Staged``: a state (or JSON state) written to an uncommitted blob writer while its MD5 is
computed and its content is checked (``inspect.StateReader`` / ``JsonChecker``), a chunk at a
time: nothing is ever whole in memory, nothing is read back, and a refused upload is aborted,
leaving no blob behind.

``InlineBody``: the JSON:API body of a state-version create whose ``data.attributes.state`` /
``json-state`` (base64, what Terraform 1.0.3 sends: up to 4/3 of the state) is streamed out of
the body as it arrives, decoded a chunk at a time into a ``Staged``; the rest of the body (the
*skeleton*, the streamed strings replaced by ``""``) is kept, bounded, and parsed as usual.

Both are fed in a worker thread, never on the event loop (``state.api``).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable
from typing import Literal

from cairn.blobs.store import BlobRef, BlobStore, BlobWriter
from cairn.errors import BadRequest, Invalid, PayloadTooLarge
from cairn.state.inspect import MAX_DEPTH, JsonChecker, StateHeader, StateReader

Kind = Literal["state", "json"]


class Staged:
    """Bytes of one state or JSON state in an uncommitted blob writer, hashed and checked as
    they are fed. ``close`` finishes the check (Invalid: the caller must ``abort``);
    ``commit`` stores the blob; ``abort`` throws it away (safe more than once, and after
    ``commit`` a no-op)."""

    def __init__(self, blobs: BlobStore, kind: Kind, *, max_size: int) -> None:
        self.kind = kind
        self._writer: BlobWriter = blobs.writer(max_size=max_size)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._reader = StateReader() if kind == "state" else None
        self._json = JsonChecker() if kind == "json" else None
        self.size = 0
        self.header: StateHeader | None = None
        self.error: Invalid | None = None
        self.closed = False
        self.committed = False
        self.aborted = False

    def feed(self, data: bytes) -> None:
        """Write, hash and check ``data``. PayloadTooLarge past the limit at once; a content
        error is kept for ``close`` (the caller's rights are checked first), and nothing more
        is written after it."""
        if not data or self.error is not None:
            return
        self.size += len(data)
        self._writer.write(data)  # raises PayloadTooLarge past the limit
        self._md5.update(data)
        try:
            if self._reader is not None:
                self._reader.feed(data)
            elif self._json is not None:
                self._json.feed(data)
        except Invalid as exc:
            self.error = exc
            self.abort()

    def close(self) -> None:
        """Finish the check: the whole content was read (Invalid otherwise)."""
        if self.error is not None:
            raise self.error
        if self.closed:
            return
        try:
            if self._reader is not None:
                self.header = self._reader.close()
            elif self._json is not None:
                self._json.close()
        except Invalid as exc:
            self.error = exc
            raise
        self.closed = True

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    def commit(self) -> BlobRef:
        assert self.closed and not self.aborted
        ref = self._writer.commit()
        self.committed = True
        return ref

    def abort(self) -> None:
        if self.committed or self.aborted:
            return
        self.aborted = True
        self._writer.abort()


def staged_bytes(blobs: BlobStore, kind: Kind, data: bytes, *, max_size: int) -> Staged:
    """``data`` fed and checked at once (a rollback's state); aborted if refused."""
    staged = Staged(blobs, kind, max_size=max_size)
    try:
        staged.feed(data)
        staged.close()
    except BaseException:
        staged.abort()
        raise
    return staged


class Base64Decoder:
    """Strict base64 (the standard alphabet, padding only at the end) decoded in chunks."""

    def __init__(self, out: Callable[[bytes], None], pointer: str) -> None:
        self._out = out
        self._rest = b""
        self._ended = False
        self._pointer = pointer
        self.seen = 0

    def _refuse(self) -> Invalid:
        return Invalid("the value is not valid base64", pointer=self._pointer)

    def feed(self, text: bytes) -> None:
        if not text:
            return
        self.seen += len(text)
        if self._ended:  # something after the padding
            raise self._refuse()
        data = self._rest + text if self._rest else text
        whole = len(data) - len(data) % 4
        self._rest = bytes(data[whole:])
        if whole:
            block = data[:whole]
            if b"=" in block:
                self._ended = True
            try:
                self._out(binascii.a2b_base64(block, strict_mode=True))
            except binascii.Error:
                raise self._refuse() from None

    def close(self) -> None:
        if self._rest:
            raise self._refuse()


_SIGNIFICANT = re.compile(rb'["{}\[\]:,]')
_STREAMED = {"state": "/data/attributes/state", "json-state": "/data/attributes/json-state"}


class InlineBody:
    """A state-version create body, fed in chunks (``feed``), then ``close``: the skeleton
    (bytes to parse as the JSON:API document) and the streamed attributes as ``Staged``.

    The scan needs nothing but the structure: it finds strings and the characters ``{}[]:,``
    between them with C-speed searches, keeps the path of object keys it is in, and only the
    string value at ``data.attributes.state`` / ``json-state`` is diverted (its escapes decoded,
    then base64-decoded into the ``Staged``). A malformed body gives a malformed skeleton, which
    the JSON:API parser reports as usual."""

    def __init__(
        self, stage: Callable[[Kind], Staged], *, max_skeleton: int, max_encoded: int
    ) -> None:
        self._stage = stage
        self._max_skeleton = max_skeleton
        self._max_encoded = max_encoded
        self._skeleton = bytearray()
        # Per open container: [is_object, current key, expecting a key].
        self._stack: list[list[object]] = []
        self._mode = "outside"  # outside | string | key | stream
        self._escape = b""  # an escape sequence cut by a chunk boundary
        self._key = bytearray()
        self.staged: dict[str, Staged] = {}
        self._decoder: Base64Decoder | None = None

    # ---- feeding --------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        data = memoryview(chunk)
        i, n = 0, len(data)
        while i < n:
            if self._mode == "outside":
                i = self._outside(chunk, i)
            else:
                i = self._in_string(chunk, data, i)
        if len(self._skeleton) > self._max_skeleton:
            raise PayloadTooLarge(
                "the request body holds more than "
                f"{self._max_skeleton} bytes besides the 'state' and 'json-state' attributes"
            )

    def _outside(self, chunk: bytes, i: int) -> int:
        found = _SIGNIFICANT.search(chunk, i)
        if found is None:
            self._skeleton += chunk[i:]
            return len(chunk)
        at = found.start()
        self._skeleton += chunk[i : at + 1]
        c = chunk[at]
        stack = self._stack
        if c == 0x7B or c == 0x5B:  # { [
            if len(stack) >= MAX_DEPTH:
                raise BadRequest(f"the request body nests more than {MAX_DEPTH} levels deep")
            stack.append([c == 0x7B, None, c == 0x7B])
        elif c == 0x7D or c == 0x5D:  # } ]
            if stack:
                stack.pop()
        elif c == 0x3A:  # :
            if stack and stack[-1][0]:
                stack[-1][2] = False
        elif c == 0x2C:  # ,
            if stack and stack[-1][0]:
                stack[-1][2] = True
        else:  # a string starts
            if stack and stack[-1][0] and stack[-1][2]:
                self._mode = "key"
                self._key.clear()
            elif self._target() is not None:
                self._start_stream()
            else:
                self._mode = "string"
        return at + 1

    def _target(self) -> str | None:
        """The streamed attribute a string value here belongs to, or None."""
        stack = self._stack
        if (
            len(stack) == 3
            and stack[0][0]
            and stack[0][1] == "data"
            and stack[1][0]
            and stack[1][1] == "attributes"
            and stack[2][0]
            and stack[2][1] in _STREAMED
        ):
            return str(stack[2][1])
        return None

    def _start_stream(self) -> None:
        name = self._target()
        assert name is not None
        kind: Kind = "state" if name == "state" else "json"
        if kind in self.staged:
            raise BadRequest(f"attribute {name!r} is given twice", pointer=_STREAMED[name])
        staged = self._stage(kind)
        self.staged[kind] = staged
        self._decoder = Base64Decoder(staged.feed, _STREAMED[name])
        self._mode = "stream"  # the skeleton keeps the quotes: an empty string

    def _in_string(self, chunk: bytes, data: memoryview, i: int) -> int:
        if self._escape:
            i = self._finish_escape(chunk, i)
            if self._escape:
                return len(chunk)
        # Two memchr scans beat one regex character class by far on a MiB of base64.
        quote = chunk.find(b'"', i)
        stop = len(chunk) if quote < 0 else quote
        slash = chunk.find(b"\\", i, stop)
        end = slash if slash >= 0 else stop
        self._content(data[i:end])
        if end == len(chunk):
            return end
        if chunk[end] == 0x22:  # the closing quote
            self._end_string()
            return end + 1
        self._escape = b"\\"
        return self._finish_escape(chunk, end + 1)

    def _finish_escape(self, chunk: bytes, i: int) -> int:
        """Complete the escape sequence in ``self._escape`` from ``chunk[i:]`` (``\\x`` or
        ``\\uXXXX``); it stays pending when the chunk ends first."""
        while len(self._escape) < (6 if self._escape[1:2] == b"u" else 2):
            if i >= len(chunk):
                return i
            self._escape += chunk[i : i + 1]
            i += 1
        escape, self._escape = self._escape, b""
        if self._mode == "stream":
            try:
                text = json.loads(b'"' + escape + b'"')
            except ValueError:
                raise BadRequest("the request body is not valid JSON") from None
            assert self._decoder is not None
            self._decoder.feed(str(text).encode("utf-8", "surrogatepass"))
        else:
            self._content(memoryview(escape))
        return i

    def _content(self, part: memoryview) -> None:
        if not part:
            return
        if self._mode == "stream":
            assert self._decoder is not None
            if self._decoder.seen + len(part) > self._max_encoded:
                raise PayloadTooLarge(
                    "the state exceeds CAIRN_MAX_STATE_MB (its base64 is too long)"
                )
            self._decoder.feed(bytes(part))
            return
        self._skeleton += part
        if self._mode == "key":
            self._key += part

    def _end_string(self) -> None:
        self._skeleton += b'"'
        if self._mode == "key":
            try:
                key = json.loads(b'"' + bytes(self._key) + b'"')
            except ValueError:
                key = None  # the skeleton's parser reports it
            self._stack[-1][1] = key
        elif self._mode == "stream":
            assert self._decoder is not None
            self._decoder.close()
            self._decoder = None
        self._mode = "outside"

    # ---- the end ----------------------------------------------------------------------------

    def close(self) -> bytes:
        """The skeleton; the streamed attributes are closed (checked) by their users."""
        return bytes(self._skeleton)

    def abort(self) -> None:
        for staged in self.staged.values():
            staged.abort()
