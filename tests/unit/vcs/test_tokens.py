"""The single-flight token service against the GitLab token endpoint of the VCS rig (node
oidc-provider with GitLab's refresh semantics): one POST per window, the loser of a race
recovers the winner's pair, a dead grant is marked once and never retried, nothing leaks."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.vcs.oauth import ForgeUnreachable, TokenPair
from cairn.vcs.tokens import BREAKER, NeedsReauth, VcsTokens
from tests.support.app import InProcessCairn
from tests.support.vcs.gitlab_op import GitLabOp
from tests.unit.vcs import support
from tests.unit.vcs.support import gitlab_oauth_token, row, vcs_tokens


def _posts(op: GitLabOp, client: Any) -> int:
    return int(op.stats(client)["token_posts"])


def _in_threads(n: int, call: Any) -> list[Any]:
    """``call()`` in ``n`` threads released together; results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = call()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_fifty_threads_on_an_expired_token_make_one_post(app: InProcessCairn, op: GitLabOp) -> None:
    tid, _cid, grant, client = gitlab_oauth_token(app, op)
    tokens = vcs_tokens(app)
    results = _in_threads(50, lambda: tokens.credential(tid).token)
    assert all(isinstance(r, str) for r in results), [r for r in results if not isinstance(r, str)]
    assert len(set(results)) == 1
    assert results[0] != grant["access_token"]
    assert _posts(op, client) == 1
    assert op.check(results[0])["active"] is True
    stored = row(app, tid)
    assert (stored.generation, stored.status, stored.lease_until) == (1, "ok", None)
    assert tokens.metrics.refreshes.labels("ok")._value.get() == 1


def test_refresh_ahead_at_four_minutes_left_not_at_six(app: InProcessCairn, op: GitLabOp) -> None:
    tid, _cid, grant, client = gitlab_oauth_token(app, op, expires_in=timedelta(minutes=6))
    tokens = vcs_tokens(app)
    assert tokens.credential(tid).token == grant["access_token"]
    assert _posts(op, client) == 0
    app.advance(timedelta(minutes=2))  # 4 minutes left
    fresh = tokens.credential(tid).token
    assert fresh != grant["access_token"]
    assert _posts(op, client) == 1
    # GitLab's 2 hours from the refresh, on cairn's clock.
    assert row(app, tid).expires_at == app.clock.now() + timedelta(seconds=7200)


def test_background_refresh_takes_tokens_within_ten_minutes(
    app: InProcessCairn, op: GitLabOp
) -> None:
    soon, _, _, client_soon = gitlab_oauth_token(app, op, expires_in=timedelta(minutes=8))
    later, _, _, client_later = gitlab_oauth_token(app, op, expires_in=timedelta(minutes=20))
    tokens = vcs_tokens(app)
    assert tokens.refresh_due() == 1
    assert (_posts(op, client_soon), _posts(op, client_later)) == (1, 0)
    assert row(app, soon).generation == 1 and row(app, later).generation == 0
    assert tokens.refresh_due() == 0


def test_loser_of_a_race_uses_the_winners_pair(app: InProcessCairn, op: GitLabOp) -> None:
    """Replica A's refresh is slow, its lease lapses, replica B refreshes the same refresh
    token: the forge lets one win and answers the other invalid_grant; the loser re-reads
    and uses the winner's pair (no needs_reauth, no audit event)."""
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    a, b = vcs_tokens(app), vcs_tokens(app)
    op.set_delay(1000)
    try:
        results: dict[str, Any] = {}
        ta = threading.Thread(target=lambda: results.setdefault("a", a.credential(tid).token))
        ta.start()
        deadline = time.monotonic() + 10
        while row(app, tid).lease_holder is None:  # A holds the lease, its POST in flight
            assert time.monotonic() < deadline
            time.sleep(0.01)
        app.advance(timedelta(seconds=31))  # A's lease lapses
        results["b"] = b.credential(tid).token
        ta.join(timeout=30)
    finally:
        op.set_delay(0)
    assert results["a"] == results["b"]
    assert op.check(results["b"])["active"] is True
    assert _posts(op, client) == 2
    assert op.stats(client)["invalid_grant"] == 1
    # Usually B loses at the forge; if B's POST overtakes A's, A loses and waits for B.
    recovered = a.metrics.races_recovered._value.get() + b.metrics.races_recovered._value.get()
    assert recovered == 1
    stored = row(app, tid)
    assert (stored.generation, stored.status) == (1, "ok")
    assert _audit(app, tid) == []


def _audit(app: InProcessCairn, token_id: str) -> list[AuditEvent]:
    with app.ctx.db.unit_of_work() as s:
        return list(
            s.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "vcs.token.needs_reauth", AuditEvent.subject == token_id
                )
            )
        )


def test_a_replayed_grant_in_strict_mode_needs_reauth_after_one_attempt(
    app: InProcessCairn, op_strict: GitLabOp
) -> None:
    """Another tool spent the refresh token (VCS-09's shared grant); oidc-provider's reuse
    detection revokes the grant on cairn's replay: needs_reauth once, no more POSTs."""
    tid, cid, grant, client = gitlab_oauth_token(app, op_strict)
    assert op_strict.refresh(grant["refresh_token"], client).status_code == 200
    op_strict.reset_stats()
    tokens = vcs_tokens(app)
    with pytest.raises(NeedsReauth) as first:
        tokens.credential(tid)
    assert cid in first.value.detail and "re-authorise" in first.value.detail
    assert _posts(op_strict, client) == 1
    for _ in range(3):
        with pytest.raises(NeedsReauth):
            tokens.credential(tid)
    assert tokens.refresh_due() == 0
    assert _posts(op_strict, client) == 1
    stored = row(app, tid)
    assert (stored.status, stored.generation) == ("needs_reauth", 0)
    assert stored.status_reason and "re-authorise" in stored.status_reason
    assert len(_audit(app, tid)) == 1
    assert tokens.metrics.needs_reauth._value.get() == 1

    # A new authorisation brings it back (generation + 1).
    tokens.store_new_grant(tid, _pair(op_strict.grant(client), app))
    assert op_strict.check(tokens.credential(tid).token)["active"] is True
    assert (row(app, tid).status, row(app, tid).generation) == ("ok", 1)


def _pair(grant: dict[str, Any], app: InProcessCairn) -> TokenPair:
    return TokenPair(
        grant["access_token"],
        grant["refresh_token"],
        app.clock.now() + timedelta(seconds=int(grant["expires_in"])),
    )


def test_a_revoked_grant_needs_reauth(app: InProcessCairn, op: GitLabOp) -> None:
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    op.revoke_all(client)
    tokens = vcs_tokens(app)
    for _ in range(2):
        with pytest.raises(NeedsReauth):
            tokens.credential(tid)
    assert _posts(op, client) == 1
    assert len(_audit(app, tid)) == 1


def test_an_answer_lost_after_the_forge_rotated_ends_in_needs_reauth(
    app: InProcessCairn, op: GitLabOp
) -> None:
    """VCS-07: the forge rotates the pair and the answer is lost (500). One POST, no retry;
    callers within the breaker fail at once; the next attempt presents the spent refresh
    token and the row turns needs_reauth — consistent, never a mixed pair."""
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    tokens = vcs_tokens(app)
    op.fail_next(1, "lost")
    with pytest.raises(ForgeUnreachable):
        tokens.credential(tid)
    assert _posts(op, client) == 1
    with pytest.raises(ForgeUnreachable):
        tokens.credential(tid)
    assert _posts(op, client) == 1
    app.advance(BREAKER + timedelta(seconds=1))
    with pytest.raises(NeedsReauth):
        tokens.credential(tid)
    assert _posts(op, client) == 2
    assert (row(app, tid).status, row(app, tid).generation) == ("needs_reauth", 0)


def test_an_unreachable_forge_then_a_working_one(app: InProcessCairn, op: GitLabOp) -> None:
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    tokens = vcs_tokens(app)
    op.fail_next(1, "500")  # answered 500 without processing: the pair still works
    with pytest.raises(ForgeUnreachable):
        tokens.credential(tid)
    app.advance(BREAKER + timedelta(seconds=1))
    assert op.check(tokens.credential(tid).token)["active"] is True
    assert _posts(op, client) == 2


def test_an_unreachable_forge_leaves_a_still_valid_token_in_use(
    app: InProcessCairn, op: GitLabOp
) -> None:
    tid, _cid, grant, client = gitlab_oauth_token(app, op, expires_in=timedelta(minutes=3))
    tokens = vcs_tokens(app)
    op.fail_next(1, "500")
    assert tokens.credential(tid).token == grant["access_token"]  # refresh failed: 3 min left
    assert tokens.credential(tid).token == grant["access_token"]  # breaker: no second POST
    assert _posts(op, client) == 1
    app.advance(BREAKER + timedelta(seconds=1))
    assert tokens.credential(tid).token != grant["access_token"]
    assert _posts(op, client) == 2


def test_personal_access_tokens_are_never_refreshed(app: InProcessCairn) -> None:
    org = support.new_org(app)
    cid = support.connection(
        app, org, kind="gitlab_token", http_url="http://127.0.0.1:9", api_url="http://127.0.0.1:9"
    )
    valid = support.token(
        app,
        cid,
        org,
        access="glpat-valid",
        refresh=None,
        expires_at=app.clock.now() + timedelta(minutes=1),
    )
    expired = support.token(
        app,
        cid,
        org,
        access="glpat-old",
        refresh=None,
        expires_at=app.clock.now() - timedelta(days=1),
    )
    forever = support.token(app, cid, org, access="glpat-forever", refresh=None, expires_at=None)
    tokens = vcs_tokens(app)
    assert tokens.credential(valid).token == "glpat-valid"
    assert tokens.credential(forever).token == "glpat-forever"
    with pytest.raises(NeedsReauth) as err:
        tokens.credential(expired)
    assert "expired" in err.value.detail and "oauth-token-string" in err.value.detail
    assert row(app, expired).status == "needs_reauth"
    assert tokens.refresh_due() == 0


def test_no_token_in_logs_reprs_or_errors(
    app: InProcessCairn, op: GitLabOp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tid, _cid, grant, client = gitlab_oauth_token(app, op)
    tokens = vcs_tokens(app)
    credential = tokens.credential(tid)
    secrets = [
        grant["access_token"],
        grant["refresh_token"],
        credential.token,
        client.client_secret,
    ]
    stored = row(app, tid)
    texts = [caplog.text, repr(credential), repr(tokens), repr(stored)]
    op.revoke_all(client)
    app.advance(timedelta(hours=3))
    with pytest.raises(NeedsReauth) as err:
        tokens.credential(tid)
    texts += [caplog.text, str(err.value), repr(err.value), str(err.value.to_jsonapi())]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_waiters_wait_for_the_lease_holder(app: InProcessCairn, op: GitLabOp) -> None:
    """A caller that finds the lease held waits for the holder's pair instead of POSTing."""
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    holder, waiter = vcs_tokens(app), vcs_tokens(app)
    op.set_delay(500)
    try:
        results: dict[str, str] = {}
        t = threading.Thread(target=lambda: results.setdefault("h", holder.credential(tid).token))
        t.start()
        deadline = time.monotonic() + 10
        while row(app, tid).lease_holder is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        results["w"] = waiter.credential(tid).token
        t.join(timeout=30)
    finally:
        op.set_delay(0)
    assert results["h"] == results["w"]
    assert _posts(op, client) == 1


def test_unknown_token(app: InProcessCairn) -> None:
    from cairn.errors import NotFound

    with pytest.raises(NotFound):
        vcs_tokens(app).credential("ot-doesnotexist")


def test_lease_lapses_for_the_waiters_too(app: InProcessCairn, op: GitLabOp) -> None:
    """A holder that vanished (its lease left in the row) delays others only until it lapses."""
    tid, _cid, _grant, client = gitlab_oauth_token(app, op)
    tokens: VcsTokens = vcs_tokens(app, wait=0.3)
    from sqlalchemy import update

    from cairn.vcs.model import OAuthToken

    with app.ctx.db.unit_of_work(write=True) as s:
        s.execute(
            update(OAuthToken)
            .where(OAuthToken.id == tid)
            .values(lease_until=app.clock.now() + timedelta(seconds=30), lease_holder="gone")
        )
        s.commit()
    with pytest.raises(ForgeUnreachable):
        tokens.credential(tid)  # waited 0.3 s for the lease: still held
    assert _posts(op, client) == 0
    app.advance(timedelta(seconds=31))
    assert op.check(tokens.credential(tid).token)["active"] is True
    assert _posts(op, client) == 1


def test_counters_are_served_on_metrics(app: InProcessCairn, op: GitLabOp) -> None:
    import asyncio

    tid, _cid, _grant, _client = gitlab_oauth_token(app, op)
    app.ctx.vcs_tokens.credential(tid)

    async def scrape() -> str:
        async with app.client() as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    assert 'cairn_vcs_token_refreshes_total{outcome="ok"} 1.0' in text
    assert "cairn_vcs_token_races_recovered_total 0.0" in text
    assert "cairn_vcs_token_needs_reauth_total 0.0" in text


def test_only_the_token_service_calls_the_token_endpoint() -> None:
    """VCS-01: the token endpoint's URLs live in ``vcs.oauth``; its refresh is called from
    ``vcs.tokens`` only, its code exchange from ``vcs.connect`` only."""
    import ast
    from pathlib import Path

    import cairn

    root = Path(cairn.__file__).parent
    allowed = {"refresh": {"vcs/tokens.py"}, "exchange_code": {"vcs/connect.py"}}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        source = path.read_text()
        if rel.startswith(("vcs/", "webhooks/")) and rel != "vcs/oauth.py":
            assert "/oauth/token" not in source and "login/oauth/access_token" not in source, rel
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "cairn.vcs.oauth":
                for alias in node.names:
                    assert rel in allowed.get(alias.name, {rel}), (rel, alias.name)
            if (
                isinstance(node, ast.Attribute)
                and node.attr in allowed
                and isinstance(node.value, ast.Name)
                and node.value.id == "oauth"
            ):
                assert rel in allowed[node.attr], (rel, node.attr)
