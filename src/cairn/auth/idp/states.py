"""Pending IdP logins (RP-01): one ``login_states`` row per click on "log in", consumed once.

The row is keyed by the keyed hash of ``state``; the ``nonce`` is kept only as a keyed hash
and the PKCE verifier sealed (AES-256-GCM, bound to the row), so a database dump completes no
login. Consumption is one conditional UPDATE (``used_at IS NULL AND expires_at > now``): of two
callbacks with the same state, on any replica, exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cairn.auth.idp.errors import LoginStateInvalid
from cairn.auth.model import LoginState
from cairn.clock import as_utc
from cairn.db.engine import affected

STATE_TTL = timedelta(minutes=10)
# Used and expired rows are kept a while so a late replay is told "already used"/"expired".
KEEP_EXPIRED = timedelta(hours=1)
MAX_RESUME = 2000  # login_states.resume


def verifier_aad(state_hash: str) -> str:
    """Associated data that binds a sealed PKCE verifier to its row."""
    return f"login_state:{state_hash}"


@dataclass(frozen=True)
class Consumed:
    """What the callback needs from a consumed row."""

    nonce_hash: str
    sealed_verifier: bytes
    resume: str


def add(
    s: Session,
    *,
    state_hash: str,
    nonce_hash: str,
    sealed_verifier: bytes,
    resume: str,
    now: datetime,
    ttl: timedelta = STATE_TTL,
    client_key: str | None = None,
) -> None:
    s.add(
        LoginState(
            state_hash=state_hash,
            nonce_hash=nonce_hash,
            sealed_verifier=sealed_verifier,
            resume=resume,
            client_key=client_key,
            created_at=now,
            expires_at=now + ttl,
            used_at=None,
        )
    )


def pending(s: Session, client_key: str, now: datetime) -> tuple[int, datetime | None]:
    """How many logins ``client_key`` has pending (not used, not expired), and when the oldest
    of them expires."""
    count, oldest = s.execute(
        select(func.count(), func.min(LoginState.expires_at)).where(
            LoginState.client_key == client_key,
            LoginState.expires_at > now,
            LoginState.used_at.is_(None),
        )
    ).one()
    return int(count or 0), as_utc(oldest)


def purge(s: Session, now: datetime) -> int:
    """Delete rows that expired more than KEEP_EXPIRED ago."""
    result = s.execute(delete(LoginState).where(LoginState.expires_at < now - KEEP_EXPIRED))
    return affected(result)


def consume(s: Session, state_hash: str, now: datetime) -> Consumed:
    """Mark the row used, atomically; raise LoginStateInvalid (unknown, used, expired)."""
    won = affected(
        s.execute(
            update(LoginState)
            .where(
                LoginState.state_hash == state_hash,
                LoginState.used_at.is_(None),
                LoginState.expires_at > now,
            )
            .values(used_at=now)
        )
    )
    row = s.scalar(select(LoginState).where(LoginState.state_hash == state_hash))
    if won == 1 and row is not None:
        return Consumed(row.nonce_hash, row.sealed_verifier, row.resume)
    if row is None:
        raise LoginStateInvalid(
            "this login link is unknown or too old; start the login again", reason="unknown"
        )
    if row.used_at is not None:
        raise LoginStateInvalid(
            "this login was already completed (the callback was replayed); start the login again",
            reason="replayed",
        )
    raise LoginStateInvalid(
        "this login took longer than 10 minutes and has expired; start the login again",
        reason="expired",
    )
