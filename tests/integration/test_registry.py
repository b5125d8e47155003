"""The registry on both backends: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from services.registry.db import make_engine
from services.registry.entities import DatasetRecord, EpochRecord, JobState, NewVersion
from services.registry.tables import JobRow, utcnow
from services.usecases.jobs import choose_queue
from services.usecases.workers import record_worker_heartbeat, remove_worker


def _new_version(model: str = "m", job_id: uuid.UUID | None = None, sha: str = "a" * 64) -> NewVersion:
    return NewVersion(model, job_id, sha, 123, {"inputs": [], "outputs": []}, {"acc": 0.9}, {"layers": []}, {"epochs": 1}, {"name": "iris"})


def _add_job(uow_factory, model: str = "m") -> uuid.UUID:
    job_id = uuid.uuid4()
    with uow_factory() as uow:
        uow.jobs.add(job_id=job_id, model_name=model, spec={"training": {"epochs": 3}}, queue="cpu")
        uow.commit()
    return job_id


def test_job_is_claimed_once_then_finished(uow_factory) -> None:
    job_id = _add_job(uow_factory)
    with uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="w1", lease_s=60) == 1
        assert uow.jobs.claim(job_id, owner="w2", lease_s=60) is None  # a duplicate delivery claims nothing
        uow.commit()
    with uow_factory() as uow:
        uow.jobs.add_epoch(job_id, EpochRecord(1, 0.5, 0.6, {"loss": 0.5, "val_loss": 0.6}, 0.01))
        uow.jobs.add_epoch(job_id, EpochRecord(2, 0.4, None, {"loss": 0.4}, 0.01))
        assert uow.jobs.finish(job_id, state=JobState.FAILED, error="boom")
        assert not uow.jobs.finish(job_id, state=JobState.SUCCEEDED)  # final states are final
        uow.commit()
    with uow_factory() as uow:
        job = uow.jobs.get(job_id)
    assert job is not None
    assert (job.state, job.attempt, job.error, job.epoch) == (JobState.FAILED, 1, "boom", 2)
    assert [e.train_loss for e in job.history] == [0.5, 0.4]
    assert job.created_at.tzinfo is not None and job.finished_at is not None and job.finished_at.tzinfo is not None
    assert job.created_at <= job.started_at <= job.finished_at  # type: ignore[operator]


def test_a_page_of_jobs_carries_each_ones_last_epoch_without_its_history(uow_factory) -> None:
    trained, fresh = uuid.uuid4(), uuid.uuid4()
    with uow_factory() as uow:
        for job_id in (trained, fresh):
            uow.jobs.add(job_id=job_id, model_name="m", spec={}, queue="cpu")
        for epoch in (1, 2, 3):
            uow.jobs.add_epoch(trained, EpochRecord(epoch, 0.5, None, {"loss": 0.5}, 0.01))
        uow.commit()
    with uow_factory() as uow:
        jobs, count = uow.jobs.page(limit=10, offset=0)
    assert count == 2 and {j.id: (j.epoch, j.history) for j in jobs} == {trained: (3, []), fresh: (0, [])}


def test_a_job_read_after_an_epoch_carries_only_the_epochs_after_it(uow_factory) -> None:
    """What an event stream reads each time the job changes: the epochs it has not sent, not the whole history again."""
    job_id = _add_job(uow_factory)
    with uow_factory() as uow:
        for epoch in (1, 2, 3, 4):
            uow.jobs.add_epoch(job_id, EpochRecord(epoch, 1.0 / epoch, None, {"loss": 1.0 / epoch}, 0.01))
        uow.commit()
    with uow_factory() as uow:
        later, whole, none = (uow.jobs.get(job_id, history_after=after) for after in (2, 0, 4))
    assert later is not None and whole is not None and none is not None
    assert [e.epoch for e in later.history] == [3, 4] and [e.train_loss for e in later.history] == [1 / 3, 1 / 4]
    assert [e.epoch for e in whole.history] == [1, 2, 3, 4] and none.history == []


def test_uncommitted_work_is_rolled_back(uow_factory) -> None:
    with uow_factory() as uow:
        uow.jobs.add(job_id=uuid.uuid4(), model_name="m", spec={}, queue="cpu")
    with uow_factory() as uow:
        assert uow.jobs.page(limit=10, offset=0) == ([], 0)


def test_versions_number_from_one_per_model(uow_factory) -> None:
    with uow_factory() as uow:
        assert [uow.models.add_version(_new_version("a")) for _ in range(3)] == [1, 2, 3]
        assert uow.models.add_version(_new_version("b")) == 1
        uow.commit()
    with uow_factory() as uow:
        assert [(m.name, m.latest_version, m.version_count) for m in uow.models.summaries()] == [("a", 3, 3), ("b", 1, 1)]
        version = uow.models.get_version("a", 2)
        assert version is not None and version.metrics == {"acc": 0.9} and version.created_at.tzinfo == UTC
        assert uow.models.get_version("a", 4) is None


def test_a_job_registers_at_most_one_version(uow_factory) -> None:
    job_id = _add_job(uow_factory)
    with uow_factory() as uow:
        uow.models.add_version(_new_version(job_id=job_id))
        uow.commit()
    with pytest.raises(IntegrityError), uow_factory() as uow:
        uow.models.add_version(_new_version(job_id=job_id))
        uow.commit()
    with uow_factory() as uow:
        assert [v.version for v in uow.models.versions("m")] == [1]
        assert uow.models.version_for_job(job_id).version == 1  # type: ignore[union-attr]


def test_concurrent_registrations_get_distinct_numbers(uow_factory) -> None:
    """Writers race on max + 1; the unique constraint plus a retry gives every one its own number."""
    with uow_factory() as uow:
        uow.models.add_version(_new_version())  # the model row exists, so only the number can race
        uow.commit()
    got: list[int] = []
    barrier = threading.Barrier(6)

    def register() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                with uow_factory() as uow:
                    number = uow.models.add_version(_new_version())
                    uow.commit()
                got.append(number)
                return
            except IntegrityError:
                continue

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [2, 3, 4, 5, 6, 7]


def test_artifact_in_use_tracks_versions(uow_factory) -> None:
    with uow_factory() as uow:
        uow.models.add_version(_new_version(sha="b" * 64))
        uow.commit()
        assert uow.models.artifact_in_use("b" * 64) and not uow.models.artifact_in_use("c" * 64)


def test_auto_device_routes_to_gpu_only_while_a_gpu_worker_is_fresh(uow_factory) -> None:
    with uow_factory() as uow:
        assert choose_queue("auto", uow, stale_after_s=60) == "cpu"
        assert choose_queue("gpu", uow, stale_after_s=60) == "gpu"
    record_worker_heartbeat(uow_factory=uow_factory, name="gpu@host:1", queue="gpu", gpus=2)
    with uow_factory() as uow:
        assert choose_queue("auto", uow, stale_after_s=60) == "gpu"
        assert choose_queue("cpu", uow, stale_after_s=60) == "cpu"
        assert not uow.workers.any_alive(queue="gpu", since=utcnow() + timedelta(seconds=1))  # stale later
    remove_worker(uow_factory=uow_factory, name="gpu@host:1")
    with uow_factory() as uow:
        assert choose_queue("auto", uow, stale_after_s=60) == "cpu"


def test_jobs_counted_by_state(uow_factory) -> None:
    first = _add_job(uow_factory)
    _add_job(uow_factory)
    with uow_factory() as uow:
        uow.jobs.claim(first, owner="w", lease_s=60)
        uow.commit()
        assert uow.jobs.count_by_state() == {"queued": 1, "running": 1}


def _dataset(fingerprint: str = "f" * 64) -> DatasetRecord:
    return DatasetRecord(uuid.uuid4(), "iris.csv", "csv", fingerprint, "s" * 64, 100, 150, (4,), "float32",
                         {"kind": "classification", "class_names": ["a", "b"]}, {"format": "csv"}, utcnow())  # fmt: skip


def test_datasets_are_recorded_found_by_fingerprint_and_protected_by_versions(uow_factory) -> None:
    record = _dataset()
    with uow_factory() as uow:
        uow.datasets.add(record)
        uow.commit()
    with uow_factory() as uow:
        assert uow.datasets.get(record.id) == record
        assert uow.datasets.by_fingerprint("f" * 64) == record and uow.datasets.all() == [record]
        uow.models.add_version(NewVersion("m", None, "a" * 64, 1, {}, {}, {}, {}, {}, dataset_id=record.id))
        uow.commit()
    with uow_factory() as uow:
        assert uow.datasets.versions_using(record.id) == 1
        assert uow.models.get_version("m", 1).dataset_id == record.id  # type: ignore[union-attr]
    with pytest.raises(IntegrityError), uow_factory() as uow:  # the foreign key refuses to orphan a version
        uow.datasets.delete(record.id)
        uow.commit()


def test_one_fingerprint_one_dataset(uow_factory) -> None:
    with uow_factory() as uow:
        uow.datasets.add(_dataset())
        uow.commit()
    with pytest.raises(IntegrityError), uow_factory() as uow:
        uow.datasets.add(_dataset())
        uow.commit()


def test_a_dataset_is_in_use_while_any_active_job_names_it_however_many_there_are(uow_factory, database_url: str) -> None:
    """The oldest of 10,001 active jobs uses it (a check that read a page of 10,000 newest missed it)."""
    used, other = str(uuid.uuid4()), str(uuid.uuid4())
    job_id = _add_job_on(uow_factory, used)
    _add_job_on(uow_factory, other)
    later = utcnow() + timedelta(seconds=1)
    rows = [{"id": uuid.uuid4(), "model_name": "m", "spec": {"data": {"dataset": other}}, "state": "queued", "queue": "cpu",
             "attempt": 0, "created_at": later, "cancel_requested": False} for _ in range(10_000)]  # fmt: skip
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(insert(JobRow), rows)
    engine.dispose()
    with uow_factory() as uow:
        assert uow.jobs.any_active_using(used) and uow.jobs.any_active_using(other)
        assert not uow.jobs.any_active_using(str(uuid.uuid4())) and not uow.jobs.any_active_using("iris")
        assert uow.jobs.claim(job_id, owner="w", lease_s=60) == 1
        assert uow.jobs.any_active_using(used)  # running counts too
        assert uow.jobs.finish(job_id, state=JobState.FAILED, error="x")
        assert not uow.jobs.any_active_using(used)  # an ended job holds nothing


def _add_job_on(uow_factory, dataset: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    with uow_factory() as uow:
        uow.jobs.add(job_id=job_id, model_name="m", spec={"data": {"dataset": dataset}}, queue="cpu")
        uow.commit()
    return job_id
