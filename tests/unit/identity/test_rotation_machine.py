"""Key rotation never breaks a verifier: a hypothesis state machine over the rotation policy.

Operators rotate (gracefully, forced, in an emergency) and trim; the scheduler ticks; the clock
jumps by seconds to months, to the next scheduled rotation, or to the last valid second of a
token or of a retired key; runs
mint tokens; the signing algorithm changes. After every step, checked as a cloud checks,
through discovery + JWKS with PyJWT and jwcrypto:

* exactly one key is active and its kid is in the JWKS; a freshly minted token verifies;
* every token minted earlier verifies until its ``exp`` unless its key was revoked (then its
  kid is gone from the JWKS);
* revoked kids are never published, the JWKS stays within its bound, versions are integers
  with ``next`` the highest and ``active`` above every retired key (runs start at versions
  1, 8, 9, 98 and 99, so 9 → 10 and 99 → 100 are crossed);
* a key signs only after being published for the pre-publication window, unless forced or in
  an emergency.

RSA-2048 generation is slow, so RSA keys come from a pool shared across examples (a key is
used at most once within an example, so kids stay unique); ES256 keys are generated fresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cairn.clock import FrozenClock
from cairn.identity import keys, lifecycle
from cairn.identity.errors import RotationRefused
from cairn.identity.keys import Alg, GeneratedKey
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.plan import Plan, check_key_set
from tests.unit.identity.memory import ISSUER, MemoryIssuer
from tests.unit.identity.verifiers import verify_both

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
AUDIENCES = ["sts.amazonaws.com", "api://AzureADTokenExchange", "vault.example.com"]
MAX_LIVE_TOKENS = 12
MIN_STEPS = 1000

RSA_POOL: list[GeneratedKey] = []
STATS: dict[str, int] = {}


class KeyFactory:
    """RS256 keys from the shared pool (each once per example), ES256 keys fresh."""

    def __init__(self) -> None:
        self.rsa_used = 0

    def __call__(self, alg: Alg) -> GeneratedKey:
        if alg == "ES256":
            return keys.generate("ES256")
        if self.rsa_used == len(RSA_POOL):
            RSA_POOL.append(keys.generate("RS256"))
        self.rsa_used += 1
        return RSA_POOL[self.rsa_used - 1]


@dataclass(frozen=True)
class Minted:
    token: str
    kid: str
    exp: int
    audience: str


def _count(name: str) -> None:
    STATS[name] = STATS.get(name, 0) + 1


durations = st.one_of(
    st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    st.integers(1, 48).map(lambda h: timedelta(hours=h)),
    st.integers(1, 100).map(lambda d: timedelta(days=d)),
)


class RotationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock(T0)
        self.issuer = MemoryIssuer(RotationPolicy(), self.clock)
        self.minted: list[Minted] = []
        self.revoked: set[str] = set()
        self.first_seen: dict[str, datetime] = {}
        self.versions_seen: set[int] = set()
        self.crossed: set[int] = set()

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def policy(self) -> RotationPolicy:
        return self.issuer.policy

    def _published(self) -> list[keys.SigningKey]:
        return lifecycle.published(self.issuer.keys, self.now)

    def _apply(self, plan: Plan) -> None:
        before = {k.id: k for k in self.issuer.keys}
        self.issuer.apply(plan)
        for t in plan.transitions:
            if t.to_state == "revoked":
                self.revoked.add(t.kid)
            if t.to_state == "active":
                # A key promoted from next: published for the whole window, unless forced.
                assert plan.action in ("graceful", "scheduled")
                if not plan.forced:
                    assert self.now - self.first_seen[t.kid] >= self.policy.prepublish
        if plan.action == "scheduled" and plan.transitions:
            (old,) = [before[t.key_id] for t in plan.transitions if t.from_state == "active"]
            assert old.activated_at is not None
            assert self.now - old.activated_at >= self.policy.period
        if not plan.empty:
            _count(f"applied:{plan.action}{':forced' if plan.forced else ''}")

    def _step(self) -> None:
        _count("steps")

    # --- setup -------------------------------------------------------------------------------

    @initialize(
        first_version=st.sampled_from([1, 8, 9, 98, 99]),
        alg=st.sampled_from(["ES256", "RS256"]),
        period=st.sampled_from([2 * DAY, 10 * DAY, 90 * DAY]),
        prepublish=st.sampled_from([timedelta(minutes=10), DAY]),
        max_published=st.sampled_from([4, 8]),
    )
    def start(
        self,
        first_version: int,
        alg: Alg,
        period: timedelta,
        prepublish: timedelta,
        max_published: int,
    ) -> None:
        policy = RotationPolicy(
            period=period, prepublish=prepublish, alg=alg, max_published=max_published
        )
        self.issuer = MemoryIssuer(policy, self.clock, KeyFactory())
        self._apply(lifecycle.initial(self.now, policy, first_version=first_version))
        _count("examples")
        _count(f"first_version:{first_version}")

    # --- operators and the scheduler ---------------------------------------------------------

    @rule()
    def rotate(self) -> None:
        self._step()
        try:
            plan = lifecycle.graceful(self.issuer.keys, self.now, self.policy)
        except RotationRefused as refused:
            (nxt,) = self.issuer.by_state("next")
            assert nxt.published_at is not None
            too_early = self.now < nxt.published_at + self.policy.prepublish
            full = len(self._published()) + 1 > self.policy.max_published
            assert too_early or full, refused.detail
            assert refused.retry_at is None or refused.retry_at > self.now
            _count("refused:graceful")
            return
        assert not plan.forced
        self._apply(plan)

    @rule()
    def rotate_forced(self) -> None:
        self._step()
        try:
            plan = lifecycle.graceful(self.issuer.keys, self.now, self.policy, force=True)
        except RotationRefused:
            assert len(self._published()) + 1 > self.policy.max_published
            _count("refused:forced")
            return
        self._apply(plan)

    @rule()
    def rotate_emergency(self) -> None:
        self._step()
        self._apply(lifecycle.emergency(self.issuer.keys, self.now, self.policy))

    @rule()
    def trim(self) -> None:
        self._step()
        before = self.issuer.jwks().body
        kept = {k.id for k in self.issuer.keys if k.state != "retired"}
        plan = lifecycle.trim(self.issuer.keys, self.now)
        self._apply(plan)
        assert self.issuer.jwks().body == before  # only unpublished keys go
        assert kept <= {k.id for k in self.issuer.keys}  # never active, next or revoked
        assert lifecycle.trim(self.issuer.keys, self.now).empty  # idempotent

    @rule()
    def scheduler_tick(self) -> None:
        self._step()
        plan = lifecycle.tick(self.issuer.keys, self.now, self.policy)
        assert plan.action == "scheduled"
        assert not plan.forced
        self._apply(plan)

    @rule()
    def switch_algorithm(self) -> None:
        self._step()
        alg: Alg = "ES256" if self.policy.alg == "RS256" else "RS256"
        self.issuer.policy = replace(self.policy, alg=alg)

    # --- time --------------------------------------------------------------------------------

    @rule(delta=durations)
    def advance(self, delta: timedelta) -> None:
        self._step()
        self.clock.advance(delta)

    @rule()
    def advance_to_the_scheduled_rotation(self) -> None:
        self._step()
        due = lifecycle.due_at(self.issuer.keys, self.policy)
        if due is not None and due > self.now:
            self.clock.advance(due - self.now)

    @precondition(lambda self: any(m.exp - 1 > self.now.timestamp() for m in self.minted))
    @rule()
    def advance_to_a_tokens_last_valid_second(self) -> None:
        self._step()
        target = min(m.exp - 1 for m in self.minted if m.exp - 1 > self.now.timestamp())
        self.clock.advance(datetime.fromtimestamp(target, UTC) - self.now)

    @precondition(
        lambda self: any(
            k.state == "retired" for k in lifecycle.published(self.issuer.keys, self.clock.now())
        )
    )
    @rule(exactly=st.booleans())
    def advance_to_a_retired_keys_end(self, exactly: bool) -> None:
        self._step()
        ends = [k.retire_until for k in self._published() if k.retire_until is not None]
        target = min(ends) - (timedelta(0) if exactly else timedelta(seconds=1))
        if target > self.now:
            self.clock.advance(target - self.now)

    # --- runs --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.minted) < MAX_LIVE_TOKENS)
    @rule(
        ttl=st.integers(1, 72 * 3600).map(lambda s: timedelta(seconds=s)),
        audiences=st.lists(st.sampled_from(AUDIENCES), min_size=1, max_size=3, unique=True),
    )
    def mint(self, ttl: timedelta, audiences: list[str]) -> None:
        self._step()
        token, claims = self.issuer.mint(audiences, ttl)
        exp, iat = claims["exp"], claims["iat"]
        assert isinstance(exp, int) and isinstance(iat, int)
        assert 0 < exp - iat <= self.policy.max_token_ttl.total_seconds()
        assert claims["aud"] == (audiences[0] if len(audiences) == 1 else audiences)
        self.minted.append(Minted(token, self.issuer.signer().kid, exp, audiences[-1]))

    # --- what verifiers see, after every step ------------------------------------------------

    @invariant()
    def verifiers_keep_working(self) -> None:
        key_set = self.issuer.keys
        check_key_set(key_set)
        active = lifecycle.signing_key(key_set)
        (nxt,) = self.issuer.by_state("next")
        web = self.issuer.web()
        entries = json.loads(web[ISSUER + "/.well-known/jwks"])["keys"]
        kids = {e["kid"] for e in entries}

        assert active.kid in kids
        assert len(entries) == len(kids) <= self.policy.max_published
        assert not kids & self.revoked
        assert all(not {"d", "p", "q"} & set(e) for e in entries)

        versions = [k.version for k in key_set]
        assert all(type(v) is int for v in versions)
        assert nxt.version == max(versions)
        assert all(active.version > k.version for k in key_set if k.state == "retired")
        self.versions_seen.update(versions)
        for low, high in ((9, 10), (99, 100)):
            crossed = {low, high} <= self.versions_seen and active.version >= high
            if crossed and high not in self.crossed:
                self.crossed.add(high)
                _count(f"crossed:{high}")

        for kid in kids:
            self.first_seen.setdefault(kid, self.now)

        token, claims = self.issuer.mint("sts.amazonaws.com", timedelta(minutes=5))
        got = verify_both(token, web, issuer=ISSUER, audience="sts.amazonaws.com", now=self.now)
        assert got == claims

        now_ts = self.now.timestamp()
        self.minted = [m for m in self.minted if m.exp > now_ts]
        for m in self.minted:
            if m.kid in self.revoked:
                assert m.kid not in kids
            else:
                verify_both(m.token, web, issuer=ISSUER, audience=m.audience, now=self.now)
                _count("verified:earlier-token")


def test_rotation_never_breaks_a_verifier() -> None:
    STATS.clear()
    run_state_machine_as_test(
        RotationMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    print(dict(sorted(STATS.items())))
    assert STATS["steps"] >= MIN_STEPS
    for action in ("graceful", "graceful:forced", "emergency", "trim", "scheduled"):
        assert STATS.get(f"applied:{action}", 0) > 0, action
    assert STATS.get("verified:earlier-token", 0) > 0
    assert STATS.get("crossed:10", 0) > 0 and STATS.get("crossed:100", 0) > 0
