"""cairn.state.inspect has bounded depth and memory (H1, security findings 2026-11-30): nesting
deeper than `MAX_DEPTH` is `Invalid` wherever it starts, read in memory that does not grow with
the depth (ijson's prefixed events used to cost memory quadratic in it), and `read_state`
checks the whole file, counting resources in the same pass."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from cairn.errors import Invalid
from cairn.state.inspect import (
    MAX_DEPTH,
    check_json,
    count_resources,
    read_header,
    read_state,
)
from tests.support.statefile import null_resource, state_file

LINEAGE = "8d6bb1a4-3bb4-4b3e-9a0a-2f6e0c1c9f11"


def header(after: bytes, *, pad: int = 0) -> bytes:
    """A state whose `resources` are `after`, its first `pad` bytes an output."""
    head = '{"version":4,"serial":1,"lineage":"' + LINEAGE + '","outputs":{"pad":{"value":"'
    return (head + "x" * pad + '"}},"resources":').encode() + after + b"}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "reader",
    [read_state, count_resources, check_json],
    ids=["read_state", "count_resources", "check_json"],
)
@pytest.mark.parametrize("pad", [0, 70_000], ids=["first-buffer", "after-first-buffer"])
def test_too_deep_is_invalid_in_bounded_memory(reader: Callable[[bytes], Any], pad: int) -> None:
    raw = header(nested(100_000), pad=pad)
    tracemalloc.start()
    try:
        with pytest.raises(Invalid, match=f"more than {MAX_DEPTH} levels deep"):
            reader(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a {len(raw)} byte state"


def test_the_bound_itself_is_accepted() -> None:
    # The top-level object and the `resources` array are two of the levels.
    raw = header(b"[" + nested(MAX_DEPTH - 2) + b"]")
    assert read_state(raw).resource_count == 0
    check_json(raw)
    with pytest.raises(Invalid):
        read_state(header(b"[" + nested(MAX_DEPTH - 1) + b"]"))


def test_deep_outputs_are_refused() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH):
        value = {"v": value}
    doc = {"version": 4, "serial": 1, "lineage": LINEAGE, "outputs": {"x": {"value": value}}}
    with pytest.raises(Invalid, match="levels deep"):
        read_header(json.dumps(doc).encode())


def test_read_state_checks_the_whole_file_and_counts() -> None:
    raw = state_file(3, LINEAGE, resources=[null_resource("a", 3), null_resource("b", 1)])
    head = read_state(raw)
    assert (head.serial, head.lineage, head.resource_count) == (3, LINEAGE, 4)
    assert read_header(raw).resource_count == -1  # the header alone is not a count
    broken = raw.split(b'"resources"')[0] + b'"resources": [{"mode": ' + b"\x00garbage"
    assert read_header(broken).serial == 3
    with pytest.raises(Invalid, match="not valid JSON"):
        read_state(broken)
    with pytest.raises(Invalid, match="not valid JSON"):
        read_state(raw + b"{}")


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,]", b"{} {}"], ids=repr)
def test_check_json_refuses_what_is_not_one_json_value(raw: bytes) -> None:
    with pytest.raises(Invalid, match="JSON state is not valid JSON"):
        check_json(raw)
