"""An in-memory issuer that applies lifecycle plans the way the database layer will: sealed
private keys erased when a key retires or is revoked, a cached signer dropped on every change
(as on NOTIFY), and JWKS and discovery rebuilt from the metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.identity import discovery, keys, lifecycle, tokens
from cairn.identity.keys import Alg, GeneratedKey, SigningKey
from cairn.identity.lifecycle import RotationPolicy
from cairn.identity.plan import NewKey, Plan, apply_plan

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


class MemoryIssuer:
    def __init__(
        self,
        policy: RotationPolicy,
        clock: FrozenClock,
        generate: Callable[[Alg], GeneratedKey] = keys.generate,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.generate = generate
        self.keys: list[SigningKey] = []
        self.sealed: dict[str, bytes] = {}
        self._signer: tokens.Signer | None = None
        self.minted = 0

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def apply(self, changes: Plan) -> list[SigningKey]:
        """Apply a plan; returns the keys created."""
        created: list[SigningKey] = []

        def make(new: NewKey) -> SigningKey:
            generated = self.generate(new.alg)
            key = new.to_signing_key(key_id=f"key-{new.version}", generated=generated)
            self.sealed[key.id] = keys.seal_private_key(KEYRING, generated)
            created.append(key)
            return key

        self.keys = apply_plan(self.keys, changes, make)
        for t in changes.transitions:
            if t.drop_private:
                self.sealed.pop(t.key_id, None)
        for r in changes.removals:
            self.sealed.pop(r.key_id, None)
        if not changes.empty:
            self._signer = None
        return created

    def signer(self) -> tokens.Signer:
        if self._signer is None:
            active = lifecycle.signing_key(self.keys)
            private = keys.open_private_key(KEYRING, active, self.sealed[active.id])
            self._signer = tokens.Signer(active, private)
        return self._signer

    def jwks(self) -> discovery.Document:
        return discovery.jwks(self.keys, self.now)

    def web(self) -> dict[str, bytes]:
        config = discovery.openid_configuration(ISSUER, signing_algs=keys.ALGS)
        return {
            ISSUER + discovery.DISCOVERY_PATH: config.body,
            ISSUER + discovery.JWKS_PATH: self.jwks().body,
        }

    def mint(
        self,
        audience: str | Sequence[str] = "sts.amazonaws.com",
        ttl: timedelta = timedelta(minutes=15),
    ) -> tuple[str, tokens.Claims]:
        self.minted += 1
        claims = tokens.workload_claims(
            issuer=ISSUER,
            audience=audience,
            workload=WORKLOAD,
            run_id=f"run-{self.minted:016d}",
            phase="apply" if self.minted % 2 else "plan",
            now=self.now,
            ttl=ttl,
            max_ttl=self.policy.max_token_ttl,
        )
        return self.signer().sign(claims), claims

    def by_state(self, state: keys.KeyState) -> list[SigningKey]:
        return [k for k in self.keys if k.state == state]
