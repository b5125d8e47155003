"""The use cases on the in-memory registry (tests/fakes.py): submit, cancel, register, sweep and the job state machine,
each in milliseconds (dataset deletion: test_usecases_fake_datasets.py). The SQL repositories keep the same promises on both databases
(tests/integration/test_registry.py, test_sweeper.py)."""

from __future__ import annotations

import inspect
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict, InvalidSpec, KilnError, NotFound, Unavailable
from services.registry import protocols
from services.registry.entities import JobState, NewVersion
from services.registry.job_repository import JobRepository
from services.registry.repositories import ApiKeyRepository, DatasetRepository, ModelRepository, WorkerRepository
from services.registry.states import ACTIVE, FINAL, TRANSITIONS, InvalidTransition, allowed, sources
from services.registry.tables import utcnow
from services.usecases.checkpoint_files import attempt_file
from services.usecases.jobs import cancel_job, get_job
from services.usecases.sweeper import ORPHAN_AGE_S, SweepPolicy, sweep
from services.usecases.versions import register_version
from tests.factories import tiny_job
from tests.fake_broker import Recorder, submit
from tests.fakes import FakeApiKeys, FakeDatasets, FakeJobs, FakeModels, FakeRegistry, FakeWorkers


def _queued(registry: FakeRegistry, *, dataset: str = "digits") -> uuid.UUID:
    job_id = uuid.uuid4()
    with registry.uow_factory() as uow:
        uow.jobs.add(job_id=job_id, model_name="m", spec={"data": {"dataset": dataset}}, queue="cpu")
        uow.commit()
    return job_id


def _running(registry: FakeRegistry, **kwargs: str) -> uuid.UUID:
    job_id = _queued(registry, **kwargs)
    with registry.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="w", lease_s=60) == 1
        uow.commit()
    return job_id


def _state(registry: FakeRegistry, job_id: uuid.UUID) -> JobState:
    return get_job(job_id, uow_factory=registry.uow_factory).state


# The protocol: the fake and the SQL repositories offer the same methods, with the same parameters.


@pytest.mark.parametrize(
    ("protocol", "sql", "fake"),
    [
        (protocols.Jobs, JobRepository, FakeJobs),
        (protocols.Models, ModelRepository, FakeModels),
        (protocols.Workers, WorkerRepository, FakeWorkers),
        (protocols.Datasets, DatasetRepository, FakeDatasets),
        (protocols.ApiKeys, ApiKeyRepository, FakeApiKeys),
    ],
)
def test_the_fake_and_sql_repositories_both_have_every_method_of_the_protocol(protocol: type, sql: type, fake: type) -> None:
    def shape(method: object) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]  # type: ignore[arg-type]

    names = [n for n in vars(protocol) if not n.startswith("_")]
    assert names
    for name in names:
        assert shape(getattr(sql, name)) == shape(getattr(protocol, name)) == shape(getattr(fake, name)), name


# The unit of work.


def test_leaving_the_block_without_commit_discards_every_change(registry: FakeRegistry) -> None:
    with registry.uow_factory() as uow:
        uow.jobs.add(job_id=uuid.uuid4(), model_name="m", spec={}, queue="cpu")
        assert uow.jobs.page(limit=10, offset=0)[1] == 1  # the unit of work sees its own changes
    with registry.uow_factory() as uow:
        assert uow.jobs.page(limit=10, offset=0) == ([], 0)


def test_commit_publishes_and_rollback_forgets_only_what_came_after(registry: FakeRegistry) -> None:
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    with registry.uow_factory() as uow:
        uow.jobs.add(job_id=kept, model_name="m", spec={}, queue="cpu")
        uow.commit()
        uow.jobs.add(job_id=dropped, model_name="m", spec={}, queue="cpu")
        uow.rollback()
        assert uow.jobs.get(dropped) is None and uow.jobs.get(kept) is not None
    with registry.uow_factory() as uow:
        assert [j.id for j in uow.jobs.page(limit=10, offset=0)[0]] == [kept]


def test_a_broken_unique_constraint_raises_integrity_error_and_commits_nothing(registry: FakeRegistry) -> None:
    job_id = _running(registry)
    with registry.uow_factory() as uow:
        uow.models.add_version(NewVersion("m", job_id, "a" * 64, 1, {}, {}, {}, {}, {}))
        uow.commit()
    with pytest.raises(IntegrityError), registry.uow_factory() as uow:
        uow.models.add_version(NewVersion("other", None, "b" * 64, 1, {}, {}, {}, {}, {}))
        uow.models.add_version(NewVersion("m", job_id, "c" * 64, 1, {}, {}, {}, {}, {}))  # one version per job
        uow.commit()
    with registry.uow_factory() as uow:
        assert [m.name for m in uow.models.summaries()] == ["m"]


# The job state machine: one table, obeyed by every move.


def test_final_states_are_final_and_every_other_state_is_reachable_from_queued() -> None:
    assert FINAL == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    assert ACTIVE == {JobState.QUEUED, JobState.RUNNING}
    reached, frontier = {JobState.QUEUED}, [JobState.QUEUED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    assert reached == set(JobState)


def test_no_update_can_be_built_for_a_move_the_table_forbids() -> None:
    assert sources(JobState.RUNNING) == [JobState.QUEUED]
    assert sources(JobState.FAILED) == [JobState.QUEUED, JobState.RUNNING]
    with pytest.raises(InvalidTransition, match="from succeeded to failed"):
        sources(JobState.FAILED, only=JobState.SUCCEEDED)
    with pytest.raises(InvalidTransition):
        JobRepository(session=None).finish(uuid.uuid4(), state=JobState.CANCELLED, from_state=JobState.FAILED)  # type: ignore[arg-type]


def _in_state(registry: FakeRegistry, state: JobState) -> uuid.UUID:
    job_id = _queued(registry) if state == JobState.QUEUED else _running(registry)
    if state in FINAL:
        with registry.uow_factory() as uow:
            assert uow.jobs.finish(job_id, state=state)
            uow.commit()
    return job_id


@pytest.mark.parametrize("source", list(JobState))
@pytest.mark.parametrize("target", sorted(FINAL))
def test_a_job_ends_only_along_the_table(registry: FakeRegistry, source: JobState, target: JobState) -> None:
    job_id = _in_state(registry, source)
    with registry.uow_factory() as uow:
        if not allowed(source, target):
            with pytest.raises(InvalidTransition):
                uow.jobs.finish(job_id, state=target, from_state=source)
        else:
            assert uow.jobs.finish(job_id, state=target, from_state=source)
            other = next(s for s in ACTIVE if s != source)
            assert not uow.jobs.finish(_in_state(registry, other), state=target, from_state=source)  # not in `source`: untouched


def test_a_job_is_claimed_once_and_only_when_queued(registry: FakeRegistry) -> None:
    job_id = _queued(registry)
    with registry.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="w1", lease_s=60) == 1
        assert uow.jobs.claim(job_id, owner="w2", lease_s=60) is None  # a duplicate delivery claims nothing
        assert uow.jobs.finish(job_id, state=JobState.SUCCEEDED, version=1)
        assert uow.jobs.claim(job_id, owner="w3", lease_s=60) is None
        assert not uow.jobs.heartbeat(job_id, 1)  # an ended attempt holds nothing


# Submitting.


def test_a_submitted_job_is_committed_as_queued_before_its_message_is_sent(registry: FakeRegistry) -> None:
    recorder = Recorder(registry)
    job, created = submit(registry, dispatcher=recorder)
    assert created and job.state == JobState.QUEUED and job.attempt == 0
    assert recorder.sent == [(job.id, "cpu")] and recorder.committed_when_sent == [True]


def test_auto_picks_the_gpu_queue_only_while_a_gpu_worker_is_alive(registry: FakeRegistry) -> None:
    assert submit(registry, tiny_job(device="auto"))[0].queue == "cpu"
    with registry.uow_factory() as uow:
        uow.workers.heartbeat(name="gpu-1", queue="gpu", gpus=1)
        uow.commit()
    assert submit(registry, tiny_job(device="auto"))[0].queue == "gpu"


def test_a_repeated_idempotency_key_returns_the_first_job_and_sends_nothing(registry: FakeRegistry) -> None:
    first, created = submit(registry, key="k1")
    recorder = Recorder(registry)
    again, created_again = submit(registry, key="k1", dispatcher=recorder)
    assert created and not created_again and again.id == first.id and recorder.sent == []
    with pytest.raises(Conflict, match="another request body") as err:
        submit(registry, tiny_job(training={"epochs": 3}), key="k1")
    assert err.value.field == "Idempotency-Key"


def test_a_job_the_broker_cannot_take_fails_and_the_client_is_told(registry: FakeRegistry) -> None:
    with pytest.raises(Unavailable):
        submit(registry, dispatcher=Recorder(registry, fail=True))
    with registry.uow_factory() as uow:
        (job,), _ = uow.jobs.page(limit=10, offset=0)
    assert job.state == JobState.FAILED and "could not enqueue" in (job.error or "")


def test_a_job_on_an_unknown_upload_is_refused_and_records_nothing(registry: FakeRegistry) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(InvalidSpec, match="no uploaded dataset") as err:
        submit(registry, tiny_job(data={"dataset": missing}))
    assert err.value.field == "data.dataset" and registry.commits == 0


# Cancelling.


def test_cancelling_a_queued_job_ends_it_at_once(registry: FakeRegistry) -> None:
    job_id = _queued(registry)
    job = cancel_job(job_id, uow_factory=registry.uow_factory)
    assert job.state == JobState.CANCELLED and job.error == "cancelled before it started"


def test_cancelling_a_running_job_asks_it_to_stop(registry: FakeRegistry) -> None:
    job_id = _running(registry)
    job = cancel_job(job_id, uow_factory=registry.uow_factory)
    assert job.state == JobState.RUNNING and job.cancel_requested


def test_a_finished_or_unknown_job_cannot_be_cancelled(registry: FakeRegistry) -> None:
    job_id = _in_state(registry, JobState.SUCCEEDED)
    with pytest.raises(Conflict, match="already succeeded"):
        cancel_job(job_id, uow_factory=registry.uow_factory)
    with pytest.raises(NotFound):
        cancel_job(uuid.uuid4(), uow_factory=registry.uow_factory)


# Registering.


def _version_of(job_id: uuid.UUID | None, model: str = "m") -> NewVersion:
    return NewVersion(model, job_id, "a" * 64, 10, {}, {"acc": 0.9}, {}, {}, {})


def test_a_job_registers_its_version_and_succeeds_in_one_transaction(registry: FakeRegistry) -> None:
    assert register_version(_version_of(None), uow_factory=registry.uow_factory) == 1  # an upload: no job
    job_id = _running(registry)
    assert register_version(_version_of(job_id), uow_factory=registry.uow_factory, job_attempt=1) == 2
    job = get_job(job_id, uow_factory=registry.uow_factory)
    assert (job.state, job.version) == (JobState.SUCCEEDED, 2)
    assert register_version(_version_of(job_id), uow_factory=registry.uow_factory, job_attempt=1) == 2  # a duplicate delivery


def test_a_taken_back_attempt_registers_nothing(registry: FakeRegistry) -> None:
    job_id = _running(registry)
    with registry.uow_factory() as uow:
        assert uow.jobs.requeue(job_id, 1, silent_since=utcnow() + timedelta(seconds=1))
        assert uow.jobs.claim(job_id, owner="w2", lease_s=60) == 2
        uow.commit()
    with pytest.raises(KilnError, match="stopped running"):
        register_version(_version_of(job_id), uow_factory=registry.uow_factory, job_attempt=1)
    with registry.uow_factory() as uow:
        assert uow.models.versions("m") == [] and not uow.models.exists("m")
    assert register_version(_version_of(job_id), uow_factory=registry.uow_factory, job_attempt=2) == 1
    with pytest.raises(KilnError, match="another attempt"):
        register_version(_version_of(job_id), uow_factory=registry.uow_factory, job_attempt=1)


# Sweeping.


def _sweep(registry: FakeRegistry, tmp_path: Path, recorder: Recorder, *, waiting: dict[str, int] | None = None, **policy: float):
    values = {"max_attempts": 3, "stale_after_s": 0.0, "redispatch_after_s": 60.0} | policy
    return sweep(uow_factory=registry.uow_factory, dispatcher=recorder, waiting=lambda: waiting or {},
                 policy=SweepPolicy(checkpoints=tmp_path, **values))  # type: ignore[arg-type]  # fmt: skip


def test_a_silent_running_job_is_queued_again_and_resent(registry: FakeRegistry, tmp_path: Path) -> None:
    job_id, recorder = _running(registry), Recorder(registry)
    report = _sweep(registry, tmp_path, recorder)
    assert report.requeued == [job_id] and recorder.sent == [(job_id, "cpu")] and _state(registry, job_id) == JobState.QUEUED
    assert _sweep(registry, tmp_path, Recorder(registry), stale_after_s=3600).requeued == []  # queued now: nothing to take back


def test_a_job_with_a_fresh_heartbeat_is_left_alone(registry: FakeRegistry, tmp_path: Path) -> None:
    job_id = _running(registry)
    report = _sweep(registry, tmp_path, Recorder(registry), stale_after_s=3600)
    assert report.requeued == report.failed == [] and _state(registry, job_id) == JobState.RUNNING


def test_a_job_that_loses_its_worker_every_time_fails_after_max_attempts(registry: FakeRegistry, tmp_path: Path) -> None:
    job_id = _running(registry)
    for attempt in (2, 3):
        assert _sweep(registry, tmp_path, Recorder(registry)).requeued == [job_id]
        with registry.uow_factory() as uow:
            assert uow.jobs.claim(job_id, owner="w", lease_s=60) == attempt
            uow.commit()
    recorder = Recorder(registry)
    assert _sweep(registry, tmp_path, recorder).failed == [job_id] and recorder.sent == []
    job = get_job(job_id, uow_factory=registry.uow_factory)
    assert job.state == JobState.FAILED and "gave up after 3 attempts" in (job.error or "")


def test_a_lost_job_whose_cancel_was_asked_ends_cancelled(registry: FakeRegistry, tmp_path: Path) -> None:
    job_id = _running(registry)
    cancel_job(job_id, uow_factory=registry.uow_factory)
    assert _sweep(registry, tmp_path, Recorder(registry)).cancelled == [job_id]
    assert _state(registry, job_id) == JobState.CANCELLED


def test_a_lost_message_is_resent_only_when_its_queue_is_empty(registry: FakeRegistry, tmp_path: Path) -> None:
    job_id = _queued(registry)
    for waiting in ({}, {"cpu": 1}):  # the broker cannot be asked, or messages are still waiting
        recorder = Recorder(registry)
        assert _sweep(registry, tmp_path, recorder, waiting=waiting, redispatch_after_s=0).redispatched == [] and recorder.sent == []
    recorder = Recorder(registry)
    assert _sweep(registry, tmp_path, recorder, waiting={"cpu": 0}, redispatch_after_s=0).redispatched == [job_id]
    assert recorder.sent == [(job_id, "cpu")]
    assert _sweep(registry, tmp_path, Recorder(registry), waiting={"cpu": 0}, redispatch_after_s=60).redispatched == []  # just sent


def test_checkpoints_of_ended_jobs_go_and_those_of_active_jobs_stay(registry: FakeRegistry, tmp_path: Path) -> None:
    active, ended = _running(registry), _in_state(registry, JobState.FAILED)
    old = time.time() - ORPHAN_AGE_S - 1
    for job_id in (active, ended):
        path = attempt_file(tmp_path, job_id, 1)
        path.write_bytes(b"checkpoint")
        os.utime(path, (old, old))
    report = _sweep(registry, tmp_path, Recorder(registry), stale_after_s=3600)
    assert report.removed_checkpoints == [attempt_file(tmp_path, ended, 1)]
    assert attempt_file(tmp_path, active, 1).exists()
