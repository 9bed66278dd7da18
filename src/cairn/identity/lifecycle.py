"""The key rotation policy, as pure functions from (key metadata, now) to a plan of changes.

Lifecycle of a key::

    next ──(graceful / scheduled)──▶ active ──(next rotation)──▶ retired ──(trim)──▶ deleted
      │                                │
      └────────(emergency)─────────────┴──▶ revoked  (leaves the JWKS at once, kept for audit)

Invariants every plan preserves (``check_key_set`` checks them):

* a non-empty key set has exactly one ``active`` key and at most one ``next`` key (exactly one
  after any plan from this module);
* the published set (the JWKS) is ``next`` + ``active`` + ``retired`` keys whose
  ``retire_until`` is still ahead; ``revoked`` keys are never published;
* a key signs only after it has been published as ``next`` for at least the pre-publication
  window, except when an operator forces it or after an emergency (reported as such);
* a retired key stays published for ``max_token_ttl + 2 * jwks_max_age`` after it stopped
  signing: every token it signed expires, plus two JWKS cache periods for verifiers, plus the
  slack for a replica whose cached signer is up to the in-process cache TTL (60 s) stale;
* versions are integers, each new key takes the highest version + 1, and nothing selects a key
  by version: the signing key is the ``active`` one.

Every function returns a ``plan.Plan``; ``plan`` says how the store applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from cairn.identity.errors import IdentityConfigError, KeySetCorrupt, RotationRefused
from cairn.identity.keys import ALGS, Alg, KeyState, SigningKey
from cairn.identity.plan import NewKey, Plan, Removal, Transition, check_key_set

DEFAULT_ROTATION_PERIOD = timedelta(days=90)  # TFE's default
DEFAULT_PREPUBLISH = timedelta(hours=24)  # Gardener: verifier re-discovery lag, observed ≤ 10 min
DEFAULT_JWKS_MAX_AGE = timedelta(seconds=300)  # Cache-Control: public, max-age=300
DEFAULT_MAX_TOKEN_TTL = timedelta(hours=6)  # GCP STS recommends token lifetimes below 6 h
TOKEN_TTL_LIMIT = timedelta(hours=48)  # GCP STS rejects exp ≥ iat + 48 h
DEFAULT_MAX_PUBLISHED = 8  # AWS accepts up to 100 keys per JWKS; normal state is 2 or 3


def human(delta: timedelta) -> str:
    """A duration for messages: ``90 d``, ``2 d 3 h``, ``24 h``, ``5 min``, ``30 s``."""
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if unit == "d" and seconds < 2 * 86400:
            continue  # "36 h" reads better than "1 d 12 h"
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts) or "0 s"


def _utc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class RotationPolicy:
    """How keys rotate. Built once from the settings; an impossible policy raises
    IdentityConfigError at construction, so cairn refuses to start rather than misbehave.

    * ``period``: how long a key signs before a scheduled rotation (CAIRN_OIDC_ROTATION_PERIOD);
    * ``prepublish``: how long a key is published as ``next`` before it may sign
      (CAIRN_OIDC_PREPUBLISH), never below 2 * ``jwks_max_age``;
    * ``max_token_ttl``: the cap on any token's lifetime (``exp - iat``), below 48 h; it also
      sets how long retired keys stay published, so pass the same value to ``workload_claims``
      (after lowering it, tokens minted under the old cap may outlive a key retired within one
      old cap of the change: lower it together with a wait, or accept that);
    * ``jwks_max_age``: the JWKS ``Cache-Control: max-age``;
    * ``alg``: the algorithm of new keys (RS256 by default: the only one every cloud accepts);
    * ``max_published``: a bound on the JWKS size; graceful rotations, even forced ones, wait
      rather than exceed it.
    """

    period: timedelta = DEFAULT_ROTATION_PERIOD
    prepublish: timedelta = DEFAULT_PREPUBLISH
    max_token_ttl: timedelta = DEFAULT_MAX_TOKEN_TTL
    jwks_max_age: timedelta = DEFAULT_JWKS_MAX_AGE
    alg: Alg = "RS256"
    max_published: int = DEFAULT_MAX_PUBLISHED

    def __post_init__(self) -> None:
        if self.alg not in ALGS:
            raise IdentityConfigError(f"signing algorithm {self.alg!r}: use RS256 or ES256")
        if self.jwks_max_age <= timedelta(0):
            raise IdentityConfigError("the JWKS max-age must be positive")
        floor = 2 * self.jwks_max_age
        if self.prepublish < floor:
            raise IdentityConfigError(
                f"CAIRN_OIDC_PREPUBLISH is {human(self.prepublish)}; it must be at least "
                f"{human(floor)} (twice the JWKS max-age) so that verifiers have fetched a key "
                "before it signs"
            )
        if self.period < self.prepublish:
            raise IdentityConfigError(
                f"CAIRN_OIDC_ROTATION_PERIOD ({human(self.period)}) is shorter than "
                f"CAIRN_OIDC_PREPUBLISH ({human(self.prepublish)}); a key must be published "
                "for the whole pre-publication window before it signs"
            )
        if not timedelta(0) < self.max_token_ttl < TOKEN_TTL_LIMIT:
            raise IdentityConfigError(
                f"the maximum token lifetime is {human(self.max_token_ttl)}; it must be positive "
                "and below 48 h (Google STS rejects longer tokens; below 6 h is recommended)"
            )
        if self.max_published < 3:
            raise IdentityConfigError(
                "the JWKS bound must allow at least 3 keys (next, active and one retired)"
            )

    @property
    def retire_after(self) -> timedelta:
        """How long a retired key stays published: every token it signed has expired, plus
        two JWKS cache periods (gocdnext's formula; Dex keeps keys for the token lifetime)."""
        return self.max_token_ttl + 2 * self.jwks_max_age


# --- reading a key set ------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    active: SigningKey | None
    next: SigningKey | None
    max_version: int


def _view(keys: Sequence[SigningKey]) -> _View:
    check_key_set(keys)
    by_state = {k.state: k for k in keys if k.state in ("active", "next")}
    return _View(
        active=by_state.get("active"),
        next=by_state.get("next"),
        max_version=max((k.version for k in keys), default=0),
    )


def signing_key(keys: Sequence[SigningKey]) -> SigningKey:
    """The key that signs: the ``active`` one, chosen by state, never by version."""
    view = _view(keys)
    if view.active is None:
        raise KeySetCorrupt("there is no active signing key")
    return view.active


_ORDER = {"active": 0, "next": 1, "retired": 2, "revoked": 3}


def published(keys: Iterable[SigningKey], now: datetime) -> list[SigningKey]:
    """The keys in the JWKS at ``now``: active first, then next, then retired keys newest
    first (integer versions; the order is cosmetic, verifiers select by kid)."""
    live = [k for k in keys if k.is_published(now)]
    return sorted(live, key=lambda k: (_ORDER[k.state], -k.version))


def jwks_valid_until(keys: Iterable[SigningKey], now: datetime) -> datetime | None:
    """When the published set next changes without a rotation (a retired key's
    ``retire_until``): a JWKS cached at ``now`` must be rebuilt by then. None if never."""
    ends = [k.retire_until for k in keys if k.is_published(now) and k.retire_until is not None]
    return min(ends, default=None)


def due_at(keys: Sequence[SigningKey], policy: RotationPolicy) -> datetime | None:
    """When the next scheduled rotation may happen: the active key has signed for ``period``
    and the next key has been published for ``prepublish``. None if the set is not complete
    (then ``tick`` creates what is missing at once)."""
    view = _view(keys)
    if view.active is None or view.next is None:
        return None
    assert view.active.activated_at is not None and view.next.published_at is not None
    return max(view.active.activated_at + policy.period, view.next.published_at + policy.prepublish)


# --- the policy -------------------------------------------------------------------------------


def _new(
    version: int, now: datetime, policy: RotationPolicy, state: Literal["next", "active"]
) -> NewKey:
    return NewKey(
        version=version,
        alg=policy.alg,
        state=state,
        created_at=now,
        published_at=now,
        activated_at=now if state == "active" else None,
    )


def _retire(key: SigningKey, now: datetime, policy: RotationPolicy) -> Transition:
    return Transition(
        key.id, key.kid, key.version, key.state, "retired", now, now + policy.retire_after
    )


def _to(key: SigningKey, state: KeyState, now: datetime) -> Transition:
    return Transition(key.id, key.kid, key.version, key.state, state, now)


def initial(now: datetime, policy: RotationPolicy, *, first_version: int = 1) -> Plan:
    """The first key set: one key that signs at once (no verifier trusts cairn yet, so there is
    nothing to pre-publish for) and one ``next`` key. The store inserts it only if no key exists
    (first start of several replicas: insert-if-absent, then re-read the winner)."""
    return Plan(
        action="initial",
        creates=(
            _new(first_version, now, policy, "active"),
            _new(first_version + 1, now, policy, "next"),
        ),
    )


def _check_room(
    keys: Sequence[SigningKey], now: datetime, policy: RotationPolicy, adds: int
) -> None:
    live = published(keys, now)
    if len(live) + adds <= policy.max_published:
        return
    ends = sorted(k.retire_until for k in live if k.retire_until is not None)
    excess = len(live) + adds - policy.max_published
    retry_at = ends[excess - 1] if excess <= len(ends) else None
    when = f"; retry after {_utc(retry_at)}" if retry_at else ""
    raise RotationRefused(
        f"{len(live)} keys are published already and the JWKS is limited to "
        f"{policy.max_published}: retired keys stay published until every token they signed "
        f"has expired{when}. If the active key is compromised, use an emergency rotation, "
        "which withdraws it at once.",
        retry_at=retry_at,
    )


def graceful(
    keys: Sequence[SigningKey], now: datetime, policy: RotationPolicy, *, force: bool = False
) -> Plan:
    """Promote ``next`` to ``active``, retire the active key (published for
    ``policy.retire_after`` more) and create a new ``next``.

    Refused (RotationRefused, with the time it becomes possible) when the next key has been
    published for less than ``policy.prepublish``, unless ``force``: verifiers that cached the
    JWKS before the next key appeared would reject new tokens until they refetch. Refused even
    when forced if the JWKS would exceed ``policy.max_published`` keys. With no next key (a
    damaged set), a forced rotation activates a brand-new key."""
    view = _view(keys)
    if view.active is None:
        raise RotationRefused("there are no signing keys yet; cairn creates them at first start")
    nxt = view.next
    ready_at = None
    if nxt is not None:
        assert nxt.published_at is not None  # SigningKey guarantees it for next keys
        ready_at = nxt.published_at + policy.prepublish
    ready = ready_at is not None and now >= ready_at
    if not ready and not force:
        if nxt is None or nxt.published_at is None or ready_at is None:
            raise RotationRefused(
                "there is no next key to promote; the scheduler creates one, which may sign "
                f"once it has been published for {human(policy.prepublish)}. Force the rotation "
                "to sign with an unpublished key at once, or use an emergency rotation."
            )
        raise RotationRefused(
            f"the next key (version {nxt.version}, kid {nxt.kid}) has been published for "
            f"{human(now - nxt.published_at)} only; "
            f"cairn waits {human(policy.prepublish)} before signing with a new key so that "
            "verifiers (AWS, GCP, Azure, Vault) have fetched it. Retry after "
            f"{_utc(ready_at)}, or force the rotation and accept that verifiers holding an older "
            "copy of the JWKS may reject new tokens until they refetch it. If the active key is "
            "compromised, use an emergency rotation instead.",
            retry_at=ready_at,
        )
    _check_room(keys, now, policy, adds=1 if nxt else 2)
    transitions = [_retire(view.active, now, policy)]
    creates = []
    version = view.max_version
    if nxt is not None:
        transitions.append(_to(nxt, "active", now))
    else:
        version += 1
        creates.append(_new(version, now, policy, "active"))
    creates.append(_new(version + 1, now, policy, "next"))
    return Plan(
        action="graceful",
        forced=not ready,
        transitions=tuple(transitions),
        creates=tuple(creates),
    )


def emergency(keys: Sequence[SigningKey], now: datetime, policy: RotationPolicy) -> Plan:
    """Revoke the active and the next key (they leave the JWKS at once; tokens they signed stop
    verifying once verifiers refetch), activate a brand-new key immediately and create a new
    ``next``. Never refused; retired keys are left alone (they no longer sign, and their
    private keys were erased when they retired)."""
    view = _view(keys)
    transitions = tuple(_to(k, "revoked", now) for k in (view.active, view.next) if k is not None)
    return Plan(
        action="emergency",
        transitions=transitions,
        creates=(
            _new(view.max_version + 1, now, policy, "active"),
            _new(view.max_version + 2, now, policy, "next"),
        ),
    )


def trim(keys: Sequence[SigningKey], now: datetime) -> Plan:
    """Delete retired keys whose ``retire_until`` has passed (TFE's ``trim-key``). Never
    touches active, next or revoked keys; trimming twice changes nothing the second time."""
    _view(keys)
    removals = tuple(
        Removal(k.id, k.kid, k.version, k.retire_until)
        for k in sorted(keys, key=lambda k: k.version)
        if k.state == "retired" and k.retire_until is not None and k.retire_until <= now
    )
    return Plan(action="trim", removals=removals)


def tick(keys: Sequence[SigningKey], now: datetime, policy: RotationPolicy) -> Plan:
    """What the scheduler does at ``now``: create the first key set if there is none; create a
    ``next`` key if it is missing; rotate gracefully once the active key has signed for
    ``policy.period`` and the next key has been published for ``policy.prepublish``. Never
    raises RotationRefused: a rotation the policy defers yields an empty plan with a ``note``.
    (Trimming is separate: call ``trim`` from the same scheduler if wanted.)"""
    if not keys:
        return initial(now, policy)
    view = _view(keys)
    if view.active is None:
        raise KeySetCorrupt("there is no active signing key")
    if view.next is None:
        try:
            _check_room(keys, now, policy, adds=1)
        except RotationRefused as refused:
            return Plan(action="scheduled", note=refused.detail)
        return Plan(action="scheduled", creates=(_new(view.max_version + 1, now, policy, "next"),))
    due = due_at(keys, policy)
    if due is not None and now < due:
        return Plan(action="scheduled", note=f"next scheduled rotation at {_utc(due)}")
    try:
        plan = graceful(keys, now, policy)
    except RotationRefused as refused:
        return Plan(action="scheduled", note=refused.detail)
    return replace(plan, action="scheduled")
