"""Reading facts out of a Terraform state file without loading it into memory.

Terraform (format version 4) writes ``version``, ``terraform_version``, ``serial``,
``lineage`` and ``outputs`` before ``resources``. ``read_header`` streams the file with ijson
and stops at ``resources`` once it has those facts, so checking a 100 MB state costs the same
as checking a small one. ``count_resources`` walks the whole file (done after the upload
commits, like HCP Terraform's ``resources-processed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

from cairn.errors import Invalid


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
        import io

        return io.BytesIO(source)
    if hasattr(source, "read"):
        return source
    return _ChunkReader(source)


def read_header(source: bytes | Iterable[bytes] | IO[bytes]) -> StateHeader:
    """Parse the top-level facts and outputs. Raises Invalid for anything that is not a
    Terraform state file."""
    head = StateHeader()
    seen_outputs = False
    builder: Any = None
    current: str | None = None
    try:
        events = ijson.parse(as_file(source), use_float=True)
        first = next(events, None)
        if first is None or first[1] != "start_map":
            raise Invalid("the state is not a JSON object; upload a Terraform state file")
        for prefix, event, value in events:
            if prefix == "" and event == "map_key":
                if (
                    value == "resources"
                    and seen_outputs
                    and head.serial is not None
                    and head.lineage
                ):
                    break
                continue
            if prefix == "" and event == "end_map":
                break
            if prefix == "version" and event == "number":
                head.version = int(value)
            elif prefix == "terraform_version" and event == "string":
                head.terraform_version = str(value)[:32]
            elif prefix == "serial" and event == "number":
                head.serial = int(value)
            elif prefix == "lineage" and event == "string":
                head.lineage = str(value)
            elif prefix == "outputs":
                if event in ("start_array", "string", "number", "boolean"):
                    raise Invalid("'outputs' in the state is not an object")
                seen_outputs = True
            elif prefix.startswith("outputs."):
                top = prefix.count(".") == 1  # the event is about an output object itself
                if builder is None:
                    current = prefix.split(".", 2)[1]
                    if not (top and event == "start_map"):
                        raise Invalid(f"output {current!r} in the state is not an object")
                    builder = ijson.ObjectBuilder()
                builder.event(event, value)
                if top and event == "end_map":
                    head.outputs.append(_output(current or "", builder.value))
                    builder, current = None, None
    except ijson.JSONError as exc:
        raise Invalid(f"the state is not valid JSON: {exc}") from None
    if head.version != 4:
        raise Invalid(
            f"state format version {head.version} is not supported: cairn stores Terraform "
            "state format 4 (Terraform 0.12 and later)"
        )
    if head.serial is None or head.serial < 0 or not head.lineage:
        raise Invalid("the state has no valid 'serial' and 'lineage'")
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


def count_resources(source: bytes | Iterable[bytes] | IO[bytes]) -> int:
    """Managed resource instances in the state (what HCP Terraform calls resource-count).

    Counts from parse events, never building a resource in memory (a state may hold one
    resource with 100 MB of instances). Raises Invalid if the file is not well-formed JSON."""
    count = 0
    mode = "managed"
    pending = 0  # instances seen before the resource's "mode" (key order is not guaranteed)
    try:
        for prefix, event, value in ijson.parse(as_file(source)):
            if prefix == "resources.item":
                if event == "start_map":
                    mode, pending = "managed", 0
                elif event == "end_map" and mode == "managed":
                    count += pending
            elif prefix == "resources.item.mode" and event == "string":
                mode = str(value)
            elif prefix == "resources.item.instances.item" and event == "start_map":
                pending += 1
    except ijson.JSONError as exc:
        raise Invalid(f"the state is not valid JSON: {exc}") from None
    return count


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
