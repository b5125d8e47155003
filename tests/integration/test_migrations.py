"""Alembic is the schema authority: it upgrades, downgrades, and matches the tables the code queries."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from services.registry.db import make_engine
from services.registry.tables import Base
from tests.conftest import migrate


def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    migrate(database_url, "base", down=True)
    engine = make_engine(database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(database_url)
    assert {"jobs", "job_epochs", "models", "model_versions", "workers"} <= set(inspect(engine).get_table_names())
    engine.dispose()
