"""Signing keys in the database: load the key set, apply a rotation plan in one transaction
(with its audit events and a PostgreSQL ``NOTIFY``), create the first key set race-free."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import ids
from cairn.audit.log import Actor, record
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.db.notify import notify
from cairn.identity import keys as k
from cairn.identity.errors import KeySetCorrupt, RotationConflict
from cairn.identity.model import OidcSigningKey
from cairn.identity.plan import NewKey, Plan

log = logging.getLogger("cairn.identity")

NOTIFY_CHANNEL = "cairn_oidc_keys"


def to_signing_key(row: OidcSigningKey) -> k.SigningKey:
    return k.SigningKey(
        id=row.id,
        version=row.version,
        kid=row.kid,
        alg=k.as_alg(row.alg),
        state=k.as_state(row.state),
        created_at=row.created_at,
        published_at=row.published_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        retire_until=row.retire_until,
        revoked_at=row.revoked_at,
        public_jwk=json.loads(row.public_jwk),
    )


class KeyStore(Protocol):
    """Where the issuer keeps its signing keys: ``SqlKeyStore`` (the unit tests use an
    in-memory fake with the same behaviour)."""

    def load(self) -> list[k.SigningKey]:
        """The key set, ordered by version."""
        ...

    def open_active(self) -> tuple[list[k.SigningKey], k.PrivateKey | None]:
        """The key set and the opened private key of the active key (None if it has none)."""
        ...

    def check_promotable(self, plan: Plan) -> None:
        """Raise unless the sealed private key of every key ``plan`` makes active opens."""
        ...

    def apply(self, plan: Plan, *, actor: Actor, at: datetime) -> list[k.SigningKey]:
        """Apply ``plan`` atomically (RotationConflict: nothing changed); the new key set."""
        ...


class SqlKeyStore:
    """The only code that reads or writes ``oidc_signing_keys``."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self._db = db
        self._keyring = keyring

    def load(self) -> list[k.SigningKey]:
        with self._db.unit_of_work() as s:
            rows = s.scalars(select(OidcSigningKey).order_by(OidcSigningKey.version))
            return [to_signing_key(r) for r in rows]

    def open_active(self) -> tuple[list[k.SigningKey], k.PrivateKey | None]:
        """The key set and the opened private key of the active key, read together."""
        with self._db.unit_of_work() as s:
            rows = list(s.scalars(select(OidcSigningKey).order_by(OidcSigningKey.version)))
        keys = [to_signing_key(r) for r in rows]
        for row, key in zip(rows, keys, strict=True):
            if key.state == "active" and row.sealed_private_key is not None:
                return keys, k.open_private_key(self._keyring, key, row.sealed_private_key)
        return keys, None

    def check_promotable(self, plan: Plan) -> None:
        """Before a plan makes a key active: its sealed private key must open, or nothing may
        change (a damaged key found after promotion would stop every mint)."""
        promoted = {t.key_id for t in plan.transitions if t.to_state == "active"}
        if not promoted:
            return
        with self._db.unit_of_work() as s:
            rows = list(s.scalars(select(OidcSigningKey).where(OidcSigningKey.id.in_(promoted))))
        for row in rows:
            if row.sealed_private_key is None:
                raise KeySetCorrupt(f"signing key version {row.version} has no private key")
            k.open_private_key(self._keyring, to_signing_key(row), row.sealed_private_key)

    def apply(self, plan: Plan, *, actor: Actor, at: datetime) -> list[k.SigningKey]:
        """Apply ``plan`` atomically. Raises RotationConflict when another rotation changed the
        keys first (nothing is changed then)."""
        # Key generation (RSA: tens of ms) happens before the transaction opens.
        made = [(new, k.generate(new.alg)) for new in plan.creates]
        with self._db.unit_of_work(write=True) as s:
            try:
                self._apply(s, plan, made, at)
                for line in plan.summary():
                    record(
                        s,
                        at=at,
                        actor=actor,
                        action=f"oidc.key.{plan.action}",
                        subject=line,
                        forced=plan.forced,
                    )
                # Delivered to every replica's listener (PostgreSQL) only if this commits.
                kid = next((g.kid for n, g in made if n.state == "active"), "")
                notify(s, NOTIFY_CHANNEL, kid)
                s.commit()
            except IntegrityError:
                raise RotationConflict(
                    "another rotation changed the signing keys at the same moment; "
                    "nothing was changed — list the keys and retry if still needed"
                ) from None
        log.info("signing keys changed", extra={"action": plan.action, "changes": plan.summary()})
        return self.load()

    def _apply(
        self,
        s: Session,
        plan: Plan,
        made: Sequence[tuple[NewKey, k.GeneratedKey]],
        at: datetime,
    ) -> None:
        for t in plan.transitions:
            values: dict[str, object] = {"state": t.to_state}
            if t.to_state == "active":
                values["activated_at"] = t.at
            elif t.to_state == "retired":
                values.update(retired_at=t.at, retire_until=t.retire_until)
            elif t.to_state == "revoked":
                values["revoked_at"] = t.at
            if t.drop_private:
                values["sealed_private_key"] = None
            stmt = (
                update(OidcSigningKey)
                .where(OidcSigningKey.id == t.key_id, OidcSigningKey.state == t.from_state)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if affected(s.execute(stmt)) != 1:
                raise RotationConflict(
                    f"signing key version {t.version} is no longer {t.from_state}: another "
                    "rotation happened first; nothing was changed"
                )
            s.flush()
        for new, gen in made:
            key = new.to_signing_key(key_id=ids.new_id("signing_key"), generated=gen)
            s.add(
                OidcSigningKey(
                    id=key.id,
                    version=key.version,
                    kid=key.kid,
                    alg=key.alg,
                    state=key.state,
                    public_jwk=json.dumps(dict(key.public_jwk), separators=(",", ":")),
                    sealed_private_key=k.seal_private_key(self._keyring, gen),
                    created_at=key.created_at,
                    published_at=key.published_at,
                    activated_at=key.activated_at,
                )
            )
            s.flush()
        for r in plan.removals:
            s.execute(
                delete(OidcSigningKey).where(
                    OidcSigningKey.id == r.key_id,
                    OidcSigningKey.state == "retired",
                    OidcSigningKey.retire_until <= at,
                )
            )
