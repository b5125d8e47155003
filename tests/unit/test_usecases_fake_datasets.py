"""Deleting a dataset, on the in-memory registry (tests/fakes.py): refused while a job, a study or a version depends on
it. The SQL repositories keep the same promises on both databases (tests/integration/test_datasets_api.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.data.store import DatasetStore
from services.errors import Conflict, NotFound
from services.registry.entities import DatasetRecord, NewVersion
from services.registry.tables import utcnow
from services.usecases.datasets import delete_dataset
from services.usecases.jobs import cancel_job
from tests.factories import tiny_job
from tests.fake_broker import submit
from tests.fakes import FakeRegistry


def _upload(registry: FakeRegistry) -> DatasetRecord:
    record = DatasetRecord(uuid.uuid4(), "d.csv", "csv", uuid.uuid4().hex, "s" * 64, 100, 200, (64,), "float32",
                           {"kind": "classification", "class_names": [str(i) for i in range(10)]}, {}, utcnow())  # fmt: skip
    with registry.uow_factory() as uow:
        uow.datasets.add(record)
        uow.commit()
    return record


def test_a_dataset_an_active_job_uses_cannot_be_deleted_however_the_job_spelt_its_id(registry: FakeRegistry, tmp_path: Path) -> None:
    record, store = _upload(registry), DatasetStore(tmp_path)
    job, _ = submit(registry, tiny_job(data={"dataset": str(record.id).upper().replace("-", "")}))
    with pytest.raises(Conflict, match="a queued or running job uses"):
        delete_dataset(str(record.id), uow_factory=registry.uow_factory, store=store)
    cancel_job(job.id, uow_factory=registry.uow_factory)
    delete_dataset(str(record.id), uow_factory=registry.uow_factory, store=store)
    with registry.uow_factory() as uow:
        assert uow.datasets.get(record.id) is None


def test_a_dataset_a_running_study_trains_on_cannot_be_deleted(registry: FakeRegistry, tmp_path: Path) -> None:
    record, store = _upload(registry), DatasetStore(tmp_path)
    with registry.uow_factory() as uow:
        uow.studies.add(study_id=uuid.uuid4(), name="s", model_name="m", spec={"job": tiny_job(data={"dataset": str(record.id)})})
        uow.commit()
    with pytest.raises(Conflict, match="a running study trains on"):
        delete_dataset(str(record.id), uow_factory=registry.uow_factory, store=store)


def test_a_dataset_a_version_was_trained_on_or_a_builtin_cannot_be_deleted(registry: FakeRegistry, tmp_path: Path) -> None:
    record, store = _upload(registry), DatasetStore(tmp_path)
    with registry.uow_factory() as uow:
        uow.models.add_version(NewVersion("m", None, "a" * 64, 1, {}, {}, {}, {}, {}, dataset_id=record.id))
        uow.commit()
    with pytest.raises(Conflict, match="1 registered model version"):
        delete_dataset(str(record.id), uow_factory=registry.uow_factory, store=store)
    with pytest.raises(Conflict, match="built-in"):
        delete_dataset("digits", uow_factory=registry.uow_factory, store=store)
    with pytest.raises(NotFound):
        delete_dataset(str(uuid.uuid4()), uow_factory=registry.uow_factory, store=store)
