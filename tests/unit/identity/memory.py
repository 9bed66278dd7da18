"""The real ``Issuer`` over an in-memory key store.

``MemoryKeyStore`` behaves as ``SqlKeyStore`` does on its table (``test_key_store.py`` runs
both through the same cases): it erases a sealed private key when its key retires or is
revoked, refuses to promote a key whose seal does not open, and applies a plan all or nothing
(a transition whose key is no longer in its ``from_state``, or a broken unique index, is a
``RotationConflict`` and changes nothing). ``MemoryIssuer`` is a thin adapter for the tests:
plans go through ``Issuer.apply`` and everything a verifier sees (discovery, JWKS, the
signer) comes from the issuer's own cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import create_engine

from cairn import ids
from cairn.audit.log import Actor
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.identity import discovery, tokens
from cairn.identity import keys as k
from cairn.identity.errors import KeySetCorrupt, RotationConflict
from cairn.identity.issuer import Issuer
from cairn.identity.keys import Alg, GeneratedKey, KeyState, PrivateKey, SigningKey
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.plan import Plan

ISSUER = "https://cairn.example.com"
KEYRING = Keyring("identity-test-secret-0123456789abcdef")
WORKLOAD = tokens.Workload(
    organization_id="org-GHVjcfw2Ym6hW5Hm",
    organization_name="acme",
    project_id="prj-7ZVMkmSAXRkBYM2x",
    project_name="Default Project",
    workspace_id="ws-Lzq4bTT6CPzGxJdS",
    workspace_name="networking-prod",
)
OPERATOR = Actor(id="user-operator", name="operator")
CACHE_TTL = timedelta(seconds=60)  # CAIRN_OIDC_CACHE_TTL's default


class MemoryKeyStore:
    """``SqlKeyStore`` on a dict: rows by key ID, and their sealed private keys."""

    def __init__(
        self, keyring: Keyring = KEYRING, generate: Callable[[Alg], GeneratedKey] = k.generate
    ) -> None:
        self._keyring = keyring
        self._generate = generate
        self._rows: dict[str, SigningKey] = {}
        self.sealed: dict[str, bytes] = {}  # sealed_private_key, absent where the row has NULL
        self.events: list[tuple[str, str]] = []  # the audit events: (action, subject)

    def load(self) -> list[SigningKey]:
        return sorted(self._rows.values(), key=lambda key: key.version)

    def open_active(self) -> tuple[list[SigningKey], PrivateKey | None]:
        current = self.load()
        for key in current:
            if key.state == "active" and key.id in self.sealed:
                return current, k.open_private_key(self._keyring, key, self.sealed[key.id])
        return current, None

    def check_promotable(self, plan: Plan) -> None:
        promoted = {t.key_id for t in plan.transitions if t.to_state == "active"}
        for key in self.load():
            if key.id in promoted:
                if key.id not in self.sealed:
                    raise KeySetCorrupt(f"signing key version {key.version} has no private key")
                k.open_private_key(self._keyring, key, self.sealed[key.id])

    def apply(self, plan: Plan, *, actor: Actor, at: datetime) -> list[SigningKey]:
        # As SqlKeyStore: generate first, then change copies and keep them only if all holds.
        made = [(new, self._generate(new.alg)) for new in plan.creates]
        rows, sealed = dict(self._rows), dict(self.sealed)
        for t in plan.transitions:
            row = rows.get(t.key_id)
            if row is None or row.state != t.from_state:
                raise RotationConflict(
                    f"signing key version {t.version} is no longer {t.from_state}: another "
                    "rotation happened first; nothing was changed"
                )
            rows[t.key_id] = t.apply_to(row)
            if t.drop_private:
                sealed.pop(t.key_id, None)
            _check_unique(rows.values())
        for new, generated in made:
            key = new.to_signing_key(key_id=ids.new_id("signing_key"), generated=generated)
            rows[key.id] = key
            sealed[key.id] = k.seal_private_key(self._keyring, generated)
            _check_unique(rows.values())
        for r in plan.removals:
            row = rows.get(r.key_id)
            expired = row is not None and row.retire_until is not None and row.retire_until <= at
            if row is not None and row.state == "retired" and expired:
                del rows[r.key_id]
                sealed.pop(r.key_id, None)
        self._rows, self.sealed = rows, sealed
        self.events.extend((f"oidc.key.{plan.action}", line) for line in plan.summary())
        return self.load()

    def damage(self, key_id: str) -> None:
        """Flip a bit of a sealed private key (as a bad restore or a disk error would)."""
        blob = bytearray(self.sealed[key_id])
        blob[-1] ^= 1
        self.sealed[key_id] = bytes(blob)


def _check_unique(rows: Iterable[SigningKey]) -> None:
    """The table's unique indexes (a violation is an IntegrityError: a RotationConflict)."""
    current = list(rows)
    states = [key.state for key in current]
    for attr in ("version", "kid"):
        values = [getattr(key, attr) for key in current]
        if len(set(values)) != len(values):
            raise RotationConflict(f"two signing keys would share a {attr}; nothing was changed")
    if states.count("active") > 1 or states.count("next") > 1:
        raise RotationConflict("two active or two next signing keys; nothing was changed")


class MemoryIssuer:
    """The real ``Issuer`` on a ``MemoryKeyStore``, with what the tests ask of it."""

    def __init__(
        self,
        policy: RotationPolicy,
        clock: FrozenClock,
        generate: Callable[[Alg], GeneratedKey] = k.generate,
    ) -> None:
        self.clock = clock
        self.store = MemoryKeyStore(KEYRING, generate)
        # The database is only read by the mint route (``locate``): never touched here.
        self.issuer = Issuer(
            Database(create_engine("sqlite://")), self.store, clock, policy, ISSUER, CACHE_TTL
        )
        self.minted = 0

    @property
    def policy(self) -> RotationPolicy:
        return self.issuer.policy

    @policy.setter
    def policy(self, policy: RotationPolicy) -> None:
        self.issuer.policy = policy

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def keys(self) -> list[SigningKey]:
        return self.issuer.keys()

    @property
    def sealed(self) -> dict[str, bytes]:
        return self.store.sealed

    def apply(self, changes: Plan) -> list[SigningKey]:
        """Apply a plan through the issuer; returns the keys created."""
        before = {key.id for key in self.keys}
        self.issuer.apply(changes, OPERATOR, at=self.now)
        return [key for key in self.keys if key.id not in before]

    def signer(self) -> tokens.Signer:
        return self.issuer.signer()

    def jwks(self) -> discovery.Document:
        return self.issuer.snapshot().jwks_doc

    def web(self) -> dict[str, bytes]:
        snap = self.issuer.snapshot()
        return {
            ISSUER + discovery.DISCOVERY_PATH: snap.discovery_doc.body,
            ISSUER + discovery.JWKS_PATH: snap.jwks_doc.body,
        }

    def mint(
        self,
        audience: str | Sequence[str] = "sts.amazonaws.com",
        ttl: timedelta = timedelta(minutes=15),
    ) -> tuple[str, tokens.Claims]:
        """Sign a run's token as ``Issuer.mint`` does, without its access check and audit."""
        self.minted += 1
        claims = tokens.workload_claims(
            issuer=self.issuer.issuer_url,
            audience=audience,
            workload=WORKLOAD,
            run_id=f"run-{self.minted:016d}",
            phase="apply" if self.minted % 2 else "plan",
            now=self.now,
            ttl=ttl,
            max_ttl=self.policy.max_token_ttl,
        )
        return self.signer().sign(claims), claims

    def by_state(self, state: KeyState) -> list[SigningKey]:
        return [key for key in self.keys if key.state == state]
