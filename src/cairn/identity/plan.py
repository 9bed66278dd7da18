"""Plans: the changes one rotation makes, and how to apply them.

``lifecycle`` decides; a ``Plan`` records the decision as data, so the database layer can apply
it in one transaction (then NOTIFY the replicas) and tests can apply it to a list:

1. ``transitions`` in order, each as a conditional update
   ``UPDATE … SET state = :to_state, <timestamp> = :at WHERE id = :key_id AND state =
   :from_state``; no matching row means another replica rotated first: raise
   ``RotationConflict`` and roll back. Transitions come first so that a partial unique index
   on ``state = 'active'`` (and one on ``state = 'next'``) holds at every statement;
2. ``creates``: generate each key pair (``keys.generate(alg)``), seal its private key
   (``keys.seal_private_key``) and insert ``NewKey.to_signing_key(...)``; a unique index on
   ``version`` turns a concurrent rotation into a conflict;
3. ``removals``: ``DELETE … WHERE id = :key_id AND state = 'retired' AND retire_until <= :now``
   (zero rows is fine: trim is idempotent).

``apply_plan`` does exactly this to an in-memory key set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from cairn.identity.errors import KeyMaterialError, KeySetCorrupt, RotationConflict
from cairn.identity.keys import Alg, GeneratedKey, KeyState, SigningKey

Action = Literal["initial", "graceful", "emergency", "trim", "scheduled"]


def _utc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class NewKey:
    """A key to create: the caller generates the key pair (``keys.generate(alg)``), seals the
    private key and inserts the row; ``to_signing_key`` gives the row's metadata."""

    version: int
    alg: Alg
    state: Literal["next", "active"]
    created_at: datetime
    published_at: datetime
    activated_at: datetime | None = None

    def to_signing_key(self, *, key_id: str, generated: GeneratedKey) -> SigningKey:
        if generated.alg != self.alg:
            raise KeyMaterialError(f"planned a {self.alg} key, got a {generated.alg} key")
        return SigningKey(
            id=key_id,
            version=self.version,
            kid=generated.kid,
            alg=self.alg,
            state=self.state,
            created_at=self.created_at,
            published_at=self.published_at,
            activated_at=self.activated_at,
            public_jwk=dict(generated.public_jwk),
        )


@dataclass(frozen=True)
class Transition:
    """A state change of an existing key, applied only if it is still in ``from_state``."""

    key_id: str
    kid: str
    version: int
    from_state: KeyState
    to_state: KeyState
    at: datetime
    retire_until: datetime | None = None

    @property
    def drop_private(self) -> bool:
        """A retired or revoked key never signs again: the store should erase its sealed
        private key in the same transaction (node-oidc-provider strips it the same way)."""
        return self.to_state in ("retired", "revoked")

    def apply_to(self, key: SigningKey) -> SigningKey:
        """The key's metadata after this transition (the columns the store updates)."""
        if key.id != self.key_id or key.state != self.from_state:
            raise RotationConflict(
                f"signing key version {self.version} is no longer {self.from_state}; "
                "another rotation happened first, re-read the keys and retry"
            )
        if self.to_state == "active":
            return replace(key, state="active", activated_at=self.at)
        if self.to_state == "retired":
            return replace(key, state="retired", retired_at=self.at, retire_until=self.retire_until)
        if self.to_state == "revoked":
            return replace(key, state="revoked", revoked_at=self.at)
        raise KeySetCorrupt(f"no transition leads to state {self.to_state}")


@dataclass(frozen=True)
class Removal:
    """A retired key to delete (``WHERE id = :key_id AND state = 'retired' AND retire_until
    <= now``). Deleting a row that is already gone is not an error: trim is idempotent."""

    key_id: str
    kid: str
    version: int
    retire_until: datetime


@dataclass(frozen=True)
class Plan:
    """The changes one rotation makes, to apply in one transaction (then NOTIFY replicas).

    ``forced`` is set when an operator's ``force`` overrode the pre-publication window;
    ``note`` says why a scheduled tick changed nothing."""

    action: Action
    forced: bool = False
    transitions: tuple[Transition, ...] = ()
    creates: tuple[NewKey, ...] = ()
    removals: tuple[Removal, ...] = ()
    note: str = field(default="", compare=False)

    @property
    def empty(self) -> bool:
        return not (self.transitions or self.creates or self.removals)

    def summary(self) -> list[str]:
        """One line per change, for the audit log and the CLI (kids and versions only)."""
        lines = []
        for t in self.transitions:
            until = f" (published until {_utc(t.retire_until)})" if t.retire_until else ""
            lines.append(f"version {t.version} ({t.kid}): {t.from_state} → {t.to_state}{until}")
        for n in self.creates:
            lines.append(f"version {n.version}: new {n.alg} key, {n.state}")
        for r in self.removals:
            lines.append(
                f"version {r.version} ({r.kid}): deleted (retired until {_utc(r.retire_until)})"
            )
        return lines


def check_key_set(keys: Sequence[SigningKey]) -> None:
    """Raise KeySetCorrupt unless ``keys`` satisfies the stored-data invariants: unique ids,
    versions and kids; exactly one active key if any key exists; at most one next key."""
    for attr in ("id", "version", "kid"):
        values = [getattr(k, attr) for k in keys]
        if len(set(values)) != len(values):
            raise KeySetCorrupt(f"two signing keys share a {attr}")
    states = [k.state for k in keys]
    if keys and states.count("active") != 1:
        raise KeySetCorrupt(
            f"{states.count('active')} active signing keys; exactly one must be active"
        )
    if states.count("next") > 1:
        raise KeySetCorrupt(f"{states.count('next')} next signing keys; at most one may exist")


def apply_plan(
    keys: Sequence[SigningKey], plan: Plan, make_key: Callable[[NewKey], SigningKey]
) -> list[SigningKey]:
    """Apply ``plan`` to an in-memory key set, the way the store applies it to rows, and return
    the new set ordered by version. ``make_key`` generates each new key, typically
    ``lambda n: n.to_signing_key(key_id=new_id(...), generated=generate(n.alg))``.

    Raises RotationConflict if a transition's key is no longer in its ``from_state``."""
    by_id = {k.id: k for k in keys}
    for t in plan.transitions:
        current = by_id.get(t.key_id)
        if current is None:
            raise RotationConflict(
                f"signing key version {t.version} no longer exists; re-read the keys and retry"
            )
        by_id[t.key_id] = t.apply_to(current)
    for new in plan.creates:
        key = make_key(new)
        if (key.version, key.state, key.alg) != (new.version, new.state, new.alg):
            raise KeySetCorrupt(f"make_key returned {key.state} version {key.version} for {new}")
        if key.id in by_id or any(k.version == key.version for k in by_id.values()):
            raise RotationConflict(
                f"signing key version {key.version} exists already; another rotation happened"
            )
        by_id[key.id] = key
    for r in plan.removals:
        current = by_id.get(r.key_id)
        if current is None:
            continue
        if current.state != "retired":
            raise RotationConflict(f"signing key version {r.version} is no longer retired")
        del by_id[r.key_id]
    result = sorted(by_id.values(), key=lambda k: k.version)
    check_key_set(result)
    return result
