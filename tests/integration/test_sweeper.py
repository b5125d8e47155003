"""Leases, fencing and the sweeper on a real registry (both backends), with real training in-process.

The broker is the one thing stood in for here (a recorder of what would be sent); the e2e fault
tests run the same paths with real Redis, PostgreSQL and worker processes.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from datetime import timedelta

import pytest

import services.usecases.training as training_usecase
from services.errors import KilnError
from services.registry.entities import JobState, NewVersion
from services.registry.tables import utcnow
from services.training import checkpoint
from services.usecases.checkpoint_files import attempt_file, files_by_job
from services.usecases.jobs import cancel_job, get_job
from services.usecases.sweeper import SweepPolicy, sweep
from services.usecases.training import WorkerContext, run_job
from services.usecases.versions import register_version
from tests.factories import tiny_job
from tests.integration.conftest import queue_job


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, str]] = []

    def send(self, job_id: uuid.UUID, *, queue: str) -> None:
        self.sent.append((job_id, queue))


class Crash(BaseException):
    """The worker process dying mid-job: not an Exception, so nothing on the way handles it (the epoch writer, on whose
    thread an epoch is recorded, hands it on to the training thread)."""


def _policy(ctx: WorkerContext, **overrides: float) -> SweepPolicy:
    values = {"max_attempts": 3, "stale_after_s": 0.0, "redispatch_after_s": 60.0} | overrides
    return SweepPolicy(checkpoints=ctx.checkpoints, **values)  # type: ignore[arg-type]


def _sweep(ctx: WorkerContext, recorder: Recorder, waiting: dict[str, int] | None = None, **policy: float):
    return sweep(uow_factory=ctx.uow_factory, dispatcher=recorder, waiting=lambda: waiting or {}, policy=_policy(ctx, **policy))


def _crash_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    record = training_usecase._record_epoch

    def dying(job_id, attempt, model_name, result, ctx) -> None:  # type: ignore[no-untyped-def]
        record(job_id, attempt, model_name, result, ctx)
        if result.epoch == epoch:
            raise Crash

    monkeypatch.setattr(training_usecase, "_record_epoch", dying)


def test_a_crashed_attempt_is_taken_back_and_resumes_from_its_checkpoint(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    body = tiny_job(training={"epochs": 4})
    straight = queue_job(ctx, body)
    run_job(straight, ctx)

    job_id = queue_job(ctx, body)
    _crash_after_epoch(monkeypatch, 2)
    with pytest.raises(Crash):
        run_job(job_id, ctx)
    monkeypatch.undo()
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.checkpoint_epoch, job.checkpoint_attempt, job.epoch) == (JobState.RUNNING, 1, 2, 1, 2)
    assert attempt_file(ctx.checkpoints, job_id, 1).exists()

    recorder = Recorder()
    report = _sweep(ctx, recorder)
    assert report.requeued == [job_id] and recorder.sent == [(job_id, "cpu")]
    run_job(job_id, ctx)  # the re-sent message

    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.error) == (JobState.SUCCEEDED, 2, None)
    assert [e.epoch for e in job.history] == [1, 2, 3, 4]
    with ctx.uow_factory() as uow:
        versions = uow.models.versions("digits-mlp")
    assert [v.job_id for v in versions] == [straight, job_id]  # one version for the resumed job
    # Resumed training is the same computation: the same ONNX file, byte for byte, as the uninterrupted job's.
    assert versions[0].artifact_sha256 == versions[1].artifact_sha256
    assert files_by_job(ctx.checkpoints) == {}  # both attempts' files removed when the job ended


def test_a_crash_between_a_checkpoint_and_its_record_resumes_after_the_checkpoint(ctx: WorkerContext,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Epoch records are written behind training, after their checkpoint: a crash can leave the file an epoch ahead of
    SQL. The next attempt trusts the file, records the epoch it holds, and ends exactly as an uninterrupted run."""
    body = tiny_job(training={"epochs": 4})
    straight = queue_job(ctx, body)
    run_job(straight, ctx)
    record = training_usecase._record_epoch

    def dying_before_epoch_2_is_recorded(job_id, attempt, model_name, result, ctx) -> None:  # type: ignore[no-untyped-def]
        if result.epoch == 2:
            raise Crash
        record(job_id, attempt, model_name, result, ctx)

    job_id = queue_job(ctx, body)
    monkeypatch.setattr(training_usecase, "_record_epoch", dying_before_epoch_2_is_recorded)
    with pytest.raises(Crash):
        run_job(job_id, ctx)
    monkeypatch.undo()
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.checkpoint_epoch, [e.epoch for e in job.history]) == (1, [1])  # SQL holds epoch 1...
    assert checkpoint.load(attempt_file(ctx.checkpoints, job_id, 1))["epoch"] == 2  # ...the file, epoch 2
    _sweep(ctx, Recorder())
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, [e.epoch for e in job.history]) == (JobState.SUCCEEDED, 2, [1, 2, 3, 4])
    with ctx.uow_factory() as uow:
        first, resumed = uow.models.versions("digits-mlp")
    assert first.artifact_sha256 == resumed.artifact_sha256


def test_an_attempt_taken_back_can_change_nothing(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    with ctx.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="old", lease_s=3600) == 1
        uow.commit()
    _sweep(ctx, Recorder())  # attempt 1 looks dead
    with ctx.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="new", lease_s=3600) == 2
        uow.commit()
    with ctx.uow_factory() as uow:  # attempt 1 wakes up
        assert not uow.jobs.heartbeat(job_id, 1)
        assert not uow.jobs.set_checkpoint(job_id, 1, 5)
        assert not uow.jobs.finish(job_id, state=JobState.FAILED, error="late", attempt=1)
        uow.commit()
    new = NewVersion(model_name="digits-mlp", job_id=job_id, artifact_sha256="0" * 64, artifact_size=1, signature={}, metrics={},
                     spec={}, hyperparameters={}, dataset={})  # fmt: skip
    with pytest.raises(KilnError, match="stopped running"):
        register_version(new, uow_factory=ctx.uow_factory, job_attempt=1)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.lease_owner, job.version) == (JobState.RUNNING, 2, "new", None)
    with ctx.uow_factory() as uow:
        assert uow.models.versions("digits-mlp") == [] and uow.jobs.heartbeat(job_id, 2)


def test_an_attempt_taken_back_cannot_claim_the_version_another_registered(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    with ctx.uow_factory() as uow:
        uow.jobs.claim(job_id, owner="old", lease_s=3600)
        uow.commit()
    _sweep(ctx, Recorder())
    with ctx.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="new", lease_s=3600) == 2
        uow.commit()
    new = NewVersion(model_name="digits-mlp", job_id=job_id, artifact_sha256="0" * 64, artifact_size=1, signature={}, metrics={},
                     spec={}, hyperparameters={}, dataset={})  # fmt: skip
    assert register_version(new, uow_factory=ctx.uow_factory, job_attempt=2) == 1
    with pytest.raises(KilnError, match="another attempt"):  # the zombie does not report the other's success as its own
        register_version(new, uow_factory=ctx.uow_factory, job_attempt=1)
    assert register_version(new, uow_factory=ctx.uow_factory, job_attempt=2) == 1  # a duplicate of the holder's: the same


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    recorder = Recorder()
    for attempt in (1, 2):
        with ctx.uow_factory() as uow:
            assert uow.jobs.claim(job_id, owner="w", lease_s=3600) == attempt
            uow.commit()
        ctx.checkpoints.mkdir(parents=True, exist_ok=True)
        attempt_file(ctx.checkpoints, job_id, attempt).write_bytes(b"left by the dead attempt")
        report = _sweep(ctx, recorder, max_attempts=2)
    assert report.failed == [job_id] and recorder.sent == [(job_id, "cpu")]  # sent again once, then given up
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.FAILED and job.attempt == 2
    assert job.error is not None and "gave up after 2 attempts" in job.error and "KILN_MAX_ATTEMPTS" in job.error
    assert files_by_job(ctx.checkpoints) == {}


def test_a_live_job_is_left_alone(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    with ctx.uow_factory() as uow:
        uow.jobs.claim(job_id, owner="w", lease_s=3600)
        uow.commit()
    report = _sweep(ctx, Recorder(), stale_after_s=60.0)
    assert report.requeued == report.failed == []
    assert get_job(job_id, uow_factory=ctx.uow_factory).state == JobState.RUNNING


@pytest.mark.parametrize(("waiting", "resent"), [({"cpu": 0, "gpu": 0}, True), ({"cpu": 2, "gpu": 0}, False), ({}, False)])
def test_a_queued_job_is_sent_again_only_when_its_queue_is_empty(ctx: WorkerContext, waiting: dict[str, int], resent: bool) -> None:
    job_id = queue_job(ctx, tiny_job())
    recorder = Recorder()
    assert _sweep(ctx, recorder, waiting, redispatch_after_s=3600).redispatched == []  # sent recently: left alone
    report = _sweep(ctx, recorder, waiting, redispatch_after_s=0.0)
    assert (report.redispatched == [job_id]) is resent and (recorder.sent == [(job_id, "cpu")]) is resent
    if resent:  # and not again at once: its dispatch time moved
        assert _sweep(ctx, Recorder(), waiting, redispatch_after_s=30).redispatched == []


def test_a_resent_duplicate_claims_nothing(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    run_job(job_id, ctx)
    run_job(job_id, ctx)  # the sweeper's copy of the message, arriving late
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt) == (JobState.SUCCEEDED, 1)


def test_the_lease_thread_beats_every_heartbeat_interval(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """While training is held inside epoch 1, only the lease thread can move heartbeat_at: it must beat again and again."""
    quick = dataclasses.replace(ctx, lease=training_usecase.LeaseTerms(heartbeat_s=0.05, lease_s=3600))
    job_id = queue_job(quick, tiny_job(training={"epochs": 2}))
    record = training_usecase._record_epoch
    beats: set[object] = set()

    def held_after_epoch_1(job_id, attempt, model_name, result, ctx) -> None:  # type: ignore[no-untyped-def]
        record(job_id, attempt, model_name, result, ctx)
        deadline = time.monotonic() + 30  # generous for a loaded machine; a healthy thread needs about 0.2 s
        while result.epoch == 1 and len(beats) < 4 and time.monotonic() < deadline:
            beats.add(get_job(job_id, uow_factory=ctx.uow_factory).heartbeat_at)
            time.sleep(0.01)

    monkeypatch.setattr(training_usecase, "_record_epoch", held_after_epoch_1)
    run_job(job_id, quick)
    assert len(beats) >= 4, f"heartbeat_at took only {len(beats)} values while the attempt trained"
    assert get_job(job_id, uow_factory=ctx.uow_factory).state == JobState.SUCCEEDED


def test_an_attempt_that_loses_its_job_stops_and_writes_nothing(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = queue_job(ctx, tiny_job(training={"epochs": 4}))
    record = training_usecase._record_epoch

    def taken_back_after_epoch_1(job_id, attempt, model_name, result, ctx) -> None:  # type: ignore[no-untyped-def]
        record(job_id, attempt, model_name, result, ctx)
        if result.epoch == 1:
            _sweep(ctx, Recorder())  # the sweeper thought this worker dead

    monkeypatch.setattr(training_usecase, "_record_epoch", taken_back_after_epoch_1)
    run_job(job_id, ctx)  # returns quietly at its next epoch end
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.error, job.epoch) == (JobState.QUEUED, 1, None, 1)
    with ctx.uow_factory() as uow:
        assert uow.models.versions("digits-mlp") == []
    assert attempt_file(ctx.checkpoints, job_id, 1).exists()  # kept for the next attempt


def test_a_heartbeat_that_comes_in_after_the_listing_wins(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    with ctx.uow_factory() as uow:
        uow.jobs.claim(job_id, owner="w", lease_s=3600)
        uow.commit()
    listed_at = utcnow() + timedelta(seconds=1)  # the sweep's cut-off: silent since then
    with ctx.uow_factory() as uow:
        (lost,) = uow.jobs.lost_running(silent_since=listed_at)
    with ctx.uow_factory() as uow:  # the worker was only slow: its heartbeat lands after the listing...
        uow.jobs._holding(job_id, 1, heartbeat_at=listed_at + timedelta(seconds=1))
        uow.commit()
    with ctx.uow_factory() as uow:  # ...so the take-back, which re-checks the silence, changes nothing
        assert not uow.jobs.requeue(job_id, lost.attempt, silent_since=listed_at)
        uow.commit()
    assert get_job(job_id, uow_factory=ctx.uow_factory).state == JobState.RUNNING


def test_a_taken_back_attempt_cannot_rewrite_the_history_when_it_resumes(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = queue_job(ctx, tiny_job(training={"epochs": 4}))
    _crash_after_epoch(monkeypatch, 2)
    with pytest.raises(Crash):
        run_job(job_id, ctx)
    monkeypatch.undo()
    _sweep(ctx, Recorder())
    with ctx.uow_factory() as uow:
        assert uow.jobs.claim(job_id, owner="new", lease_s=3600) == 2
        uow.commit()
    with pytest.raises(training_usecase.LeaseLost):  # attempt 1 waking up, with no checkpoint of its own to go by
        training_usecase._resume_point(job_id, 1, None, ctx)
    assert [e.epoch for e in get_job(job_id, uow_factory=ctx.uow_factory).history] == [1, 2]  # nothing deleted


def test_a_lost_job_whose_cancel_was_asked_ends_cancelled(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    with ctx.uow_factory() as uow:
        uow.jobs.claim(job_id, owner="w", lease_s=3600)
        assert uow.jobs.request_cancel(job_id)
        uow.commit()
    ctx.checkpoints.mkdir(parents=True, exist_ok=True)
    attempt_file(ctx.checkpoints, job_id, 1).write_bytes(b"epoch 1")
    recorder = Recorder()
    report = _sweep(ctx, recorder)
    assert report.cancelled == [job_id] and recorder.sent == []  # not sent again just to notice the cancel
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.CANCELLED and job.error is not None and "cancelled" in job.error
    assert files_by_job(ctx.checkpoints) == {}


def test_checkpoints_of_ended_jobs_are_removed_once_old(ctx: WorkerContext) -> None:
    ended, queued = queue_job(ctx, tiny_job()), queue_job(ctx, tiny_job())
    cancel_job(ended, uow_factory=ctx.uow_factory)  # cancelled while queued, after an attempt had written a checkpoint
    ctx.checkpoints.mkdir(parents=True, exist_ok=True)
    paths = [attempt_file(ctx.checkpoints, j, 1) for j in (ended, queued)] + [ctx.checkpoints / "notes.pt"]
    for path in paths:
        path.write_bytes(b"x")
    assert _sweep(ctx, Recorder()).removed_checkpoints == []  # too recent: it may be an attempt recording right now
    old = time.time() - 120
    for path in paths:
        os.utime(path, (old, old))
    assert _sweep(ctx, Recorder()).removed_checkpoints == [paths[0]]  # the queued job's file and foreign files stay
    assert [p.exists() for p in paths] == [False, True, True]


def test_a_checkpoint_of_an_earlier_format_starts_the_job_over(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job running when Kiln was upgraded: its checkpoint holds weights laid out the old way, so it trains from epoch 1."""
    job_id = queue_job(ctx, tiny_job(training={"epochs": 3}))
    _crash_after_epoch(monkeypatch, 2)
    with pytest.raises(Crash):
        run_job(job_id, ctx)
    monkeypatch.undo()
    path = attempt_file(ctx.checkpoints, job_id, 1)
    old = checkpoint.load(path) | {"format": 2}  # weights keyed by layer name: read no more
    checkpoint.save(old, path)
    _sweep(ctx, Recorder())
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.error) == (JobState.SUCCEEDED, 2, None)
    assert [e.epoch for e in job.history] == [1, 2, 3]  # the old epochs were recorded again by the new start, not kept
