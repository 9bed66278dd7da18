"""Fixtures for the relying-party tests: a migrated SQLite database per test, a keyring, a
clock that starts at the real time (the real OP signs with the real time) and can jump, the
in-process FakeIdp, and the session's real OpenID Provider (``oidc_op``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import literal_column, select

from cairn.audit.model import AuditEvent
from cairn.auth.idp import IdpClient, IdpSettings, JwksCache
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database, make_engine
from cairn.migrations.migrate import upgrade
from tests.idp.fakes import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeIdp
from tests.support.oidc_op import OidcOp, oidc_op  # noqa: F401 - the session fixture

TEST_MASTER_KEY = "idp-tests-master-key-0123456789abcdef"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cairn.db'}")
    upgrade(engine)
    database = Database(engine)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(TEST_MASTER_KEY)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def fake_idp(clock: FrozenClock) -> FakeIdp:
    return FakeIdp(clock=clock)


@pytest.fixture
def fake_settings(fake_idp: FakeIdp) -> IdpSettings:
    return IdpSettings(
        issuer=fake_idp.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
    )


@pytest.fixture
def fake_client(
    fake_idp: FakeIdp,
    fake_settings: IdpSettings,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> Iterator[IdpClient]:
    with fake_idp.client() as http:
        client = IdpClient(fake_settings, db, keyring, clock, http)
        client.check()
        yield client


@pytest.fixture
def op_settings(oidc_op: OidcOp) -> IdpSettings:  # noqa: F811 - the fixture imported above
    return IdpSettings(
        issuer=oidc_op.issuer,
        client_id=oidc_op.client_id,
        client_secret=oidc_op.client_secret,
        redirect_uri=oidc_op.redirect_uri,
    )


@pytest.fixture
def op_client_factory(
    op_settings: IdpSettings, db: Database, keyring: Keyring, clock: FrozenClock
) -> Iterator[Callable[..., IdpClient]]:
    """IdpClients for the real OP, each with its own HTTP client and JWKS cache."""
    made: list[httpx.Client] = []

    def make(**http_kwargs: Any) -> IdpClient:
        http = httpx.Client(timeout=10, **http_kwargs)
        made.append(http)
        client = IdpClient(op_settings, db, keyring, clock, http, jwks=JwksCache(http, clock))
        client.check()
        return client

    try:
        yield make
    finally:
        for http in made:
            http.close()


def audit_events(db: Database, action: str = "auth.login.idp") -> list[AuditEvent]:
    """The audit events of ``action``, oldest first (SQLite insertion order breaks ties)."""
    with db.unit_of_work() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.at, literal_column("rowid"))
            )
        )
