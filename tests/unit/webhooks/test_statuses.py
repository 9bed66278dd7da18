"""The aggregated commit status of a commit's runs (webhooks/statuses.py)."""

from __future__ import annotations

import pytest

from cairn.webhooks.statuses import MAX_DESCRIPTION, RunFact, aggregate, retry_delay, state_of


def fact(status: str, ws: str = "net", run: str = "run-1") -> RunFact:
    return RunFact(ws, run, status, f"https://cairn/app/o/{ws}/runs/{run}")


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("pending", "pending"),
        ("plan_queued", "pending"),
        ("planning", "pending"),
        ("apply_queued", "pending"),
        ("applying", "pending"),
        ("planned", "success"),
        ("planned_and_finished", "success"),
        ("applied", "success"),
        ("errored", "failure"),
        ("canceled", "error"),
        ("discarded", "error"),
    ],
)
def test_state_of_each_run_status(status: str, state: str) -> None:
    assert state_of(status) == state


def test_no_run_is_a_pass() -> None:
    state, description, url = aggregate([])
    assert state == "success" and "nothing to run" in description and url is None


def test_one_run() -> None:
    assert aggregate([fact("applied")]) == (
        "success",
        "net: run applied",
        "https://cairn/app/o/net/runs/run-1",
    )


def test_pending_wins_then_failure_then_error() -> None:
    runs = [fact("applied", "a", "r1"), fact("errored", "b", "r2"), fact("planning", "c", "r3")]
    state, description, url = aggregate(runs)
    assert state == "pending" and url is not None and url.endswith("/r3")
    assert description == "3 runs: 1 applied, 1 errored, 1 planning"
    state, _, url = aggregate([*runs[:2], fact("canceled", "d", "r4")])
    assert state == "failure" and url is not None and url.endswith("/r2")
    assert aggregate([fact("applied"), fact("discarded", run="r9")])[0] == "error"


def test_description_fits_the_forge() -> None:
    runs = [fact(s, f"workspace-with-a-long-name-{i}") for i, s in enumerate(["applied"] * 3)]
    many = [fact(s) for s in ("applied", "errored", "planning", "canceled", "planned", "pending")]
    for batch in (runs[:1], many):
        assert len(aggregate(batch)[1]) <= MAX_DESCRIPTION
    long = aggregate([fact("applied", "w" * 300)])[1]
    assert len(long) == MAX_DESCRIPTION and long.endswith("…")


def test_retry_delay_grows_and_is_capped() -> None:
    delays = [retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:4] == [15, 30, 60, 120] and delays[-1] == 1800
