"""The Alembic migrations build exactly the schema the models describe, on SQLite and on
PostgreSQL: after running every migration, autogenerate finds nothing to add, drop or alter.
That equality is what lets ``upgrade`` create an empty database straight from the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, String, inspect

from cairn.db.engine import make_engine
from cairn.migrations.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    is_current,
    upgrade,
)
from cairn.migrations.schema import metadata
from tests.support.postgres import PostgresCluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'schema.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg")
        url = cluster.create_database("schema")
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        diff: list[Any] = compare_metadata(context, metadata)
        return diff


def test_fresh_database_is_not_current(engine: Engine) -> None:
    assert current_revision(engine) is None
    assert not is_current(engine)
    assert head_revision(engine) is not None


def test_every_migration_in_order_gives_the_models_schema(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "head")
    assert current_revision(engine) == head_revision(engine)
    assert is_current(engine)
    assert schema_differences(engine) == []


def test_an_empty_database_is_created_from_the_models_at_head(engine: Engine) -> None:
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    assert schema_differences(engine) == []
    # Alembic agrees: nothing left to apply.
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision(engine)


def test_upgrade_twice_is_harmless(engine: Engine) -> None:
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables
    assert set(metadata.tables) <= tables
    assert schema_differences(engine) == []


def test_a_model_change_without_a_migration_would_be_caught(engine: Engine) -> None:
    """The comparison above is not vacuous: a column the migrations lack is reported."""
    upgrade(engine)
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["workspaces"].append_column(Column("not_migrated", String(10)))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), changed)
    assert [d[0] for d in diff] == ["add_column"]
    assert diff[0][3].name == "not_migrated"
