"""Integration fixtures: two `cairn serve` processes sharing one database.

`replicas` is parametrised like the conftest `server`: `sqlite` and `postgres` (two replicas
on one PostgreSQL database, the same CAIRN_SECRET_KEY and CAIRN_ADMIN_TOKEN, and blobs in the
database, since the replicas have no shared disk). A second `cairn serve` on one SQLite data
directory is refused at start (finding L4), so on `sqlite` both entries are the same server:
the races then run between the threads of one process (WAL + BEGIN IMMEDIATE). All plain
HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, TEST_SECRET_KEY
from tests.support.app import SECRET_KEY
from tests.support.postgres import PostgresCluster
from tests.support.server import CairnServer


def _replica_set(
    request: pytest.FixtureRequest, backend: str, admin_token: str, root: Path
) -> list[CairnServer]:
    if backend == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg")
        database_url = cluster.create_database("replicas")
        return [
            CairnServer(
                data_dir=root / f"replica-{i}",
                database_url=database_url,
                plain_http=True,
                admin_token=admin_token,
                env={"CAIRN_SECRET_KEY": TEST_SECRET_KEY, "CAIRN_BLOB_STORE": "database"},
            )
            for i in range(2)
        ]
    only = CairnServer(data_dir=root / "data-dir", plain_http=True, admin_token=admin_token)
    return [only, only]


@pytest.fixture(scope="module", params=BACKENDS)
def replicas(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[CairnServer]]:
    """Two running servers on one database, shared by the tests of a module (each makes its
    own organization); started one after the other (the first creates schema and admin)."""
    root = tmp_path_factory.mktemp(f"replicas-{request.param}")
    servers = _replica_set(request, request.param, admin_token, root)
    try:
        for i, srv in enumerate(servers):
            if all(other is not srv for other in servers[:i]):
                srv.start()
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """An in-process cairn's data directory, admin token and settings, on SQLite and on a
    fresh PostgreSQL database (for tests whose subprocesses open the same database)."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    settings: dict[str, Any] = {"secret_key": SECRET_KEY}
    if request.param == "postgres":
        settings["database_url"] = request.getfixturevalue("pg").create_database()
    return {"dir": tmp_path / "data", "admin": admin_token, "settings": settings}
