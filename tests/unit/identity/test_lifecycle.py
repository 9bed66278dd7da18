"""The rotation policy: plans for initial, graceful, emergency, trim and scheduled rotation,
checked on the real issuer over an in-memory key store with independent verifiers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cairn.clock import FrozenClock
from cairn.identity import lifecycle
from cairn.identity.errors import (
    IdentityConfigError,
    KeySetCorrupt,
    RotationConflict,
    RotationRefused,
)
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.plan import check_key_set
from tests.unit.identity.memory import ISSUER, MemoryIssuer
from tests.unit.identity.verifiers import verify_both

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RotationPolicy(alg="ES256")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def issuer(clock: FrozenClock) -> MemoryIssuer:
    issuer = MemoryIssuer(POLICY, clock)
    issuer.apply(lifecycle.initial(clock.now(), POLICY))
    return issuer


def jwks_kids(issuer: MemoryIssuer) -> list[str]:
    return [k["kid"] for k in json.loads(issuer.jwks().body)["keys"]]


def assert_serving(issuer: MemoryIssuer) -> None:
    """The invariants a verifier depends on, checked as a verifier would."""
    active = lifecycle.signing_key(issuer.keys)
    assert active.kid in jwks_kids(issuer)
    token, claims = issuer.mint()
    assert (
        verify_both(
            token, issuer.web(), issuer=ISSUER, audience="sts.amazonaws.com", now=issuer.now
        )
        == claims
    )


# --- policy -----------------------------------------------------------------------------------


def test_defaults() -> None:
    policy = RotationPolicy()
    assert (policy.period, policy.prepublish, policy.alg) == (90 * DAY, DAY, "RS256")
    assert policy.retire_after == timedelta(hours=6, minutes=10)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prepublish": timedelta(seconds=599)}, "CAIRN_OIDC_PREPUBLISH"),
        ({"period": timedelta(hours=23)}, "CAIRN_OIDC_ROTATION_PERIOD"),
        ({"max_token_ttl": timedelta(hours=48)}, "48 h"),
        ({"max_token_ttl": timedelta(0)}, "48 h"),
        ({"max_published": 2}, "at least 3"),
        ({"alg": "EdDSA"}, "RS256 or ES256"),
        ({"jwks_max_age": timedelta(0)}, "max-age"),
    ],
)
def test_impossible_policies_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(IdentityConfigError, match=message):
        RotationPolicy(**changes)  # type: ignore[arg-type]


def test_prepublish_may_equal_twice_the_max_age() -> None:
    assert RotationPolicy(prepublish=timedelta(minutes=10), period=timedelta(minutes=10))


# --- initial ----------------------------------------------------------------------------------


def test_initial_key_set(issuer: MemoryIssuer) -> None:
    (active,) = issuer.by_state("active")
    (nxt,) = issuer.by_state("next")
    assert (active.version, nxt.version) == (1, 2)
    assert active.activated_at == active.published_at == T0
    assert jwks_kids(issuer) == [active.kid, nxt.kid]
    assert_serving(issuer)


def test_tick_on_an_empty_set_creates_the_initial_set(clock: FrozenClock) -> None:
    assert lifecycle.tick([], clock.now(), POLICY) == lifecycle.initial(clock.now(), POLICY)


# --- graceful ---------------------------------------------------------------------------------


def test_graceful_waits_for_the_prepublication_window(
    issuer: MemoryIssuer, clock: FrozenClock
) -> None:
    clock.advance(timedelta(hours=3, minutes=12))
    with pytest.raises(RotationRefused) as refused:
        lifecycle.graceful(issuer.keys, clock.now(), POLICY)
    detail = refused.value.detail
    assert "3 h 12 min" in detail and "24 h" in detail
    assert "2026-01-02 00:00:00 UTC" in detail
    assert "force" in detail and "emergency" in detail
    assert refused.value.retry_at == T0 + DAY
    assert refused.value.status == 409 and refused.value.code == "rotation-refused"

    clock.advance(DAY)
    plan = lifecycle.graceful(issuer.keys, clock.now(), POLICY)
    assert plan.action == "graceful" and not plan.forced


def test_graceful_rotation(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    clock.advance(DAY)
    old = issuer.by_state("active")[0]
    nxt = issuer.by_state("next")[0]
    plan = lifecycle.graceful(issuer.keys, clock.now(), POLICY)
    assert [(t.version, t.from_state, t.to_state) for t in plan.transitions] == [
        (1, "active", "retired"),  # demote first: a unique index allows one active key
        (2, "next", "active"),
    ]
    assert [(n.version, n.state) for n in plan.creates] == [(3, "next")]
    issuer.apply(plan)
    retired = issuer.by_state("retired")[0]
    assert retired.kid == old.kid
    assert retired.retire_until == clock.now() + timedelta(hours=6, minutes=10)
    assert issuer.by_state("active")[0].kid == nxt.kid
    assert jwks_kids(issuer) == [nxt.kid, issuer.by_state("next")[0].kid, old.kid]
    assert old.id not in issuer.sealed  # a retired key's private key is erased
    assert_serving(issuer)


def test_forced_graceful_is_reported_as_forced(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    clock.advance(timedelta(minutes=1))
    plan = lifecycle.graceful(issuer.keys, clock.now(), POLICY, force=True)
    assert plan.forced
    issuer.apply(plan)
    assert_serving(issuer)


def test_token_minted_just_before_promotion_verifies_until_its_exp(
    issuer: MemoryIssuer, clock: FrozenClock
) -> None:
    clock.advance(DAY - timedelta(seconds=1))
    token, claims = issuer.mint(ttl=timedelta(hours=72))  # capped at 6 h
    clock.advance(timedelta(seconds=1))
    issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), POLICY))
    clock.advance(timedelta(hours=6) - timedelta(seconds=2))
    last_valid_second = datetime.fromtimestamp(int(claims["exp"]) - 1, UTC)  # type: ignore[arg-type]
    assert clock.now() <= last_valid_second
    clock.advance(last_valid_second - clock.now())
    issuer.apply(lifecycle.trim(issuer.keys, clock.now()))  # trimming now removes nothing
    verify_both(token, issuer.web(), issuer=ISSUER, audience="sts.amazonaws.com", now=clock.now())


def test_the_jwks_stays_bounded_even_when_forced(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    policy = replace(POLICY, max_published=4)
    issuer.policy = policy
    issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), policy, force=True))
    issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), policy, force=True))
    assert len(jwks_kids(issuer)) == 4
    with pytest.raises(RotationRefused, match="limited to 4") as refused:
        lifecycle.graceful(issuer.keys, clock.now(), policy, force=True)
    first_retired = min(issuer.by_state("retired"), key=lambda k: k.version)
    assert refused.value.retry_at == first_retired.retire_until
    # An emergency is never refused: it withdraws keys rather than adding one.
    issuer.apply(lifecycle.emergency(issuer.keys, clock.now(), policy))
    assert len(jwks_kids(issuer)) == 4
    assert_serving(issuer)


# --- emergency --------------------------------------------------------------------------------


def test_emergency_revokes_and_signs_with_a_new_key_at_once(
    issuer: MemoryIssuer, clock: FrozenClock
) -> None:
    clock.advance(DAY)
    issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), POLICY))
    retired = issuer.by_state("retired")[0]
    compromised_token, _ = issuer.mint()
    before = {k.kid for k in issuer.keys if k.state in ("active", "next")}
    plan = lifecycle.emergency(issuer.keys, clock.now(), POLICY)
    assert [(t.version, t.to_state) for t in plan.transitions] == [(2, "revoked"), (3, "revoked")]
    assert [(n.version, n.state) for n in plan.creates] == [(4, "active"), (5, "next")]
    issuer.apply(plan)
    kids = jwks_kids(issuer)
    assert not before & set(kids)
    assert retired.kid in kids  # retired keys are left alone
    assert issuer.by_state("active")[0].activated_at == clock.now()
    with pytest.raises(KeyError):
        verify_both(
            compromised_token,
            issuer.web(),
            issuer=ISSUER,
            audience="sts.amazonaws.com",
            now=clock.now(),
        )
    assert_serving(issuer)


def test_emergency_on_an_empty_set_creates_one(clock: FrozenClock) -> None:
    plan = lifecycle.emergency([], clock.now(), POLICY)
    assert [(n.version, n.state) for n in plan.creates] == [(1, "active"), (2, "next")]


# --- trim -------------------------------------------------------------------------------------


def test_trim_removes_only_expired_retired_keys_and_is_idempotent(
    issuer: MemoryIssuer, clock: FrozenClock
) -> None:
    for _ in range(3):
        clock.advance(DAY)
        issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), POLICY))
    issuer.apply(lifecycle.emergency(issuer.keys, clock.now(), POLICY))
    # Versions 1 and 2 retired a day or more ago; version 3 retired just now.
    jwks_before = issuer.jwks().body
    plan = lifecycle.trim(issuer.keys, clock.now())
    assert [r.version for r in plan.removals] == [1, 2]
    issuer.apply(plan)
    assert issuer.jwks().body == jwks_before  # trimmed keys were no longer published
    assert lifecycle.trim(issuer.keys, clock.now()).empty
    issuer.apply(plan)  # the same trim applied again (by another replica) changes nothing
    assert issuer.jwks().body == jwks_before

    clock.advance(POLICY.retire_after - timedelta(seconds=1))
    assert lifecycle.trim(issuer.keys, clock.now()).empty  # version 3 is still published
    clock.advance(timedelta(seconds=1))
    plan = lifecycle.trim(issuer.keys, clock.now())
    assert [r.version for r in plan.removals] == [3]
    issuer.apply(plan)
    assert {k.state for k in issuer.keys} == {"active", "next", "revoked"}  # revoked: kept
    assert_serving(issuer)


# --- scheduled --------------------------------------------------------------------------------


def test_tick_rotates_after_the_period(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    clock.advance(89 * DAY)
    plan = lifecycle.tick(issuer.keys, clock.now(), POLICY)
    assert plan.empty and "2026-04-01 00:00:00 UTC" in plan.note
    assert lifecycle.due_at(issuer.keys, POLICY) == T0 + 90 * DAY
    clock.advance(DAY)
    plan = lifecycle.tick(issuer.keys, clock.now(), POLICY)
    assert plan.action == "scheduled" and not plan.forced
    issuer.apply(plan)
    assert issuer.by_state("active")[0].version == 2
    assert lifecycle.tick(issuer.keys, clock.now(), POLICY).empty
    assert_serving(issuer)


def test_tick_creates_a_missing_next_key(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    damaged = [k for k in issuer.keys if k.state != "next"]
    assert lifecycle.due_at(damaged, POLICY) is None
    with pytest.raises(RotationRefused, match="no next key"):
        lifecycle.graceful(damaged, clock.now(), POLICY)
    forced = lifecycle.graceful(damaged, clock.now(), POLICY, force=True)
    assert forced.forced
    assert [(n.version, n.state) for n in forced.creates] == [(2, "active"), (3, "next")]
    plan = lifecycle.tick(damaged, clock.now(), POLICY)
    assert [(n.version, n.state) for n in plan.creates] == [(2, "next")]


def test_a_key_is_published_for_the_window_before_it_signs(clock: FrozenClock) -> None:
    policy = replace(POLICY, period=3 * DAY, prepublish=2 * DAY)
    issuer = MemoryIssuer(policy, clock)
    issuer.apply(lifecycle.tick([], clock.now(), policy))
    first_seen: dict[str, datetime] = {}
    first_signed: dict[str, datetime] = {}
    for _ in range(24 * 40):  # 40 days, hourly ticks
        issuer.apply(lifecycle.tick(issuer.keys, clock.now(), policy))
        for kid in jwks_kids(issuer):
            first_seen.setdefault(kid, clock.now())
        first_signed.setdefault(issuer.signer().kid, clock.now())
        clock.advance(timedelta(hours=1))
    rotations = sorted(first_signed.items(), key=lambda item: item[1])[1:]  # not the initial key
    assert len(rotations) == 13
    for kid, signed_at in rotations:
        assert signed_at - first_seen[kid] >= policy.prepublish


# --- versions, conflicts, corruption ----------------------------------------------------------


def test_versions_cross_9_to_10_and_99_to_100(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    """TFE's bug: versions sorted as text after the 10th key made signer and JWKS diverge."""
    seen_active: list[int] = []
    step = 0
    while issuer.by_state("active")[0].version < 105:
        step += 1
        version = issuer.by_state("active")[0].version
        # Sign with RSA around the boundaries, ES256 elsewhere (fast).
        issuer.policy = replace(
            POLICY, alg="RS256" if version in (8, 9, 10, 98, 99, 100) else "ES256"
        )
        clock.advance(DAY)
        if step % 7 == 0:
            plan = lifecycle.emergency(issuer.keys, clock.now(), issuer.policy)
        else:
            plan = lifecycle.graceful(issuer.keys, clock.now(), issuer.policy)
        issuer.apply(plan)
        if step % 5 == 0:
            issuer.apply(lifecycle.trim(issuer.keys, clock.now()))
        active = lifecycle.signing_key(issuer.keys)
        nxt = issuer.by_state("next")[0]
        assert nxt.version == max(k.version for k in issuer.keys) > active.version
        assert active.version > max((k.version for k in issuer.by_state("retired")), default=0)
        assert_serving(issuer)
        seen_active.append(active.version)
    assert {9, 10, 99, 100} <= set(seen_active)
    assert seen_active == sorted(seen_active)


def test_a_stale_plan_is_a_conflict(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    clock.advance(DAY)
    snapshot = list(issuer.keys)
    first = lifecycle.graceful(snapshot, clock.now(), POLICY)
    second = lifecycle.graceful(snapshot, clock.now(), POLICY)
    issuer.apply(first)
    with pytest.raises(RotationConflict, match="another rotation"):
        issuer.apply(second)
    assert len(issuer.by_state("active")) == 1
    assert_serving(issuer)


def test_corrupt_key_sets_are_refused(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    active = issuer.by_state("active")[0]
    nxt = issuer.by_state("next")[0]
    two_active = [active, replace(nxt, state="active", activated_at=T0)]
    for fn in (lifecycle.signing_key, lambda ks: lifecycle.tick(ks, clock.now(), POLICY)):
        with pytest.raises(KeySetCorrupt, match="2 active"):
            fn(two_active)
    with pytest.raises(KeySetCorrupt, match="share a version"):
        check_key_set([active, replace(nxt, version=active.version)])
    with pytest.raises(KeySetCorrupt, match="0 active"):
        check_key_set([nxt])


def test_jwks_valid_until_and_summary(issuer: MemoryIssuer, clock: FrozenClock) -> None:
    assert lifecycle.jwks_valid_until(issuer.keys, clock.now()) is None
    clock.advance(DAY)
    plan = lifecycle.graceful(issuer.keys, clock.now(), POLICY)
    issuer.apply(plan)
    until = clock.now() + POLICY.retire_after
    assert lifecycle.jwks_valid_until(issuer.keys, clock.now()) == until
    assert plan.summary() == [
        f"version 1 ({plan.transitions[0].kid}): active → retired "
        "(published until 2026-01-02 06:10:00 UTC)",
        f"version 2 ({plan.transitions[1].kid}): next → active",
        "version 3: new ES256 key, next",
    ]
