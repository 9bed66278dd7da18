"""cairn.state.inspect: facts read from a state file without loading it whole."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cairn.errors import Invalid
from cairn.state.inspect import count_resources, read_header
from tests.support.statefile import null_resource, state_file

LINEAGE = "8d6bb1a4-3bb4-4b3e-9a0a-2f6e0c1c9f11"

OUTPUTS: dict[str, Any] = {
    "endpoint": {"value": "https://example.test", "type": "string"},
    "password": {"value": "hunter2", "type": "string", "sensitive": True},
    "ports": {"value": [80, 443], "type": ["list", "number"]},
    "nested": {
        "value": {"a": {"b": [1, {"c": None}]}, "flag": True, "ratio": 0.5},
        "type": ["object", {"a": ["map", "dynamic"], "flag": "bool", "ratio": "number"}],
        "sensitive": True,
    },
    "empty": {"value": {}, "type": ["object", {}]},
}


def data_source(name: str) -> dict[str, Any]:
    return {
        "mode": "data",
        "type": "terraform_remote_state",
        "name": name,
        "provider": 'provider["terraform.io/builtin/terraform"]',
        "instances": [{"schema_version": 0, "attributes": {}}],
    }


class CountingChunks:
    """An iterator of chunks that records how many bytes were taken from it."""

    def __init__(self, data: bytes, size: int = 4096) -> None:
        self._data = data
        self._size = size
        self.consumed = 0

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self._data), self._size):
            chunk = self._data[i : i + self._size]
            self.consumed += len(chunk)
            yield chunk


# ---- read_header ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bytes", "chunks", "file"])
def test_header_and_outputs(form: str) -> None:
    raw = state_file(7, LINEAGE, outputs=OUTPUTS, resources=[null_resource("a", 2)])
    source: Any = {
        "bytes": raw,
        "chunks": CountingChunks(raw, size=7),
        "file": io.BytesIO(raw),
    }[form]
    head = read_header(source)
    assert head.version == 4
    assert head.terraform_version == "1.0.3"
    assert head.serial == 7
    assert head.lineage == LINEAGE
    by_name = {o.name: o for o in head.outputs}
    assert set(by_name) == set(OUTPUTS)
    for name, spec in OUTPUTS.items():
        assert by_name[name].value == spec["value"], name
        assert by_name[name].type == spec["type"], name
        assert by_name[name].sensitive is bool(spec.get("sensitive")), name


def test_no_outputs() -> None:
    head = read_header(state_file(0, LINEAGE))
    assert (head.serial, head.outputs) == (0, [])


def test_output_without_type_defaults_to_string() -> None:
    raw = json.dumps(
        {"version": 4, "serial": 1, "lineage": LINEAGE, "outputs": {"x": {"value": "v"}}}
    ).encode()
    (out,) = read_header(raw).outputs
    assert (out.name, out.value, out.type, out.sensitive) == ("x", "v", "string", False)


def test_stops_before_the_resources() -> None:
    """The header of a large state costs what a small one costs: reading stops at
    `resources` once serial, lineage and outputs are known."""
    raw = state_file(3, LINEAGE, outputs=OUTPUTS, resources=[null_resource("big", 50)])
    raw = raw.replace(b'"resources": [', b'"resources": [' + b" " * 4_000_000, 1)
    chunks = CountingChunks(raw)
    head = read_header(chunks)
    assert head.serial == 3 and len(head.outputs) == len(OUTPUTS)
    assert chunks.consumed < 256 * 1024, f"read {chunks.consumed} of {len(raw)} bytes"


def test_stops_early_even_if_the_resources_are_broken() -> None:
    raw = state_file(3, LINEAGE, outputs=OUTPUTS)
    broken = raw.split(b'"resources"')[0] + b'"resources": [{"mode": ' + b"\x00garbage"
    assert read_header(broken).serial == 3


def test_outputs_after_resources_are_still_read() -> None:
    """Not Terraform's order, but valid: the reader keeps going until it has everything."""
    doc = {
        "version": 4,
        "resources": [null_resource("a")],
        "serial": 9,
        "lineage": LINEAGE,
        "outputs": {"late": {"value": 1, "type": "number"}},
    }
    head = read_header(json.dumps(doc).encode())
    assert head.serial == 9
    assert [(o.name, o.value) for o in head.outputs] == [("late", 1)]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param(b"", "JSON", id="empty"),
        pytest.param(b"not json", "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "not a JSON object", id="array"),
        pytest.param(b'"state"', "not a JSON object", id="string"),
        pytest.param(b'{"version": 4, "serial": 1, "lineage": "x", "outputs": {', "JSON", id="cut"),
        pytest.param(b'{"version": 4, "serial": 1, "lineage": "x",}', "JSON", id="trailing-comma"),
    ],
)
def test_invalid_json_is_invalid(raw: bytes, says: str) -> None:
    with pytest.raises(Invalid) as caught:
        read_header(raw)
    assert says in caught.value.detail
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        pytest.param({"version": 2, "serial": 1, "lineage": LINEAGE}, "version 2", id="v2"),
        pytest.param({"version": 5, "serial": 1, "lineage": LINEAGE}, "version 5", id="v5"),
        pytest.param({"serial": 1, "lineage": LINEAGE}, "version None", id="no-version"),
        pytest.param({"version": 4, "lineage": LINEAGE}, "serial", id="no-serial"),
        pytest.param({"version": 4, "serial": -1, "lineage": LINEAGE}, "serial", id="negative"),
        pytest.param({"version": 4, "serial": 1}, "lineage", id="no-lineage"),
        pytest.param({"version": 4, "serial": 1, "lineage": ""}, "lineage", id="empty-lineage"),
        pytest.param({"version": "4", "serial": 1, "lineage": LINEAGE}, "version", id="str-ver"),
    ],
)
def test_not_a_terraform_3_or_4_state_is_invalid(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(Invalid) as caught:
        read_header(json.dumps(doc).encode())
    assert says in caught.value.detail


@pytest.mark.parametrize(
    "outputs",
    [
        pytest.param({"x": 5}, id="only"),
        pytest.param({"x": 5, "y": {"value": 1, "type": "number"}}, id="before-another"),
        pytest.param({"x": [1, 2]}, id="list"),
    ],
)
def test_output_that_is_not_an_object_is_invalid(outputs: dict[str, Any]) -> None:
    """Terraform writes every output as an object; anything else must be refused, not
    skipped (or, worse, merged into the next output under the wrong name)."""
    doc = {"version": 4, "serial": 1, "lineage": LINEAGE, "outputs": outputs}
    with pytest.raises(Invalid) as caught:
        read_header(json.dumps(doc).encode())
    assert "output 'x'" in caught.value.detail


def test_nested_version_or_serial_keys_are_not_the_header() -> None:
    doc = {
        "version": 4,
        "serial": 2,
        "lineage": LINEAGE,
        "outputs": {"serial": {"value": {"serial": 99, "version": 1}, "type": "dynamic"}},
    }
    head = read_header(json.dumps(doc).encode())
    assert (head.version, head.serial) == (4, 2)
    assert head.outputs[0].value == {"serial": 99, "version": 1}


# ---- count_resources --------------------------------------------------------------------------


def test_count_resources_counts_managed_instances() -> None:
    raw = state_file(
        1,
        LINEAGE,
        outputs=OUTPUTS,
        resources=[null_resource("a", 3), data_source("remote"), null_resource("b", 1)],
    )
    assert count_resources(raw) == 4
    assert count_resources(CountingChunks(raw, size=5)) == 4
    assert count_resources(io.BytesIO(raw)) == 4


def test_count_resources_of_modules_and_empty_states() -> None:
    in_module = {**null_resource("m", 2), "module": "module.child"}
    no_mode = {k: v for k, v in null_resource("legacy", 1).items() if k != "mode"}
    no_instances = {**null_resource("none"), "instances": []}
    raw = state_file(1, LINEAGE, resources=[in_module, no_mode, no_instances])
    assert count_resources(raw) == 3
    assert count_resources(state_file(1, LINEAGE)) == 0
    no_resources = json.dumps({"version": 4, "serial": 1, "lineage": LINEAGE}).encode()
    assert count_resources(no_resources) == 0


def test_count_resources_needs_valid_json_to_the_end() -> None:
    raw = state_file(1, LINEAGE, resources=[null_resource("a", 2)])
    with pytest.raises(Invalid, match="not valid JSON"):
        count_resources(raw[:-10])
