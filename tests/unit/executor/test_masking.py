"""Masking of secrets in the log stream, and the log's offset-resumed upload."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from cairn.executor.job import LogStream, Masker
from cairn.executor.protocol import Job, LeaseLost, LogOffset, Unreachable

SECRETS = ["hunter2", "hunt", "s3cr3t\nmultiline", "aaa"]
TEXT = (
    b"start hunter2 mid hunthunter2 s3cr3t\nmultiline end aaaa huntehunter2\n"
    b"no secret here: hun s3cr3t\nmulti aa\n"
)


def _expected(text: bytes) -> bytes:
    masker = Masker(SECRETS)
    return masker.feed(text) + masker.flush()


def test_masking_whole_text() -> None:
    out = _expected(TEXT)
    assert b"hunter2" not in out and b"s3cr3t\nmultiline" not in out
    assert out.startswith(b"start *** mid ****** ***")
    assert b"no secret here: hun s3cr3t\nmulti aa\n" in out  # near misses stay


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_masking_is_the_same_at_every_chunk_boundary(size: int) -> None:
    expected = _expected(TEXT)
    masker = Masker(SECRETS)
    out = b"".join(masker.feed(TEXT[i : i + size]) for i in range(0, len(TEXT), size))
    assert out + masker.flush() == expected


def test_masking_every_two_way_split() -> None:
    expected = _expected(TEXT)
    for cut in range(len(TEXT) + 1):
        masker = Masker(SECRETS)
        out = masker.feed(TEXT[:cut])
        assert b"hunter2" not in out
        assert out + masker.feed(TEXT[cut:]) + masker.flush() == expected, cut


def test_nothing_is_held_back_without_a_possible_secret() -> None:
    masker = Masker(["secret"])
    assert masker.feed(b"plain line\n") == b"plain line\n"
    assert masker.feed(b"ends with sec") == b"ends with "
    assert masker.feed(b"ond\n") == b"second\n"
    assert Masker([]).feed(b"x") == b"x"
    assert Masker([""]).feed(b"x") == b"x"  # an empty value masks nothing


def test_added_secrets_apply_from_then_on() -> None:
    masker = Masker(["token"])
    assert masker.feed(b"token pass\n") == b"*** pass\n"
    masker.add(["pass"])
    assert masker.feed(b"token pass\n") == b"*** ***\n"


# -- LogStream --------------------------------------------------------------------------------


def _job() -> Job:
    urls = {
        k: f"http://x/{k}"
        for k in ("configuration", "variables", "logs", "heartbeat", "start", "finish", "plan")
    }
    return Job.from_json(
        {
            "job_id": "job-1",
            "attempt": 2,
            "run_id": "run-1",
            "workspace_name": "w",
            "organization_name": "o",
            "phase": "plan",
            "job_token": "cairn_job_tok",
            "hostname": "h",
            "urls": urls,
        }
    )


class FakeLogClient:
    """Stores chunks like the server: 409 with its length when an offset differs."""

    def __init__(self, failures: list[Any] | None = None) -> None:
        self.stored = bytearray()
        self.calls: list[tuple[int, int]] = []
        self.failures = list(failures or [])

    def put_logs(self, job: Job, offset: int, data: bytes) -> None:
        self.calls.append((offset, len(data)))
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "lose":  # the server lost its tail: it holds fewer bytes
                del self.stored[len(self.stored) // 2 :]
            elif failure is not None:
                raise failure
        if offset != len(self.stored):
            raise LogOffset("mismatch", offset=len(self.stored))
        self.stored += data


def _stream(client: FakeLogClient, tmp_path: Path, secrets: list[str]) -> LogStream:
    return LogStream(client, _job(), Masker(secrets), interval=60, spool_dir=tmp_path)  # type: ignore[arg-type]


def test_log_stream_masks_and_resumes_from_the_server_offset(tmp_path: Path) -> None:
    client = FakeLogClient()
    stream = _stream(client, tmp_path, ["cairn_job_tok", "pw"])
    stream.write(b"line one with cairn_job_")
    stream.write(b"tok and p")
    stream.send()
    stream.write(b"w\nline two\n")
    stream.send()
    assert stream.offset == len(client.stored)
    client.failures = ["lose"]  # the server lost half; the next PUT is told where to resume
    stream.write(b"line three\n")
    stream.send()
    stream.close()
    assert bytes(client.stored) == b"line one with *** and ***\nline two\nline three\n"
    assert any(offset < prev for (offset, _), (prev, _) in itertools.pairwise(client.calls))


def test_log_stream_retries_later_when_unreachable(tmp_path: Path) -> None:
    client = FakeLogClient([Unreachable("down")])
    stream = _stream(client, tmp_path, [])
    stream.write(b"a\n")
    stream.send()  # fails, keeps the bytes
    assert stream.offset == 0 and client.stored == bytearray()
    stream.close()  # sends again
    assert bytes(client.stored) == b"a\n"


def test_log_stream_stops_on_lease_lost(tmp_path: Path) -> None:
    client = FakeLogClient([LeaseLost("gone")])
    stream = _stream(client, tmp_path, [])
    stream.write(b"a\n")
    stream.close()
    assert stream.lease_lost
    assert client.calls == [(0, 2)]


def test_log_stream_sends_big_output_in_chunks_of_at_most_1_mib(tmp_path: Path) -> None:
    client = FakeLogClient()
    stream = _stream(client, tmp_path, [])
    data = bytes(range(256)) * (5 * 4096 + 3)  # a bit over 5 MiB
    stream.write(data)
    stream.close()
    assert bytes(client.stored) == data
    assert max(size for _, size in client.calls) <= 1024 * 1024
