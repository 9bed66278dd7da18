"""Reading facts out of a Terraform state file without loading it into memory.

Every parse here is bounded: the file is streamed with ijson's *basic* events (no prefixes:
yajl's prefixed events cost memory quadratic in nesting depth), and nesting deeper than
``MAX_DEPTH`` is refused (``Invalid``) as soon as it is seen, so a small file of nested ``[``
costs what any other small file costs.

Two state formats are read:

* format 4 (Terraform 0.12 and later) writes ``version``, ``terraform_version``, ``serial``,
  ``lineage`` and ``outputs`` before ``resources`` (a list of resources, each with its
  ``instances``);
* format 3 (Terraform 0.11 and earlier) has a ``modules`` list instead; each module has a
  ``path`` (the root module's is ``["root"]``), its ``outputs`` and ``resources`` (an object with
  one key per instance, ``data.`` keys being data sources). The root module's outputs are the
  state's outputs.

``read_state`` walks the whole file once: header, outputs and the count of managed resource
instances (HCP Terraform's ``resources-processed``), so a state that cannot be processed is
refused before it is committed. ``StateReader`` does the same pushed a chunk at a time (a
state arriving in a request body). ``read_header`` stops at ``resources`` once it has the
header (a cheap look); ``count_resources`` counts only; ``check_json`` / ``JsonChecker`` check
any JSON document (the JSON state).

Output values go to the database as JSON text (a NUL as its ``\\u0000`` escape); a lone UTF-16
surrogate, which Terraform never writes and no database or UTF-8 response can carry, is refused.
"""

from __future__ import annotations

import abc
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

from cairn.errors import Invalid
from cairn.names import unstorable

# Deepest nesting of objects and arrays accepted in a state or JSON state. Terraform's own
# states nest a few levels plus the depth of the values they hold; 256 leaves room for any
# real value while keeping every parser (ijson, json, the JSON:API encoder) far from its limits.
MAX_DEPTH = 256

# Bytes handed to the push parser at once: it produces every event of a slice before any is
# looked at, so a slice of ``[`` costs its length in events; 64 KiB is what the pull parser reads.
_SLICE = 64 * 1024

SUPPORTED_VERSIONS = (3, 4)

_TOO_DEEP = (
    f"the {{what}} nests objects and arrays more than {MAX_DEPTH} levels deep; "
    "cairn refuses it (no Terraform state nests that deep)"
)


@dataclass
class Output:
    name: str
    value: Any
    type: Any
    sensitive: bool
    # What the database stores (``storable_json``).
    value_json: str = ""
    type_json: str = ""


@dataclass
class StateHeader:
    version: int | None = None
    terraform_version: str = ""
    serial: int | None = None
    lineage: str | None = None
    outputs: list[Output] = field(default_factory=list)
    # Managed resource instances; -1 when not counted (``read_header`` stops early).
    resource_count: int = -1


class _ChunkReader:
    """A file-like object over an iterator of byte chunks (for ijson)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def as_file(source: bytes | Iterable[bytes] | IO[bytes]) -> Any:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if hasattr(source, "read"):
        return source
    return _ChunkReader(source)


def read_state(source: bytes | Iterable[bytes] | IO[bytes]) -> StateHeader:
    """Check a whole state file and read its facts, outputs and resource count. Raises
    Invalid for anything that is not a Terraform state file cairn can process."""
    reader, f = StateReader(), as_file(source)
    while chunk := f.read(_SLICE):
        reader.feed(chunk)
    return reader.close()


def read_header(source: bytes | Iterable[bytes] | IO[bytes]) -> StateHeader:
    """The top-level facts and outputs, reading no further than needed (the rest of the file
    is not checked). Raises Invalid for anything that is not a Terraform state file."""
    return _checked(_pull(source, _Walker(early=True, outputs=True)))


def count_resources(source: bytes | Iterable[bytes] | IO[bytes]) -> int:
    """Managed resource instances in the state (what HCP Terraform calls resource-count).

    Counts from parse events, never building a resource in memory (a state may hold one
    resource with 100 MB of instances). Raises Invalid if the file is not well-formed JSON
    or nests too deeply."""
    return _pull(source, _Walker(early=False, outputs=False)).resource_count


def check_json(source: bytes | Iterable[bytes] | IO[bytes], what: str = "JSON state") -> None:
    """Raise Invalid unless ``source`` is one well-formed JSON value nested at most
    ``MAX_DEPTH`` levels (``what`` names it in the message)."""
    checker = _Depth(what)
    try:
        checker.events(ijson.basic_parse(as_file(source)))
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        raise _not_json(what, exc) from None


def _not_json(what: str, exc: Exception) -> Invalid:
    if isinstance(exc, UnicodeDecodeError):
        return Invalid(
            f"the {what} holds a string that is not UTF-8 text (stray bytes, or an unpaired "
            "UTF-16 surrogate such as a lone \\ud800 escape); Terraform never writes one"
        )
    return Invalid(f"the {what} is not valid JSON: {exc}")


class _Pushed(abc.ABC):
    """A push parser: bytes in with ``feed``, the result from ``close``; subclasses say what
    the parsed events mean (``_consume``)."""

    what = "state"

    def __init__(self) -> None:
        self._events: Any = ijson.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events, use_float=True)

    @abc.abstractmethod
    def _consume(self, events: list[tuple[str, Any]]) -> None:
        """Take the parser's events since the last call (the caller then clears the list)."""

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), _SLICE):
                self._parser.send(bytes(view[start : start + _SLICE]))
                self._consume(self._events)
                del self._events[:]
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise _not_json(self.what, exc) from None

    def _end(self) -> None:
        try:
            self._parser.close()
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise _not_json(self.what, exc) from None
        self._consume(self._events)
        del self._events[:]


class StateReader(_Pushed):
    """``read_state`` for a state that arrives a chunk at a time: ``feed`` every chunk (each
    is checked as it comes: too deep, not a state, a lone surrogate), then ``close`` for the
    header."""

    def __init__(self) -> None:
        super().__init__()
        self._walker = _Walker(early=False, outputs=True)
        self._surrogates = _Surrogates()

    def feed(self, data: bytes) -> None:
        self._surrogates.feed(data)
        super().feed(data)

    def _consume(self, events: list[tuple[str, Any]]) -> None:
        self._walker.events(events)

    def close(self) -> StateHeader:
        self._surrogates.feed(b"", final=True)
        self._end()
        return _checked(self._walker.finish())


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_LONE = (
    "the state holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape), which "
    "is not text; Terraform never writes one: fix the state file"
)


class _Surrogates:
    """Finds a lone surrogate escape in JSON text fed in chunks. (yajl silently turns one into
    ``?``: the bytes are looked at instead.) A pair (high then low) is a character; a
    backslash preceded by an odd number of backslashes is not an escape."""

    def __init__(self) -> None:
        self._tail = b""  # bytes not yet examined (a possible escape cut by the chunk's end)
        self._slashes = 0  # backslashes right before ``_tail``

    def feed(self, data: bytes, *, final: bool = False) -> None:
        buf = self._tail + data if self._tail else data
        if not final and b"\\ud" not in buf and b"\\uD" not in buf:  # memchr-fast, mostly
            self._keep(buf, max(0, len(buf) - 11))
            return
        keep = len(buf) if final else max(0, len(buf) - 11)
        pos = 0
        while (
            found := _SURROGATE.search(buf, pos, keep + 5 if not final else len(buf))
        ) is not None:
            at = found.start()
            if at >= keep:
                break
            before = at
            while before > 0 and buf[before - 1] == 0x5C:
                before -= 1
            slashes = at - before + (self._slashes if before == 0 else 0)
            if slashes % 2:  # an escaped backslash, then text
                pos = at + 1
                continue
            if buf[at + 3] not in b"89abAB" or _LOW.match(buf, at + 6) is None:
                raise Invalid(_LONE)
            pos = at + 12
        self._keep(buf, max(keep, pos) if not final else len(buf))

    def _keep(self, buf: bytes, start: int) -> None:
        before = start
        while before > 0 and buf[before - 1] == 0x5C:
            before -= 1
        self._slashes = start - before + (self._slashes if before == 0 else 0)
        self._tail = bytes(buf[start:])


class JsonChecker(_Pushed):
    """``check_json`` a chunk at a time."""

    def __init__(self, what: str = "JSON state") -> None:
        super().__init__()
        self.what = what
        self._depth = _Depth(what)

    def _consume(self, events: list[tuple[str, Any]]) -> None:
        self._depth.events(events)

    def close(self) -> None:
        self._end()
        if not self._depth.seen:
            raise Invalid(f"the {self.what} is empty; upload a JSON document")


class _Depth:
    def __init__(self, what: str) -> None:
        self.what = what
        self.depth = 0
        self.seen = False

    def events(self, events: Iterable[tuple[str, Any]]) -> None:
        depth = self.depth
        for event, _ in events:
            self.seen = True
            if event == "start_map" or event == "start_array":
                depth += 1
                if depth > MAX_DEPTH:
                    raise Invalid(_TOO_DEEP.format(what=self.what))
            elif event == "end_map" or event == "end_array":
                depth -= 1
        self.depth = depth


def _checked(head: StateHeader) -> StateHeader:
    if head.version not in SUPPORTED_VERSIONS:
        raise Invalid(
            f"state format version {head.version} is not supported: cairn stores Terraform "
            "state formats 3 (Terraform 0.11 and earlier) and 4 (Terraform 0.12 and later)"
        )
    if head.serial is None or head.serial < 0 or not head.lineage:
        raise Invalid("the state has no valid 'serial' and 'lineage'")
    for text, what in ((head.lineage, "lineage"), (head.terraform_version, "terraform_version")):
        why = unstorable(text)
        if why is not None:
            raise Invalid(f"the state's '{what}' contains {why}, which cairn cannot store")
    return head


def _pull(source: bytes | Iterable[bytes] | IO[bytes], walker: _Walker) -> StateHeader:
    try:
        walker.events(ijson.basic_parse(as_file(source), use_float=True))
    except _Enough:
        return walker.head  # not counted
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        raise _not_json("state", exc) from None
    return walker.finish()


class _Enough(Exception):
    """``read_header`` has what it needs."""


class _Walker:
    """One pass over basic parse events, in batches (``events``). ``stack`` holds, per open
    container, the current key of an object or None for an array; its length is the depth."""

    def __init__(self, *, early: bool, outputs: bool) -> None:
        self.head = StateHeader()
        self.early = early
        self.outputs = outputs
        self.started = False
        self.seen_outputs = False
        self.builder: Any = None  # building the output named ``out_name`` (or a module path)
        self.out_name = ""
        self.building_path = False
        self.mode, self.pending, self.count = "managed", 0, 0  # format 4: resource, instances
        self.module_path: Any = None  # format 3: the module being read
        self.module_outputs: list[Output] = []
        self.stack: list[str | None] = []
        self.skip = 0  # open containers below the depth anything is read at

    def finish(self) -> StateHeader:
        if not self.started:
            raise Invalid("the state is empty; upload a Terraform state file")
        self.head.resource_count = self.count
        return self.head

    def events(self, events: Iterable[tuple[str, Any]]) -> None:
        head, stack = self.head, self.stack
        if not self.started:
            it = iter(events)
            first = next(it, None)
            if first is None:
                return
            if first[0] != "start_map":
                raise Invalid("the state is not a JSON object; upload a Terraform state file")
            self.started = True
            stack.append("")
            events = it
        skip = self.skip
        for event, value in events:
            if skip:  # inside a container nothing is read from: only its depth counts
                if event == "start_map" or event == "start_array":
                    if len(stack) + skip >= MAX_DEPTH:
                        raise Invalid(_TOO_DEEP.format(what="state"))
                    skip += 1
                elif event == "end_map" or event == "end_array":
                    skip -= 1
                continue
            depth = len(stack)
            if depth == 0:
                raise Invalid("the state holds more than one JSON value")
            builder = self.builder
            if event == "map_key":
                if (
                    self.early
                    and depth == 1
                    and value == "resources"
                    and self.seen_outputs
                    and head.serial is not None
                    and head.lineage
                ):
                    raise _Enough
                stack[-1] = value
                if builder is not None:
                    builder.event(event, value)
                elif (
                    depth == 4
                    and stack[0] == "modules"
                    and stack[2] == "resources"
                    and stack[1] is None
                    and not str(value).startswith("data.")
                ):
                    self.count += 1  # format 3: one key per managed instance
            elif event == "start_map" or event == "start_array":
                if depth >= MAX_DEPTH:
                    raise Invalid(_TOO_DEEP.format(what="state"))
                top = stack[0]
                if builder is not None:
                    builder.event(event, value)
                elif depth == 1:
                    if top == "outputs":
                        if event == "start_array":
                            raise Invalid("'outputs' in the state is not an object")
                        self.seen_outputs = True
                elif depth == 2:
                    if top == "outputs":
                        if event != "start_map":
                            raise Invalid(f"output {stack[1]!r} in the state is not an object")
                        if self.outputs:
                            self._build(stack[1] or "", event, value)
                    elif top == "resources" and stack[1] is None and event == "start_map":
                        self.mode, self.pending = "managed", 0
                    elif top == "modules" and stack[1] is None and event == "start_map":
                        self.module_path, self.module_outputs = None, []
                elif depth == 3 and top == "modules" and stack[1] is None:
                    if stack[2] == "path" and event == "start_array":
                        self._build("", event, value)
                        self.building_path = True
                elif depth == 4 and top == "modules" and stack[1] is None:
                    if stack[2] == "outputs" and self.outputs:
                        if event != "start_map":
                            raise Invalid(f"output {stack[3]!r} in the state is not an object")
                        self._build(stack[3] or "", event, value)
                elif (
                    depth == 4
                    and event == "start_map"
                    and top == "resources"
                    and stack[1] is None
                    and stack[2] == "instances"
                    and stack[3] is None
                ):
                    self.pending += 1
                if depth >= 4 and self.builder is None:
                    skip = 1  # a resource instance's (or module resource's) body
                    continue
                stack.append("" if event == "start_map" else None)
            elif event == "end_map" or event == "end_array":
                stack.pop()
                depth -= 1
                if builder is not None:
                    builder.event(event, value)
                    if self.building_path and depth == 3:
                        self.module_path, self.builder, self.building_path = (
                            builder.value,
                            None,
                            False,
                        )
                    elif depth == 2 and stack[0] == "outputs":
                        head.outputs.append(_output(self.out_name, builder.value))
                        self.builder = None
                    elif depth == 4 and stack[0] == "modules":
                        self.module_outputs.append(_output(self.out_name, builder.value))
                        self.builder = None
                elif depth == 2 and stack[1] is None:
                    if stack[0] == "resources" and event == "end_map" and self.mode == "managed":
                        self.count += self.pending
                    elif stack[0] == "modules" and self.module_path == ["root"]:
                        head.outputs.extend(self.module_outputs)
                        self.module_outputs = []
            elif builder is not None:
                builder.event(event, value)
            elif depth == 1:
                key = stack[0]
                if key == "version" and event == "number":
                    head.version = int(value)
                elif key == "terraform_version" and event == "string":
                    head.terraform_version = str(value)[:32]
                elif key == "serial" and event == "number":
                    head.serial = int(value)
                elif key == "lineage" and event == "string":
                    head.lineage = str(value)
                elif key == "outputs":
                    if event != "null":
                        raise Invalid("'outputs' in the state is not an object")
                    self.seen_outputs = True
            elif depth == 2 and stack[0] == "outputs":
                raise Invalid(f"output {stack[1]!r} in the state is not an object")
            elif (
                depth == 3
                and event == "string"
                and stack[2] == "mode"
                and stack[0] == "resources"
                and stack[1] is None
            ):
                self.mode = str(value)
        self.skip = skip

    def _build(self, name: str, event: str, value: Any) -> None:
        self.out_name = name
        self.builder = ijson.ObjectBuilder()
        self.builder.event(event, value)


# Format 3 names an output's type with one word; format 4 with a cty type.
_V3_TYPES = {"string": "string", "list": ["list", "dynamic"], "map": ["map", "dynamic"]}


def _output(name: str, raw: Any) -> Output:
    if not isinstance(raw, dict):
        raise Invalid(f"output {name!r} in the state is malformed")
    why = unstorable(name)
    if why is not None:
        shown = name.encode("unicode_escape").decode()
        raise Invalid(f"output name {shown!r} in the state contains {why}; rename the output")
    value = raw.get("value")
    kind = raw.get("type", "string")
    if isinstance(kind, str) and kind in ("list", "map"):
        kind = _V3_TYPES[kind]
    return Output(
        name=name,
        value=value,
        type=kind,
        sensitive=bool(raw.get("sensitive", False)),
        value_json=storable_json(value, f"output {name!r}"),
        type_json=storable_json(kind, f"the type of output {name!r}"),
    )


def storable_json(value: Any, what: str) -> str:
    """``value`` as JSON text any database column holds (``json.dumps`` already writes control
    characters such as NUL as escapes); Invalid for a lone surrogate, which is not text."""
    text = dumps(value)
    if unstorable(text) is not None:
        raise Invalid(
            f"{what} in the state holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff "
            "escape), which is not text; Terraform never writes one: fix the state file"
        )
    return text


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
