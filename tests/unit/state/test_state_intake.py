"""cairn.state.intake: the inline state streamed out of a state-version create body, whatever
the chunking (the scan's state crosses every boundary: escapes, keys, base64 quanta), into a
blob staged on a real filesystem store, checked and hashed as it comes; the rest of the body
(the skeleton) parsed as usual; memory bounded by the chunk, not by the state."""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.errors import BadRequest, Invalid, PayloadTooLarge
from cairn.state.inspect import StateReader, read_state
from cairn.state.intake import Base64Decoder, InlineBody, Kind, Staged, staged_bytes
from tests.support.statefile import new_lineage, null_resource, state_file

MAX = 64 * 1024 * 1024


@pytest.fixture
def blobs(tmp_path: Path) -> FilesystemBlobStore:
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.check()
    return store


def scan(
    blobs: FilesystemBlobStore, body: bytes, step: int, *, max_skeleton: int = 1024 * 1024
) -> tuple[dict[str, Any], dict[str, Staged]]:
    """Feed `body` `step` bytes at a time; the parsed skeleton and the staged attributes."""

    def stage(kind: Kind) -> Staged:
        return Staged(blobs, kind, max_size=MAX)

    inline = InlineBody(stage, max_skeleton=max_skeleton, max_encoded=MAX * 2)
    try:
        for start in range(0, len(body), step):
            inline.feed(body[start : start + step])
    except BaseException:
        inline.abort()  # as the handler does
        raise
    skeleton: dict[str, Any] = json.loads(inline.close())
    return skeleton, inline.staged


def body_of(attributes: dict[str, Any], **top: Any) -> bytes:
    return json.dumps(
        {"data": {"type": "state-versions", "attributes": attributes}, **top}
    ).encode()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096, 10**9])
def test_the_state_is_streamed_out_whatever_the_chunks(
    blobs: FilesystemBlobStore, step: int
) -> None:
    raw = state_file(3, new_lineage(), resources=[null_resource("a", 2)])
    json_state = b'{"format_version":"1.0"}'
    attributes = {
        "serial": 3,
        "state": base64.b64encode(raw).decode(),
        "md5": hashlib.md5(raw).hexdigest(),
        "json-state": base64.b64encode(json_state).decode(),
        "lin\\u0065age": "x",  # a key with an escape stays a key
    }
    body = body_of(attributes, meta={"state": "not this one", "list": [{"state": 1}]})
    skeleton, staged = scan(blobs, body, step)
    attrs = skeleton["data"]["attributes"]
    assert attrs["state"] == "" and attrs["json-state"] == ""
    assert attrs["serial"] == 3 and attrs["lin\\u0065age"] == "x"
    assert skeleton["meta"]["state"] == "not this one"
    state = staged["state"]
    state.close()
    assert state.md5 == hashlib.md5(raw).hexdigest() and state.size == len(raw)
    assert state.header is not None and state.header.resource_count == 2
    ref = state.commit()
    assert b"".join(blobs.iter_chunks(ref.sha256)) == raw
    staged["json"].close()
    assert b"".join(blobs.iter_chunks(staged["json"].commit().sha256)) == json_state


@pytest.mark.parametrize("step", [1, 5, 10**9])
def test_json_escapes_inside_the_base64_are_decoded(blobs: FilesystemBlobStore, step: int) -> None:
    question = {"q": {"value": "?" * 30, "type": "string"}}
    raw = state_file(1, new_lineage(), outputs=question)
    encoded = base64.b64encode(raw).decode()
    assert "/" in encoded and "A" in encoded
    escaped = encoded.replace("/", "\\/").replace("A", "\\u0041")
    body = b'{"data":{"type":"state-versions","attributes":{"state":"' + escaped.encode() + b'"}}}'
    _, staged = scan(blobs, body, step)
    state = staged["state"]
    state.close()
    assert state.size == len(raw)
    assert state.md5 == hashlib.md5(raw).hexdigest()
    state.abort()


@pytest.mark.parametrize(
    ("value", "step"),
    [
        ("not base64!", 1000),
        ("QUJD", 1000),  # valid base64 of "ABC", not a state: decoded, the check is for later
        ("QUJ", 1000),  # cut
        ("QQ==QUJD", 1000),  # data after the padding
        ("QQ==QUJD", 1),
        ("Q\\nUJD", 1000),  # a newline inside
    ],
)
def test_bad_base64_is_invalid(blobs: FilesystemBlobStore, value: str, step: int) -> None:
    body = b'{"data":{"attributes":{"state":"' + value.encode() + b'"}}}'
    if value == "QUJD":
        _, staged = scan(blobs, body, step)
        with pytest.raises(Invalid, match="not valid JSON"):
            staged["state"].close()
        staged["state"].abort()
        return
    with pytest.raises(Invalid) as caught:
        scan(blobs, body, step)
    assert caught.value.pointer == "/data/attributes/state"


def test_a_state_given_twice_is_refused(blobs: FilesystemBlobStore) -> None:
    body = b'{"data":{"attributes":{"state":"QUJD","state":"QUJD"}}}'
    with pytest.raises(BadRequest, match="given twice"):
        scan(blobs, body, 1000)


def test_the_rest_of_the_body_is_bounded(blobs: FilesystemBlobStore) -> None:
    body = body_of({"serial": 1, "description": "x" * 5000})
    with pytest.raises(PayloadTooLarge):
        scan(blobs, body, 1000, max_skeleton=4096)
    deep = b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BadRequest, match="levels deep"):
        scan(blobs, deep, 65536)


def test_a_malformed_body_gives_a_malformed_skeleton(blobs: FilesystemBlobStore) -> None:
    def stage(kind: Kind) -> Staged:
        return Staged(blobs, kind, max_size=MAX)

    inline = InlineBody(stage, max_skeleton=4096, max_encoded=MAX)
    inline.feed(b'{"data":{"attributes":{"state":"QUJD"')
    with pytest.raises(ValueError):
        json.loads(inline.close())
    inline.abort()


def test_content_errors_wait_for_close_and_stop_writing(blobs: FilesystemBlobStore) -> None:
    """A state that cannot be processed is refused at `close` (after the caller's rights are
    checked), and nothing of it is committed."""
    staged = Staged(blobs, "state", max_size=MAX)
    staged.feed(b'{"a":' + b"[" * 300)
    staged.feed(b"]" * 300 + b"}")
    with pytest.raises(Invalid, match="levels deep"):
        staged.close()
    staged.abort()
    with pytest.raises(Invalid):
        staged_bytes(blobs, "state", b'{"version": 4, "serial": 1, "lineage": ', max_size=MAX)


def test_too_large_is_refused_as_it_arrives(blobs: FilesystemBlobStore) -> None:
    staged = Staged(blobs, "state", max_size=1000)
    with pytest.raises(PayloadTooLarge):
        staged.feed(b" " * 1001)
    staged.abort()


def test_base64_decoder_alone() -> None:
    out: list[bytes] = []
    decoder = Base64Decoder(out.append, "/p")
    for c in base64.b64encode(b"hello world!?"):
        decoder.feed(bytes([c]))
    decoder.close()
    assert b"".join(out) == b"hello world!?"


def test_memory_is_bounded_by_the_chunk_not_the_state(blobs: FilesystemBlobStore) -> None:
    """A 16 MiB inline state goes through a few MiB of memory (the bytes of the body are the
    caller's): the state is never whole, neither encoded nor decoded."""
    # Many resources (one 16 MiB string would be one token: ijson holds a token whole).
    many = [null_resource(f"r{i}", 100, payload="x" * 1000) for i in range(160)]
    raw = state_file(1, new_lineage(), resources=many)
    assert len(raw) > 16 * 1024 * 1024
    body = body_of({"serial": 1, "md5": hashlib.md5(raw).hexdigest(), "state": ""})
    head, tail = body.split(b'"state": ""')
    encoded = base64.b64encode(raw)
    del raw
    chunks = [
        head + b'"state": "',
        *[encoded[i : i + (1 << 20)] for i in range(0, len(encoded), 1 << 20)],
    ]
    chunks.append(b'"' + tail)
    del encoded

    def stage(kind: Kind) -> Staged:
        return Staged(blobs, kind, max_size=MAX)

    tracemalloc.start()
    try:
        inline = InlineBody(stage, max_skeleton=1 << 20, max_encoded=MAX * 2)
        for chunk in chunks:
            inline.feed(chunk)
        json.loads(inline.close())
        header = inline.staged["state"]
        header.close()
        header.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 16 MiB state"


def test_read_state_and_the_staged_check_agree(blobs: FilesystemBlobStore) -> None:
    raw = state_file(2, new_lineage(), resources=[null_resource("a", 3), null_resource("b")])
    staged = staged_bytes(blobs, "state", raw, max_size=MAX)
    assert staged.header is not None
    assert staged.header.resource_count == read_state(raw).resource_count == 4
    staged.abort()


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        (rb'"x\ud800y"', True),
        (rb'"\uD800"', True),
        (rb'"\ude00"', True),  # a low half alone
        (rb'"\ud83d"', True),  # a high half at the end
        (rb'"\ud83d\ude00"', False),  # a pair: one character
        (rb'"\\ud800"', False),  # an escaped backslash, then text
        (rb'"\\\ud800"', True),
        (rb'"\\\\\ud83d\ude00"', False),
        (rb'"\u003c"', False),
    ],
)
@pytest.mark.parametrize("step", [1, 2, 5, 7, 1000])
def test_a_lone_surrogate_is_found_whatever_the_chunks(text: bytes, lone: bool, step: int) -> None:
    """yajl turns a lone surrogate into '?': the bytes are looked at instead."""
    state = b'{"version": 4, "serial": 1, "lineage": "l", "outputs": {"o": {"value": '
    raw = state + text + b', "type": "string"}}, "resources": []}'
    staged_reader = StateReader()
    try:
        for start in range(0, len(raw), step):
            staged_reader.feed(raw[start : start + step])
        staged_reader.close()
    except Invalid as exc:
        assert lone, exc.detail
        assert "surrogate" in exc.detail
    else:
        assert not lone
