"""cairn.audit.lane: the group commit behind token mints. A job's answer arrives only once its
audit events are committed (visible from another connection); concurrent jobs share one
commit; jobs run and commit in arrival order; a failed commit fails every job of its batch and
stores none of its events; a failed job stores nothing; close() finishes and commits what is
queued, and the lane still works (alone) after it. (The endpoint itself: tests/integration/
test_identity.py and tests/e2e/test_rbac.py.)"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from cairn.audit.lane import AuditedLane
from cairn.audit.log import Actor, record
from cairn.db.engine import Database, make_engine
from cairn.migrations.migrate import upgrade

ACTOR = Actor("user-AbCdEfGhIjKlMnOp", "pipeline", "192.0.2.7")
REQUEST = contextvars.ContextVar("request", default="")


def audit(**event: Any) -> None:
    """What a job on the lane does to audit: ``record`` stages the event with the lane."""
    record(None, **event)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "lane.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(make_engine(f"sqlite:///{db_path}"))
    upgrade(database.engine)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def lane(db: Database) -> Iterator[AuditedLane]:
    lane = AuditedLane(db)
    try:
        yield lane
    finally:
        lane.close()


@pytest.fixture
def commits(db: Database) -> list[int]:
    """One entry per committed transaction of the engine."""
    seen: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: seen.append(1))
    return seen


def subjects(db_path: Path) -> list[str]:
    """The stored events' subjects in insertion order, read over a connection of its own (not
    the engine's pool): what another process would see."""
    with sqlite3.connect(db_path) as other:
        rows = other.execute("SELECT subject FROM audit_events ORDER BY rowid").fetchall()
    return [row[0] for row in rows]


def mint_job(subject: str, *, seen: list[str] | None = None) -> Callable[[], str]:
    """A job like a mint: stages one event and returns a "token"."""

    def job() -> str:
        if seen is not None:
            seen.append(subject)
        audit(at=datetime.now(UTC), actor=ACTOR, action="oidc.token.mint", subject=subject, jti="j")
        return f"token-for-{subject}"

    return job


def test_an_answer_arrives_only_once_its_event_is_visible_to_another_connection(
    lane: AuditedLane, db_path: Path
) -> None:
    visible_while_running: list[list[str]] = []

    def job() -> str:
        audit(at=datetime.now(UTC), actor=ACTOR, action="oidc.token.mint", subject="one")
        visible_while_running.append(subjects(db_path))  # staged, not yet committed
        return "token"

    async def main() -> list[str]:
        assert await lane.run(job) == "token"
        return subjects(db_path)  # at the very moment the answer arrived

    assert asyncio.run(main()) == ["one"]
    assert visible_while_running == [[]]


def test_each_of_many_concurrent_answers_finds_its_own_event_committed(
    lane: AuditedLane, db_path: Path
) -> None:
    async def one(i: int) -> bool:
        await lane.run(mint_job(f"s{i}"))
        return f"s{i}" in subjects(db_path)

    async def main() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(30)))

    assert all(asyncio.run(main()))
    assert sorted(subjects(db_path)) == sorted(f"s{i}" for i in range(30))


def test_jobs_queued_while_the_lane_is_busy_share_one_commit_in_arrival_order(
    lane: AuditedLane, db_path: Path, commits: list[int]
) -> None:
    release = threading.Event()
    ran: list[str] = []

    def first() -> str:
        release.wait(10)  # keeps the lane busy while the others queue up
        return mint_job("s0", seen=ran)()

    async def main() -> list[str]:
        tasks = [asyncio.create_task(lane.run(first))]
        await asyncio.sleep(0.05)  # the lane has taken the first job
        tasks += [asyncio.create_task(lane.run(mint_job(f"s{i}", seen=ran))) for i in range(1, 20)]
        await asyncio.sleep(0)  # every job submitted (tasks start in creation order)
        release.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(main())
    expected = [f"s{i}" for i in range(20)]
    assert answers == [f"token-for-{s}" for s in expected]
    assert ran == expected
    assert subjects(db_path) == expected
    assert len(commits) == 1


def test_a_failed_commit_fails_every_job_of_its_batch_and_stores_none_of_it(
    lane: AuditedLane, db: Database, db_path: Path
) -> None:
    with sqlite3.connect(db_path) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_events WHEN NEW.subject = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    release = threading.Event()

    def blocker() -> str:
        release.wait(10)
        return mint_job("bad")()

    async def batch() -> list[str | BaseException]:
        tasks = [asyncio.create_task(lane.run(blocker))]
        await asyncio.sleep(0.05)
        tasks += [asyncio.create_task(lane.run(mint_job(f"ok{i}"))) for i in range(5)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(batch())
    assert len(outcomes) == 6
    assert all(isinstance(o, Exception) and "refused by the test" in str(o) for o in outcomes)
    assert subjects(db_path) == []

    async def after() -> str:
        return await lane.run(mint_job("later"))

    assert asyncio.run(after()) == "token-for-later"  # the lane goes on
    assert subjects(db_path) == ["later"]


def test_a_job_that_fails_stores_nothing_and_does_not_fail_the_others(
    lane: AuditedLane, db_path: Path
) -> None:
    class Refused(Exception):
        pass

    def failing() -> str:
        audit(at=datetime.now(UTC), actor=ACTOR, action="oidc.token.mint", subject="failed")
        raise Refused("no")

    async def main() -> tuple[str | BaseException, ...]:
        return await asyncio.gather(
            lane.run(mint_job("a")),
            lane.run(failing),
            lane.run(mint_job("b")),
            return_exceptions=True,
        )

    a, failed, b = asyncio.run(main())
    assert (a, b) == ("token-for-a", "token-for-b")
    assert isinstance(failed, Refused)
    assert subjects(db_path) == ["a", "b"]


def test_a_job_runs_in_the_context_of_the_request_that_submitted_it(lane: AuditedLane) -> None:
    def job() -> str:
        return REQUEST.get()

    async def one(name: str) -> str:
        REQUEST.set(name)
        return await lane.run(job)

    async def main() -> list[str]:
        return await asyncio.gather(*(one(f"r{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"r{i}" for i in range(5)]


def test_close_finishes_and_commits_the_queued_jobs_then_jobs_commit_alone(
    lane: AuditedLane, db_path: Path
) -> None:
    release = threading.Event()

    def first() -> str:
        release.wait(10)
        return mint_job("q0")()

    async def main() -> tuple[list[str], list[str], str, list[str]]:
        tasks = [asyncio.create_task(lane.run(first))]
        await asyncio.sleep(0.05)
        tasks += [asyncio.create_task(lane.run(mint_job(f"q{i}"))) for i in range(1, 6)]
        await asyncio.sleep(0)
        closing = asyncio.create_task(asyncio.to_thread(lane.close))  # while jobs are queued
        await asyncio.sleep(0.05)
        release.set()
        await closing
        stored_at_close = subjects(db_path)
        answers = await asyncio.gather(*tasks)
        late = await lane.run(mint_job("late"))
        return stored_at_close, answers, late, subjects(db_path)

    stored_at_close, answers, late, stored = asyncio.run(main())
    queued = [f"q{i}" for i in range(6)]
    assert stored_at_close == queued
    assert answers == [f"token-for-{s}" for s in queued]
    assert late == "token-for-late"
    assert stored == [*queued, "late"]
