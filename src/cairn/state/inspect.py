"""Reading facts out of a Terraform state file without loading it into memory.

Every parse here is bounded: the file is streamed with ijson's *basic* events (no prefixes:
yajl's prefixed events cost memory quadratic in nesting depth), and nesting deeper than
``MAX_DEPTH`` is refused (``Invalid``) as soon as it is seen, so a small file of nested ``[``
costs what any other small file costs.

Terraform (format version 4) writes ``version``, ``terraform_version``, ``serial``,
``lineage`` and ``outputs`` before ``resources``. ``read_state`` walks the whole file once:
header, outputs and the count of managed resource instances (HCP Terraform's
``resources-processed``), so a state that cannot be processed is refused before it is
committed. ``read_header`` stops at ``resources`` once it has the header (a cheap look);
``count_resources`` counts only; ``check_json`` checks any JSON document (the JSON state).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

from cairn.errors import Invalid

# Deepest nesting of objects and arrays accepted in a state or JSON state. Terraform's own
# states nest a few levels plus the depth of the values they hold; 256 leaves room for any
# real value while keeping every parser (ijson, json, the JSON:API encoder) far from its limits.
MAX_DEPTH = 256

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
    return _checked(_walk(source, early=False, outputs=True))


def read_header(source: bytes | Iterable[bytes] | IO[bytes]) -> StateHeader:
    """The top-level facts and outputs, reading no further than needed (the rest of the file
    is not checked). Raises Invalid for anything that is not a Terraform state file."""
    return _checked(_walk(source, early=True, outputs=True))


def count_resources(source: bytes | Iterable[bytes] | IO[bytes]) -> int:
    """Managed resource instances in the state (what HCP Terraform calls resource-count).

    Counts from parse events, never building a resource in memory (a state may hold one
    resource with 100 MB of instances). Raises Invalid if the file is not well-formed JSON
    or nests too deeply."""
    return _walk(source, early=False, outputs=False).resource_count


def check_json(source: bytes | Iterable[bytes] | IO[bytes], what: str = "JSON state") -> None:
    """Raise Invalid unless ``source`` is one well-formed JSON value nested at most
    ``MAX_DEPTH`` levels (``what`` names it in the message)."""
    depth = 0
    try:
        for event, _ in ijson.basic_parse(as_file(source)):
            if event == "start_map" or event == "start_array":
                depth += 1
                if depth > MAX_DEPTH:
                    raise Invalid(_TOO_DEEP.format(what=what))
            elif event == "end_map" or event == "end_array":
                depth -= 1
    except ijson.JSONError as exc:
        raise Invalid(f"the {what} is not valid JSON: {exc}") from None


def _checked(head: StateHeader) -> StateHeader:
    if head.version != 4:
        raise Invalid(
            f"state format version {head.version} is not supported: cairn stores Terraform "
            "state format 4 (Terraform 0.12 and later)"
        )
    if head.serial is None or head.serial < 0 or not head.lineage:
        raise Invalid("the state has no valid 'serial' and 'lineage'")
    return head


def _walk(
    source: bytes | Iterable[bytes] | IO[bytes], *, early: bool, outputs: bool
) -> StateHeader:
    """One pass over basic parse events. ``stack`` holds, per open container, the current key
    of an object or None for an array; its length is the depth."""
    head = StateHeader()
    seen_outputs = False
    builder: Any = None  # building the output named ``out_name``
    out_name = ""
    mode, pending, count = "managed", 0, 0  # the resource being read; instances so far
    stack: list[str | None] = []
    try:
        events = ijson.basic_parse(as_file(source), use_float=True)
        first = next(events, None)
        if first is None or first[0] != "start_map":
            raise Invalid("the state is not a JSON object; upload a Terraform state file")
        stack.append("")
        for event, value in events:
            depth = len(stack)
            if event == "map_key":
                if (
                    early
                    and depth == 1
                    and value == "resources"
                    and seen_outputs
                    and head.serial is not None
                    and head.lineage
                ):
                    return head
                stack[-1] = value
                if builder is not None:
                    builder.event(event, value)
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
                        seen_outputs = True
                elif depth == 2:
                    if top == "outputs":
                        if event != "start_map":
                            raise Invalid(f"output {stack[1]!r} in the state is not an object")
                        if outputs:
                            out_name = stack[1] or ""
                            builder = ijson.ObjectBuilder()
                            builder.event(event, value)
                    elif top == "resources" and stack[1] is None and event == "start_map":
                        mode, pending = "managed", 0
                elif (
                    depth == 4
                    and event == "start_map"
                    and top == "resources"
                    and stack[1] is None
                    and stack[2] == "instances"
                    and stack[3] is None
                ):
                    pending += 1
                stack.append("" if event == "start_map" else None)
            elif event == "end_map" or event == "end_array":
                stack.pop()
                depth -= 1
                if builder is not None:
                    builder.event(event, value)
                    if depth == 2:
                        head.outputs.append(_output(out_name, builder.value))
                        builder = None
                elif (
                    depth == 2
                    and event == "end_map"
                    and stack[0] == "resources"
                    and stack[1] is None
                    and mode == "managed"
                ):
                    count += pending
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
                    seen_outputs = True
            elif depth == 2 and stack[0] == "outputs":
                raise Invalid(f"output {stack[1]!r} in the state is not an object")
            elif (
                depth == 3
                and event == "string"
                and stack[2] == "mode"
                and stack[0] == "resources"
                and stack[1] is None
            ):
                mode = str(value)
    except ijson.JSONError as exc:
        raise Invalid(f"the state is not valid JSON: {exc}") from None
    head.resource_count = count
    return head


def _output(name: str, raw: Any) -> Output:
    if not isinstance(raw, dict):
        raise Invalid(f"output {name!r} in the state is malformed")
    return Output(
        name=name,
        value=raw.get("value"),
        type=raw.get("type", "string"),
        sensitive=bool(raw.get("sensitive", False)),
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
