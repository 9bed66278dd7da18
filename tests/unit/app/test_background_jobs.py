"""The registry of background jobs (`cairn.app.BackgroundJobs`): each job runs at start and
then every interval, `due` skips a turn, a failure is logged and retried after `retry_after`,
and `stop` cancels every job."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from cairn.app import BackgroundJob, BackgroundJobs


def test_jobs_run_skip_retry_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    failures = iter([True, False])
    threads: set[str] = set()

    def steady() -> None:
        threads.add(threading.current_thread().name)
        runs.append("steady")

    def flaky() -> None:
        if next(failures, False):
            raise RuntimeError("the first run fails")
        runs.append("flaky")

    async def scenario() -> None:
        jobs = BackgroundJobs()
        jobs.add(BackgroundJob("steady job", 0.05, steady))
        jobs.add(BackgroundJob("never due", 0.01, lambda: runs.append("never"), due=lambda: False))
        jobs.add(BackgroundJob("flaky job", 60.0, flaky, retry_after=0.05))
        jobs.start()
        await asyncio.sleep(0.3)
        await jobs.stop()
        stopped = len(runs)
        await asyncio.sleep(0.1)
        assert len(runs) == stopped, "a job ran after stop()"

    with caplog.at_level(logging.ERROR, logger="cairn"):
        asyncio.run(scenario())

    assert runs.count("steady") >= 3  # at start, then every 50 ms
    assert "never" not in runs
    assert runs.count("flaky") == 1  # retried after 50 ms, not after the 60 s interval
    assert threading.main_thread().name not in threads  # blocking work left the event loop
    failed = [r for r in caplog.records if "flaky job failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
