"""The CLI's streaming download without a server (httpx.MockTransport stands in for answers a
real cairn does not give: a wrong body, a short body), and the output file of `state pull`
that only replaces the old one when the whole state arrived."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import pytest

from cairn.cli.client import ApiFailure, CairnClient, CliError, Connection, Download, Trust
from cairn.cli.state import _check, _sink

BODY = b'{"version": 4}\n' * 200_000  # 3 MB: several chunks


def _client(handler: httpx.MockTransport) -> CairnClient:
    return CairnClient(
        Connection("https://cairn.test", "tok-secret", Trust(True, "t")), transport=handler
    )


def test_download_streams_to_the_sink_with_progress() -> None:
    client = _client(httpx.MockTransport(lambda r: httpx.Response(200, content=BODY)))
    sink = io.BytesIO()
    seen: list[tuple[int, int | None]] = []
    with client:
        got = client.download("/x", sink, doing="pull", on_progress=lambda *a: seen.append(a))
    assert sink.getvalue() == BODY
    assert got == Download(len(BODY), hashlib.md5(BODY).hexdigest())
    assert seen[-1] == (len(BODY), len(BODY)) and len(seen) >= 3
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)


def test_download_errors_say_what_happened() -> None:
    body = {"errors": [{"status": "404", "title": "Not Found", "detail": "no tok-secret here"}]}
    client = _client(httpx.MockTransport(lambda r: httpx.Response(404, json=body)))
    sink = io.BytesIO()
    with client, pytest.raises(ApiFailure) as caught:
        client.download("/x", sink, doing="pull it")
    assert caught.value.status == 404
    assert caught.value.format_message() == "cannot pull it: Not Found (404): no *** here"
    assert sink.getvalue() == b""


def test_a_state_that_does_not_match_its_version_is_refused() -> None:
    got = Download(len(BODY), hashlib.md5(BODY).hexdigest())
    _check(got, {"size": len(BODY), "md5": got.md5.upper()}, "pull")
    with pytest.raises(CliError, match="received 3000000 bytes, the version has 3000001"):
        _check(got, {"size": len(BODY) + 1, "md5": got.md5}, "pull")
    with pytest.raises(CliError, match="MD5"):
        _check(got, {"size": len(BODY), "md5": "0" * 32}, "pull")


def test_the_output_file_is_replaced_only_by_a_whole_state(tmp_path: Path) -> None:
    target = tmp_path / "app.tfstate"
    target.write_bytes(b"previous")
    with pytest.raises(CliError), _sink(str(target)) as sink:
        sink.write(b"half")
        raise CliError("the connection broke")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["app.tfstate"]

    with _sink(str(target)) as sink:
        sink.write(BODY)
    assert target.read_bytes() == BODY
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["app.tfstate"]

    with pytest.raises(CliError, match="cannot write"), _sink(str(tmp_path / "no" / "x")):
        pass
