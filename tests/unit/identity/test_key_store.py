"""The in-memory key store behind the unit tests' issuer behaves as ``SqlKeyStore``: the same
cases run against both (SQLite for the real one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from cairn.clock import FrozenClock
from cairn.db.engine import Database, make_engine
from cairn.errors import Conflict, SealError
from cairn.identity import lifecycle
from cairn.identity.errors import KeyMaterialError, KeySetCorrupt, RotationConflict
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.model import OidcSigningKey
from cairn.identity.plan import NewKey, Plan, Transition
from cairn.identity.store import KeyStore, SqlKeyStore
from cairn.migrations.migrate import upgrade
from tests.unit.identity.memory import KEYRING, OPERATOR, MemoryIssuer, MemoryKeyStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RotationPolicy(alg="ES256")


@dataclass
class Backend:
    store: KeyStore
    sealed: Callable[[], dict[str, bytes | None]]  # key ID → sealed private key
    set_sealed: Callable[[str, bytes | None], None]


def _flip(blob: bytes | None) -> bytes:
    assert blob is not None
    return blob[:-1] + bytes([blob[-1] ^ 1])


@pytest.fixture(params=["sql", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryKeyStore()

        def set_memory(key_id: str, blob: bytes | None) -> None:
            if blob is None:
                memory.sealed.pop(key_id, None)
            else:
                memory.sealed[key_id] = blob

        def memory_sealed() -> dict[str, bytes | None]:
            return {key.id: memory.sealed.get(key.id) for key in memory.load()}

        yield Backend(memory, memory_sealed, set_memory)
        return
    db = Database(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"))
    upgrade(db.engine)

    def sql_sealed() -> dict[str, bytes | None]:
        with db.unit_of_work() as s:
            rows = s.execute(select(OidcSigningKey.id, OidcSigningKey.sealed_private_key))
            return {key_id: blob for key_id, blob in rows}

    def set_sql(key_id: str, blob: bytes | None) -> None:
        with db.unit_of_work(write=True) as s:
            stmt = update(OidcSigningKey).where(OidcSigningKey.id == key_id)
            s.execute(stmt.values(sealed_private_key=blob))
            s.commit()

    try:
        yield Backend(SqlKeyStore(db, KEYRING), sql_sealed, set_sql)
    finally:
        db.dispose()


def _apply(store: KeyStore, plan: Plan, at: datetime) -> None:
    store.apply(plan, actor=OPERATOR, at=at)


def _id(store: KeyStore, state: str) -> str:
    (key,) = [key for key in store.load() if key.state == state]
    return key.id


def test_a_plan_is_applied_in_version_order_and_the_active_key_opens(backend: Backend) -> None:
    store = backend.store
    assert store.load() == [] and store.open_active() == ([], None)
    keys = store.apply(lifecycle.initial(T0, POLICY), actor=OPERATOR, at=T0)
    assert keys == store.load()
    assert [(key.version, key.state) for key in keys] == [(1, "active"), (2, "next")]
    loaded, private = store.open_active()
    assert loaded == keys and private is not None
    assert all(blob is not None for blob in backend.sealed().values())


def test_retired_and_revoked_keys_lose_their_private_key(backend: Backend) -> None:
    store = backend.store
    _apply(store, lifecycle.initial(T0, POLICY), T0)
    first = _id(store, "active")
    _apply(store, lifecycle.graceful(store.load(), T0 + DAY, POLICY), T0 + DAY)
    assert backend.sealed()[first] is None  # retired
    active, nxt = _id(store, "active"), _id(store, "next")
    _apply(store, lifecycle.emergency(store.load(), T0 + DAY, POLICY), T0 + DAY)
    sealed = backend.sealed()
    assert sealed[active] is None and sealed[nxt] is None  # revoked
    assert sum(blob is not None for blob in sealed.values()) == 2  # the new active and next


def test_a_damaged_or_missing_next_key_is_refused_before_promotion(backend: Backend) -> None:
    store = backend.store
    _apply(store, lifecycle.initial(T0, POLICY), T0)
    nxt = _id(store, "next")
    plan = lifecycle.graceful(store.load(), T0 + DAY, POLICY)
    store.check_promotable(plan)
    good = backend.sealed()[nxt]
    backend.set_sealed(nxt, _flip(good))
    with pytest.raises((SealError, KeyMaterialError)):
        store.check_promotable(plan)
    backend.set_sealed(nxt, None)
    with pytest.raises(KeySetCorrupt, match="version 2 has no private key"):
        store.check_promotable(plan)
    store.check_promotable(lifecycle.trim(store.load(), T0 + DAY))  # promotes nothing


def test_a_damaged_active_key_does_not_open(backend: Backend) -> None:
    store = backend.store
    _apply(store, lifecycle.initial(T0, POLICY), T0)
    active = _id(store, "active")
    backend.set_sealed(active, _flip(backend.sealed()[active]))
    with pytest.raises((SealError, KeyMaterialError)):
        store.open_active()


def test_a_failing_plan_changes_nothing(backend: Backend) -> None:
    store = backend.store
    _apply(store, lifecycle.initial(T0, POLICY), T0)
    stale = store.load()
    _apply(store, lifecycle.graceful(stale, T0 + DAY, POLICY), T0 + DAY)
    keys, sealed = store.load(), backend.sealed()
    (nxt,) = [key for key in keys if key.state == "next"]
    (retired,) = [key for key in keys if key.state == "retired"]
    at = T0 + 2 * DAY
    # The first transition holds; the second finds its key retired already.
    revoke_next = Transition(nxt.id, nxt.kid, nxt.version, "next", "revoked", at)
    revoke_stale = Transition(retired.id, retired.kid, retired.version, "active", "revoked", at)
    with pytest.raises(RotationConflict, match="no longer active"):
        _apply(store, Plan("emergency", transitions=(revoke_next, revoke_stale)), at)
    assert (store.load(), backend.sealed()) == (keys, sealed)
    # A second rotation planned on the same keys: its transitions fail.
    with pytest.raises(RotationConflict, match="another rotation"):
        _apply(store, lifecycle.graceful(stale, at, POLICY), at)
    assert (store.load(), backend.sealed()) == (keys, sealed)
    # A new key whose version exists (the unique index) after a transition that holds.
    again = NewKey(version=nxt.version, alg="ES256", state="next", created_at=at, published_at=at)
    with pytest.raises(RotationConflict):
        _apply(store, Plan("emergency", transitions=(revoke_next,), creates=(again,)), at)
    assert (store.load(), backend.sealed()) == (keys, sealed)


def test_trim_deletes_only_expired_retired_keys_and_twice_is_harmless(backend: Backend) -> None:
    store = backend.store
    _apply(store, lifecycle.initial(T0, POLICY), T0)
    _apply(store, lifecycle.graceful(store.load(), T0 + DAY, POLICY), T0 + DAY)
    (retired,) = [key for key in store.load() if key.state == "retired"]
    assert retired.retire_until is not None
    plan = lifecycle.trim(store.load(), retired.retire_until)
    assert [r.key_id for r in plan.removals] == [retired.id]
    _apply(store, plan, retired.retire_until - timedelta(seconds=1))  # not yet expired then
    assert retired.id in {key.id for key in store.load()}
    _apply(store, plan, retired.retire_until)
    assert retired.id not in {key.id for key in store.load()}
    assert retired.id not in backend.sealed()
    _apply(store, plan, retired.retire_until)  # again (another replica): nothing happens
    assert [key.state for key in store.load()] == ["active", "next"]


def test_the_issuer_refuses_to_promote_a_damaged_next_key() -> None:
    clock = FrozenClock(T0)
    issuer = MemoryIssuer(POLICY, clock)
    issuer.apply(lifecycle.initial(clock.now(), POLICY))
    clock.advance(DAY)
    token_kid = issuer.signer().kid
    (nxt,) = issuer.by_state("next")
    issuer.store.damage(nxt.id)
    before = issuer.keys
    with pytest.raises(Conflict, match="next signing key cannot be opened"):
        issuer.issuer.rotate(OPERATOR, emergency=False, force=False)
    with pytest.raises(Conflict, match="nothing was changed"):
        issuer.apply(lifecycle.graceful(issuer.keys, clock.now(), POLICY))
    assert issuer.keys == before and issuer.signer().kid == token_kid
    # An emergency rotation replaces the damaged key.
    issuer.issuer.rotate(OPERATOR, emergency=True, force=False)
    assert nxt.kid not in {key.kid for key in issuer.keys if key.state != "revoked"}
    assert issuer.signer().kid == issuer.by_state("active")[0].kid != token_kid
