"""The study coordinator on a real registry (both backends), its trials trained in-process by run_job.

The broker is stood in for by a recorder of what would be sent; tests/e2e/test_studies.py runs the
same paths on real worker processes, with one killed mid-study.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid
from typing import Any

import pytest

from services.errors import Conflict, InvalidSpec
from services.metrics import WorkerMetrics
from services.registry.entities import JobState, StudyState
from services.spec import Budget
from services.tuning.spec import StudySpec
from services.usecases.jobs import get_job
from services.usecases.studies import StudyTerms, advance_running, advance_study, cancel_study, get_study, submit_study
from services.usecases.training import WorkerContext, run_job
from services.usecases.trials import trial_state
from tests.factories import job_body
from tests.integration.test_sweeper import Recorder

GOOD_LR, BAD_LR = 0.01, 1e-7


def study_body(**fields: Any) -> dict[str, Any]:
    body = {
        "study_name": "digits-lr",
        "job": job_body(model_name="digits-study", training={"epochs": 3}),
        "search_space": {"training.optimizer.learning_rate": {"type": "categorical", "choices": [GOOD_LR, BAD_LR]}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "sampler": "grid",
        "max_trials": 2,
        "parallelism": 2,
    }
    return body | fields


class StudyRecorder(Recorder):
    """What would be sent, and the trial outcomes counted."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: list[str] = []


@pytest.fixture
def terms(ctx: WorkerContext) -> StudyTerms:
    recorder = StudyRecorder()
    return StudyTerms(uow_factory=ctx.uow_factory, dispatcher=recorder, budget=ctx.budget, stale_after_s=60.0,
                      count_trial=recorder.counted.append)  # fmt: skip


def submit(terms: StudyTerms, **fields: Any):
    return submit_study(StudySpec.model_validate(study_body(**fields)), terms)


def sent(terms: StudyTerms) -> list[uuid.UUID]:
    return [job_id for job_id, _ in terms.dispatcher.sent]  # type: ignore[attr-defined]


def run_trial(job_id: uuid.UUID, ctx: WorkerContext, terms: StudyTerms) -> None:
    """What a worker's task does: run the job, then advance its study."""
    run_job(job_id, dataclasses.replace(ctx, studies=terms))
    advance_study(get_job(job_id, uow_factory=ctx.uow_factory).study_id, terms)


def lr_of(job_id: uuid.UUID, ctx: WorkerContext) -> float:
    return get_job(job_id, uow_factory=ctx.uow_factory).spec["training"]["optimizer"]["learning_rate"]


def test_trials_are_jobs_and_the_best_trials_version_gets_the_alias(ctx: WorkerContext, terms: StudyTerms) -> None:
    study = submit(terms, max_trials=3, parallelism=2, sampler="random",
                   search_space={"training.optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
                                 "model.layers[0].units": {"type": "int", "low": 8, "high": 64, "log": True}})  # fmt: skip
    assert study.state == StudyState.RUNNING and len(study.trials) == 2  # parallelism 2: two queued at once
    first = sent(terms)
    assert [t.job_id for t in study.trials] == first
    for number, job_id in enumerate(first):
        job = get_job(job_id, uow_factory=ctx.uow_factory)
        assert (job.study_id, job.trial_number, job.state) == (study.id, number, JobState.QUEUED)
        params = study.trials[number].params
        assert job.spec["training"]["optimizer"]["learning_rate"] == params["training.optimizer.learning_rate"]
        assert job.spec["model"]["layers"][0]["units"] == params["model.layers[0].units"]
    advance_study(study.id, terms)  # nothing ended: nothing more starts
    assert sent(terms) == first
    run_trial(first[0], ctx, terms)
    assert len(sent(terms)) == 3  # the ended trial's slot went to trial 2 at once
    for job_id in sent(terms)[1:]:
        run_trial(job_id, ctx, terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert study.state == StudyState.SUCCEEDED, study.error
    assert [trial_state(t) for t in study.trials] == ["complete"] * 3
    values = [t.value for t in study.trials]
    assert all(v is not None and 0 <= v <= 1 for v in values)
    best = max(range(3), key=lambda n: (values[n], -n))
    assert study.best_trial == best and study.best_version == study.trials[best].version
    with ctx.uow_factory() as uow:
        assert uow.models.alias_version("digits-study", "best") == study.trials[best].version
        assert len(uow.models.versions("digits-study")) == 3
        # The value is the last epoch's val_accuracy: the one whose weights were registered.
        assert values[best] == uow.jobs.history(study.trials[best].job_id)[-1].metrics["val_accuracy"]
    assert sorted(terms.dispatcher.counted) == ["complete"] * 3  # type: ignore[attr-defined]


def test_a_hopeless_trial_is_pruned_after_an_epoch_and_registers_nothing(ctx: WorkerContext, terms: StudyTerms) -> None:
    study = submit(terms, pruner={"type": "median", "n_startup_trials": 1}, job=job_body(model_name="digits-study",
                                                                                        training={"epochs": 6}))  # fmt: skip
    good, bad = sorted(sent(terms), key=lambda j: lr_of(j, ctx) == BAD_LR)
    metrics = WorkerMetrics()
    run_trial(good, dataclasses.replace(ctx, metrics=metrics), terms)
    run_trial(bad, dataclasses.replace(ctx, metrics=metrics), terms)
    assert metrics.registry.get_sample_value("kiln_study_trials_total", {"outcome": "pruned"}) == 1  # by the worker that pruned it
    assert sorted(terms.dispatcher.counted) == ["complete"]  # type: ignore[attr-defined]  # and not again by the coordinator
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    states = {t.job_id: trial_state(t) for t in study.trials}
    assert states == {good: "complete", bad: "pruned"}
    pruned = get_job(bad, uow_factory=ctx.uow_factory)
    assert pruned.state == JobState.CANCELLED and "pruned by the study's median pruner after epoch 1" in pruned.error
    assert pruned.version is None and len(pruned.history) == 1
    with ctx.uow_factory() as uow:
        assert [v.job_id for v in uow.models.versions("digits-study")] == [good]
    assert study.state == StudyState.SUCCEEDED and study.best_trial == next(t.number for t in study.trials if t.job_id == good)


def test_a_trial_is_not_pruned_after_its_last_epoch(ctx: WorkerContext, terms: StudyTerms) -> None:
    """Stopping it then would save no time and throw a finished trial away: the hopeless one-epoch trial completes."""
    study = submit(terms, pruner={"type": "median", "n_startup_trials": 1}, job=job_body(model_name="digits-study",
                                                                                        training={"epochs": 1}))  # fmt: skip
    good, bad = sorted(sent(terms), key=lambda j: lr_of(j, ctx) == BAD_LR)
    run_trial(good, ctx, terms)
    run_trial(bad, ctx, terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert {t.job_id: trial_state(t) for t in study.trials} == {good: "complete", bad: "complete"}
    assert get_job(bad, uow_factory=ctx.uow_factory).state == JobState.SUCCEEDED


def test_successive_halving_keeps_its_rungs_in_the_trial_rows(ctx: WorkerContext, terms: StudyTerms) -> None:
    study = submit(terms, pruner={"type": "successive_halving", "min_resource": 1, "reduction_factor": 2})
    for job_id in sent(terms):
        run_trial(job_id, ctx, terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert all("completed_rung_0" in t.system_attrs for t in study.trials if trial_state(t) != "failed")
    assert study.state == StudyState.SUCCEEDED


def test_coordinators_at_once_never_start_a_trial_twice_or_exceed_parallelism(ctx: WorkerContext, terms: StudyTerms) -> None:
    """Six coordinators race while trials keep ending under them (their jobs failed at random moments)."""
    study = submit(terms, max_trials=20, parallelism=3, sampler="random",
                   search_space={"model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.5}})  # fmt: skip
    most, stop = [0], threading.Event()

    def end_trials() -> None:
        while not stop.is_set():
            with ctx.uow_factory() as uow:
                trials = uow.studies.get(study.id).trials
                active = [t for t in trials if t.job_state in (JobState.QUEUED, JobState.RUNNING)]
                most[0] = max(most[0], len(active))
                if active:
                    uow.jobs.finish(active[0].job_id, state=JobState.FAILED, error="ended by the test", from_state=JobState.QUEUED)
                uow.commit()
            time.sleep(0.005)

    def coordinate() -> None:
        for _ in range(15):
            advance_study(study.id, terms)

    ender = threading.Thread(target=end_trials)
    ender.start()
    threads = [threading.Thread(target=coordinate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    ender.join()
    advance_study(study.id, terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert len(study.trials) > 3  # trials did end and others start meanwhile
    assert [t.number for t in study.trials] == list(range(len(study.trials)))
    assert len(sent(terms)) == len(set(sent(terms))) == len(study.trials)  # each trial's job sent once
    assert most[0] <= 3
    settled = [t.outcome for t in study.trials if t.outcome is not None]
    assert sorted(terms.dispatcher.counted) == sorted(settled)  # type: ignore[attr-defined]  # each counted once


def test_a_sampled_job_that_does_not_validate_is_a_failed_trial_and_the_study_goes_on(ctx: WorkerContext,
                                                                                       terms: StudyTerms) -> None:  # fmt: skip
    # Each range's edges fit the budget with the other layer as in the template; 2048 x 2048 together do not.
    job = job_body(model_name="digits-study", training={"epochs": 1})
    job["model"]["layers"] = [{"type": "Dense", "units": 128, "activation": "relu"}, {"type": "Dense", "units": 128, "activation": "relu"},
                              {"type": "Dense", "units": 10, "activation": "softmax"}]  # fmt: skip
    space = {"model.layers[0].units": {"type": "categorical", "choices": [16, 2048]},
             "model.layers[1].units": {"type": "categorical", "choices": [16, 2048]}}  # fmt: skip
    small = dataclasses.replace(terms, budget=Budget(max_parameters=1_000_000, max_training_memory_mb=4096))
    study = submit(small, job=job, search_space=space, max_trials=4, parallelism=4)
    failed = [t for t in study.trials if t.job_id is None]
    assert len(failed) == 1 and failed[0].params == {"model.layers[0].units": 2048, "model.layers[1].units": 2048}
    assert "parameters" in failed[0].error and len(sent(small)) == 3
    for job_id in sent(small):
        run_trial(job_id, ctx, small)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert study.state == StudyState.SUCCEEDED and [trial_state(t) for t in study.trials].count("complete") == 3


def test_a_study_whose_every_trial_fails_fails(ctx: WorkerContext, terms: StudyTerms) -> None:
    study = submit(terms, max_trials=2, job=job_body(model_name="digits-study", training={"epochs": 3, "max_duration_s": 1e-6}))
    for job_id in sent(terms):
        run_trial(job_id, ctx, terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert study.state == StudyState.FAILED and "no trial completed (2 failed)" in study.error
    with ctx.uow_factory() as uow:
        assert uow.models.alias_version("digits-study", "best") is None


def test_cancel_stops_queued_trials_at_once_and_a_second_cancel_conflicts(ctx: WorkerContext, terms: StudyTerms) -> None:
    study = submit(terms)
    first, second = sent(terms)
    with ctx.uow_factory() as uow:
        uow.jobs.claim(first, owner="test", lease_s=60)  # one trial is running
        uow.commit()
    cancelled = cancel_study(study.id, terms)
    assert cancelled.state == StudyState.CANCELLED
    assert get_job(second, uow_factory=ctx.uow_factory).state == JobState.CANCELLED
    running = get_job(first, uow_factory=ctx.uow_factory)
    assert running.state == JobState.RUNNING and running.cancel_requested  # it stops at its next batch
    with pytest.raises(Conflict):
        cancel_study(study.id, terms)
    with ctx.uow_factory() as uow:  # it stops, and its worker dies before it can advance the study
        uow.jobs.finish(first, state=JobState.CANCELLED, error="cancelled")
        uow.commit()
    assert [t.outcome for t in get_study(study.id, uow_factory=ctx.uow_factory).trials] == [None, "cancelled"]
    advance_running(terms)  # the sweeper settles the trial of the ended study
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert [t.outcome for t in study.trials] == ["cancelled", "cancelled"] and study.state == StudyState.CANCELLED
    assert sorted(terms.dispatcher.counted) == ["cancelled", "cancelled"]  # type: ignore[attr-defined]


def test_past_its_timeout_a_study_starts_nothing_stops_its_trials_and_ends_with_what_completed(ctx: WorkerContext,
                                                                                                terms: StudyTerms) -> None:  # fmt: skip
    study = submit(terms, max_trials=6, parallelism=2, sampler="random", timeout_s=0.5,
                   search_space={"model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.5}})  # fmt: skip
    done, running = sent(terms)
    run_job(done, ctx)
    with ctx.uow_factory() as uow:
        uow.jobs.claim(running, owner="test", lease_s=60)
        uow.commit()
    time.sleep(0.6)
    advance_running(terms)
    assert get_job(running, uow_factory=ctx.uow_factory).cancel_requested  # asked to stop at its next batch
    assert get_study(study.id, uow_factory=ctx.uow_factory).state == StudyState.RUNNING  # until it does
    with ctx.uow_factory() as uow:
        uow.jobs.finish(running, state=JobState.CANCELLED, error="stopped")
        uow.commit()
    advance_running(terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert len(study.trials) == 2 and study.state == StudyState.SUCCEEDED and study.best_trial == 0
    assert "stopped early: its timeout_s of 0.5 s passed" in study.error


def test_a_host_with_a_lower_budget_fails_only_the_trials_over_it(ctx: WorkerContext, terms: StudyTerms) -> None:
    """Budgets are each host's: a coordinator on a smaller one fails the trials it cannot take, and the study goes on."""
    study = submit(terms, max_trials=3, parallelism=1, sampler="random",
                   search_space={"model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.5}})  # fmt: skip
    run_job(sent(terms)[0], ctx)
    lower = dataclasses.replace(terms, budget=Budget(max_parameters=100, max_training_memory_mb=4096))
    advance_study(study.id, lower)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert study.state == StudyState.SUCCEEDED and study.best_trial == 0  # trial 0 completed; 1 and 2 failed alone
    assert [trial_state(t) for t in study.trials] == ["complete", "failed", "failed"]
    assert all("parameters" in t.error for t in study.trials[1:]) and study.error is None


def test_a_study_that_no_longer_validates_settles_its_trials_and_rests(ctx: WorkerContext, terms: StudyTerms) -> None:
    from sqlalchemy import update

    from services.registry.tables import StudyRow

    study = submit(terms)
    first, second = sent(terms)
    broken = copy.deepcopy(study.spec) | {"max_trials": 0}  # as if written by another Kiln
    with ctx.uow_factory() as uow:
        uow.jobs.claim(first, owner="test", lease_s=60)
        uow.studies.session.execute(update(StudyRow).where(StudyRow.id == study.id).values(spec=broken))  # type: ignore[attr-defined]
        uow.commit()
    advance_running(terms)
    assert get_study(study.id, uow_factory=ctx.uow_factory).state == StudyState.FAILED
    with ctx.uow_factory() as uow:
        uow.jobs.finish(first, state=JobState.CANCELLED, error="stopped")  # the running trial stops later
        uow.commit()
    advance_running(terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert [t.outcome for t in study.trials] == ["cancelled", "cancelled"]  # settled without its body
    with ctx.uow_factory() as uow:
        assert uow.studies.needing_attention() == []  # and no sweep comes back to it


def test_a_stored_study_that_no_longer_validates_is_failed_not_stuck(ctx: WorkerContext, terms: StudyTerms) -> None:
    from sqlalchemy import update

    from api.study_schemas import StudyPublic
    from services.registry.tables import StudyRow

    study = submit(terms)
    broken = copy.deepcopy(study.spec)
    broken["job"]["training"]["epochs"] = 0  # as if written by another Kiln
    with ctx.uow_factory() as uow:
        uow.studies.session.execute(update(StudyRow).where(StudyRow.id == study.id).values(spec=broken))  # type: ignore[attr-defined]
        uow.commit()
    shown = StudyPublic.of(get_study(study.id, uow_factory=ctx.uow_factory))  # GET still answers
    assert shown.state == "running" and len(shown.trials) == 2
    advance_running(terms)
    study = get_study(study.id, uow_factory=ctx.uow_factory)
    assert study.state == StudyState.FAILED and "cannot go on" in study.error
    assert {get_job(j, uow_factory=ctx.uow_factory).state for j in sent(terms)} == {JobState.CANCELLED}


def _space(path: str, **param: Any) -> dict[str, Any]:
    return {"search_space": {path: param}}


NO_VALIDATION = job_body(data={"dataset": "digits", "validation_split": 0.0})


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (_space("training.optimizer.momentum_x", type="float", low=0, high=1), "training.optimizer.momentum_x", "has no 'momentum_x'"),
        (_space("model.layers[7].units", type="int", low=8, high=16), "model.layers[7].units", "has 3 item"),
        (_space("model.layers[0].units", type="int", low=0, high=16), "model.layers[0].units", "model.layers[0].units"),
        (_space("model.layers[1].rate", type="float", low=0.0, high=1.5), "model.layers[1].rate", "1.5"),
        (_space("training.early_stopping.patience", type="int", low=1, high=3), "training.early_stopping.patience", "not set in the job"),
        (_space("model.layers", type="int", low=1, high=3), "model.layers", "names an object"),
        (_space("training.batch_size", type="float", low=16, high=64), "training.batch_size", "is an integer"),
        (_space("model_name", type="categorical", choices=["a", "b"]), "model_name", "the same for every trial"),
        (_space("data.validation_split", type="categorical", choices=[0.0, 0.2]), "data.validation_split", "records no 'val_accuracy'"),
    ],
)
def test_a_bad_path_or_range_is_refused_naming_the_path(terms: StudyTerms, change: dict, field: str, words: str) -> None:
    _refused(terms, change, f"search_space.{field}", words)


@pytest.mark.parametrize(
    ("change", "words"),
    [({"objective": {"metric": "val_f2"}}, "expected one of"), ({"job": NO_VALIDATION}, "validation_split")],
)
def test_an_objective_the_job_does_not_record_is_refused(terms: StudyTerms, change: dict, words: str) -> None:
    _refused(terms, change, "objective.metric", words)


def _refused(terms: StudyTerms, change: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        submit(terms, **{"sampler": "random"} | change)
    assert err.value.field == field and words in err.value.message, err.value.message
    assert sent(terms) == []
    with terms.uow_factory() as uow:
        assert uow.studies.page(limit=10, offset=0)[1] == 0  # nothing recorded


def test_a_base_alias_is_pinned_for_every_trial(ctx: WorkerContext, terms: StudyTerms) -> None:
    """The template's base is resolved once: trials that start after the alias moves still start from the same version."""
    from services.usecases.versions import set_alias
    from tests.integration.conftest import queue_job

    for _ in range(2):
        job_id = queue_job(ctx, job_body(model_name="base-mlp", training={"epochs": 1}))
        run_job(job_id, ctx)
    set_alias("base-mlp", "production", 1, uow_factory=ctx.uow_factory)
    job = copy.deepcopy(job_body(model_name="digits-study", training={"epochs": 1}))
    job["model"] = {
        "base": {"model": "base-mlp", "alias": "production"},
        "layers": [{"type": "Dense", "units": 10, "activation": "softmax"}],
    }
    study = submit(terms, job=job, parallelism=1, search_space={"training.batch_size": {"type": "categorical", "choices": [16, 32]}})
    set_alias("base-mlp", "production", 2, uow_factory=ctx.uow_factory)
    run_trial(sent(terms)[0], ctx, terms)
    for job_id in sent(terms):
        assert get_job(job_id, uow_factory=ctx.uow_factory).spec["model"]["base"]["version"] == 1
    assert get_study(study.id, uow_factory=ctx.uow_factory).spec["job"]["model"]["base"] == job["model"]["base"] | {
        "version": 1, "alias": None, "until": None, "trainable": False, "layers": None, "vocabulary": False}  # fmt: skip
