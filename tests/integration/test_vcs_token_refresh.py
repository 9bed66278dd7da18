"""Token refresh across processes on PostgreSQL (VCS-02, VCS-03): two cairn processes with 25
callers each on one expired GitLab token make exactly one token POST and share its pair; a
process killed after the forge answered but before its commit leaves the old row, and the
next caller ends in needs_reauth (the spent refresh token is refused), never a mixed pair."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.clock import SystemClock
from cairn.vcs.model import access_aad
from cairn.vcs.tokens import NeedsReauth, VcsTokens
from tests.support.app import SECRET_KEY, InProcessCairn, build
from tests.support.postgres import PostgresCluster
from tests.support.vcs.gitlab_op import GitLabOp
from tests.unit.vcs.support import REDIRECT_URI, gitlab_oauth_token, row

pytestmark = [pytest.mark.postgres]

CALLERS = 25


@pytest.fixture
def op(gitlab_op: GitLabOp) -> GitLabOp:
    return gitlab_op


@pytest.fixture
def pg_app(
    pg: PostgresCluster, tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessCairn]:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    app = build(
        tmp_path / "data",
        admin_token,
        secret_key=SECRET_KEY,
        database_url=pg.create_database("vcstokens"),
    )
    try:
        yield app
    finally:
        app.close()


def _replica(
    database_url: str,
    token_id: str,
    callers: int,
    lease_s: float,
    pause_s: float,
    ready: Any,
    start: Any,
    out: Any,
) -> None:
    """One cairn process: ``callers`` threads ask for the token at once; send back what
    each got (the token, or the error's class name)."""
    import threading
    from datetime import timedelta

    from cairn.crypto import Keyring
    from cairn.db.engine import Database, make_engine
    from cairn.db.notify import Listener

    if pause_s:
        os.environ["CAIRN_TEST_VCS_PAUSE_BEFORE_COMMIT"] = str(pause_s)
    db = Database(make_engine(database_url, pool_size=callers + 2))
    tokens = VcsTokens(
        db,
        Keyring(SECRET_KEY),
        SystemClock(),
        lambda _cid: REDIRECT_URI,
        lease=timedelta(seconds=lease_s),
    )
    listener = Listener(database_url)
    tokens.follow(listener)
    listener.start()
    listener.connected.wait(10)
    got: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            value = tokens.credential(token_id).token
        except Exception as exc:
            value = f"error:{type(exc).__name__}"
        with lock:
            got.append(value)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    ready.put(os.getpid())
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listener.stop()
    db.dispose()
    out.put(got)


def test_two_replicas_fifty_callers_one_post(pg_app: InProcessCairn, op: GitLabOp) -> None:
    tid, _cid, grant, client = gitlab_oauth_token(pg_app, op)
    url = pg_app.settings.database_url
    spawn = multiprocessing.get_context("spawn")
    ready, start, out = spawn.Queue(), spawn.Event(), spawn.Queue()
    procs = [
        spawn.Process(target=_replica, args=(url, tid, CALLERS, 30.0, 0.0, ready, start, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    every = results[0] + results[1]
    assert len(every) == 2 * CALLERS
    assert len(set(every)) == 1, sorted(set(every))[:3]
    assert every[0] != grant["access_token"] and not every[0].startswith("error:")
    assert op.stats(client)["token_posts"] == 1
    assert op.check(every[0])["active"] is True
    stored = row(pg_app, tid)
    assert (stored.status, stored.generation, stored.lease_holder) == ("ok", 1, None)


def test_a_process_killed_before_its_commit_leaves_a_consistent_row(
    pg_app: InProcessCairn, op: GitLabOp
) -> None:
    tid, _cid, grant, client = gitlab_oauth_token(pg_app, op)
    url = pg_app.settings.database_url
    spawn = multiprocessing.get_context("spawn")
    ready, start, out = spawn.Queue(), spawn.Event(), spawn.Queue()
    # One caller, a 2 s lease, and a pause of a minute between the forge's answer and the commit.
    proc = spawn.Process(target=_replica, args=(url, tid, 1, 2.0, 60.0, ready, start, out))
    proc.start()
    pid = ready.get(timeout=60)
    start.set()
    deadline = time.monotonic() + 30
    while op.stats(client).get("ok", 0) < 1:  # the forge rotated the pair and answered
        assert time.monotonic() < deadline, op.stats(client)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    proc.join(timeout=10)
    assert proc.exitcode == -signal.SIGKILL

    stored = row(pg_app, tid)
    assert (stored.status, stored.generation) == ("ok", 0)
    old = pg_app.ctx.keyring.open(stored.access_token_sealed, aad=access_aad(tid, 0))
    assert old.decode() == grant["access_token"]

    tokens = VcsTokens(pg_app.ctx.db, pg_app.ctx.keyring, SystemClock(), lambda _cid: REDIRECT_URI)
    with pytest.raises(NeedsReauth):
        tokens.credential(tid)  # waits out the dead process's lease, then one POST
    assert op.stats(client)["token_posts"] == 2
    assert op.stats(client)["invalid_grant"] == 1
    stored = row(pg_app, tid)
    assert (stored.status, stored.generation) == ("needs_reauth", 0)
    with pytest.raises(NeedsReauth):
        tokens.credential(tid)
    assert op.stats(client)["token_posts"] == 2
