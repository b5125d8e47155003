"""Alembic is the schema authority: it upgrades, downgrades, and matches the tables the code queries."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, update

from services.registry.db import make_engine
from services.registry.entities import DatasetRecord
from services.registry.tables import Base, DatasetRow, ModelAliasRow, ModelRow, ModelVersionRow, utcnow
from services.registry.unit_of_work import connect_registry
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


def test_sizes_are_64_bit_and_the_upgrade_keeps_rows_other_tables_point_to(database_url: str) -> None:
    """0007 retypes two columns (SQLite copies both tables): a version, its alias and its dataset survive it, and
    sizes past 2 GiB fit after it."""
    migrate(database_url, "0006", down=True)
    engine, uow_factory = connect_registry(database_url)
    dataset = DatasetRecord(uuid.uuid4(), "big.npz", "npz", "f" * 64, "s" * 64, 100, 10, (4,), "float32", {"kind": "regression"}, {},
                            utcnow())  # fmt: skip
    with uow_factory() as uow:
        uow.datasets.add(dataset)
        uow.commit()
    with engine.begin() as conn:  # the columns 0006 has: today's ORM would write later ones too
        conn.execute(insert(ModelRow).values(id=1, name="m", created_at=utcnow()))
        conn.execute(insert(ModelVersionRow.__table__).values(
            model_id=1, version=1, job_id=None, artifact_sha256="a" * 64, artifact_size=123, signature={}, metrics={}, spec={},
            hyperparameters={}, dataset={}, dataset_id=dataset.id, labels=None, preprocessing=None, serving=None,
            created_at=utcnow()))  # fmt: skip
        conn.execute(insert(ModelAliasRow.__table__).values(model_id=1, alias="production", version=1, updated_at=utcnow()))
    migrate(database_url)
    big = 5 * 2**30
    with engine.begin() as conn:
        conn.execute(update(ModelVersionRow).values(artifact_size=big))
        conn.execute(update(DatasetRow).values(size=big + 1))
    with uow_factory() as uow:
        assert uow.models.aliases("m") == {"production": 1}
        assert uow.models.get_version("m", 1).artifact_size == big  # type: ignore[union-attr]
        assert uow.datasets.get(dataset.id).size == big + 1  # type: ignore[union-attr]
        assert uow.datasets.versions_using(dataset.id) == 1
    engine.dispose()


def test_0008_gives_trained_versions_the_task_their_job_implied(database_url: str) -> None:
    migrate(database_url, "0007", down=True)
    engine, uow_factory = connect_registry(database_url)
    rows = [  # (job_id, hyperparameters, dataset): an autoencoder, a regressor, a classifier, an upload
        (uuid.uuid4(), {"loss": "mse"}, {"spec": {"targets": "inputs"}}),
        (uuid.uuid4(), {"loss": "huber"}, {"spec": {"targets": "labels"}}),
        (uuid.uuid4(), {"loss": "sparse_categorical_crossentropy"}, {"spec": {}}), (None, {}, {"source": "upload"}),
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(ModelRow).values(id=1, name="m", created_at=utcnow()))
        for number, (job_id, hyperparameters, dataset) in enumerate(rows, start=1):
            conn.execute(insert(ModelVersionRow.__table__).values(
                model_id=1, version=number, job_id=job_id, artifact_sha256="a" * 64, artifact_size=1, signature={}, metrics={},
                spec={}, hyperparameters=hyperparameters, dataset=dataset, created_at=utcnow()))  # fmt: skip
    migrate(database_url)
    with uow_factory() as uow:
        assert [v.task for v in uow.models.versions("m")] == ["autoencoder", "regressor", "classifier", None]
    engine.dispose()
