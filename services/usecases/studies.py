"""The study coordinator: submit a study, start its trials as ordinary jobs, settle them as they end, and finish it.

SQL is the one source of truth. `advance_study` reads the study and its trials, settles trials whose
job ended, starts trials while fewer than `parallelism` run, and finishes the study when nothing runs
and nothing more may start. It can die at any point: it takes the study's row first (a lock every
other coordinator waits for), a trial's number is unique per study, and each trial's job is written in
the same transaction as the trial, so a coordinator that runs again, here or on another worker, carries
on from what was committed and never starts a trial twice. It runs when a study is submitted, after
each trial's job ends (on the worker that ran it), and on every sweep (a worker that died in between).
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict, InvalidSpec, KilnError, NotFound, Unavailable
from services.registry.entities import JobState, Study, StudyState
from services.registry.protocols import UnitOfWork, UowFactory
from services.registry.tables import utcnow
from services.spec import JobSpec
from services.tuning import paths, search
from services.tuning.search import TrialView
from services.tuning.spec import StudySpec
from services.usecases.jobs import dataset_info
from services.usecases.study_checks import StudyTerms, checked_template, prepare_body
from services.usecases.transfer import with_base
from services.usecases.trials import best_of, objective_value, study_spec, trial_state, views

log = logging.getLogger(__name__)


def submit_study(spec: StudySpec, terms: StudyTerms) -> Study:
    """Check every path and range against the job template, record the study, and start its first trials."""
    template = checked_template(spec, terms)
    study_id = uuid.uuid4()
    with terms.uow_factory() as uow:
        stored = spec.model_dump(mode="json") | {"job": template}
        uow.studies.add(study_id=study_id, name=spec.study_name, model_name=spec.job.model_name, spec=stored)
        uow.commit()
    log.info("study %s (%s) submitted: %d trials, %d at once", study_id, spec.study_name, spec.max_trials, spec.parallelism,
             extra={"study_id": str(study_id)})  # fmt: skip
    try:
        advance_study(study_id, terms)
    except Exception:  # recorded already: the sweeper starts its trials
        log.warning("study %s: its first trials could not be started now; the sweeper will", study_id, exc_info=True)
    return get_study(study_id, uow_factory=terms.uow_factory)


class TrialTaken(Exception):
    """A trial number another coordinator committed first."""


def advance_study(study_id: uuid.UUID, terms: StudyTerms, *, wait: bool = True) -> None:
    """One coordinator pass (see the module's docstring); safe to run anywhere, any number of times, at once. Without
    `wait`, a study another coordinator holds is left to it (the sweeper's way: whoever holds it is doing the work)."""
    for _ in range(5):
        try:
            sends, settled = _advance(study_id, terms, wait=wait)
            break
        except TrialTaken:  # another coordinator committed a trial with the same number first: read again
            log.info("study %s: a trial number was taken meanwhile; advancing again", study_id)
        except Unavailable:  # busy, or the database is away: a later pass goes on
            raise
        except (ValueError, KilnError) as err:  # not the database's fault: it would fail the same way every time
            log.error("study %s cannot go on: %s", study_id, err, exc_info=True, extra={"study_id": str(study_id)})
            _fail(study_id, terms, f"the study cannot go on: {getattr(err, 'message', err)}")
            return
    else:
        raise Conflict(f"study {study_id}: could not start its next trial after several tries", field="study_id")
    for job_id, queue in sends:
        try:
            terms.dispatcher.send(job_id, queue=queue)
        except Exception:  # the job stays queued: the sweeper sends it again
            log.warning("study %s: could not send trial job %s; the sweeper will", study_id, job_id, exc_info=True)
    for outcome in settled:
        if terms.count_trial is not None:
            terms.count_trial(outcome)
    if "complete" in settled:
        try:
            _update_importances(study_id, terms)
        except Exception:  # a figure for people: the next complete trial computes it again
            log.warning("study %s: parameter importances not updated", study_id, exc_info=True)


def _advance(study_id: uuid.UUID, terms: StudyTerms, *, wait: bool) -> tuple[list[tuple[uuid.UUID, str]], list[str]]:
    with terms.uow_factory() as uow:
        if not uow.studies.lock(study_id, wait=wait):
            return [], []
        study = uow.studies.get(study_id)
        assert study is not None
        try:
            spec, template = study_spec(study)
        except ValidationError as err:  # stored by another Kiln, say: its trials are settled, without values, and it fails
            settled = _settle(uow, study, None, {})
            if study.state == StudyState.RUNNING:
                _end_failed(uow, study, f"the study cannot go on: its stored body no longer validates ({err.errors()[0]['msg']})")
            uow.commit()
            return [], settled
        settled = _settle(uow, study, spec, template)
        found = views(spec, template, study.trials)
        if study.state != StudyState.RUNNING:
            uow.commit()
            return [], settled
        stopping = _stop_reason(study, spec)
        if stopping:
            _stop_trials(uow, study, f"the study stopped: {stopping}")
            sends: list[tuple[uuid.UUID, str]] = []
        else:
            sends, stopping = _start_trials(uow, study, spec, template, found, terms)
        active = sum(1 for v in found if v.state == "running")
        limit = min(spec.max_trials, spec.grid_size or spec.max_trials)
        if active == 0 and (stopping or len(found) >= limit):
            _finish(uow, study, spec, found, stopping)
        uow.commit()
    return sends, settled


def _update_importances(study_id: uuid.UUID, terms: StudyTerms) -> None:
    """fANOVA over the complete trials, outside the coordinator's lock (it takes a moment; SQLite has one writer); computed
    again when a trial completed meanwhile, so the last complete trial's figures are the ones kept."""
    for _ in range(3):
        with terms.uow_factory() as uow:
            study = uow.studies.get(study_id)
        if study is None:
            return
        spec, template = study_spec(study)
        found = views(spec, template, study.trials)
        figures = search.importances(spec, found)
        complete = sum(1 for v in found if v.state == "complete")
        with terms.uow_factory() as uow:
            now = uow.studies.get(study_id)
            if now is None or sum(1 for t in now.trials if trial_state(t) == "complete") == complete:
                uow.studies.set_importances(study_id, figures)
                uow.commit()
                return


def _template_missing(template: dict[str, Any], uow: UnitOfWork) -> str | None:
    """What the template's job needs that is gone (its uploaded dataset, its base version), or None. Only what went away:
    a budget is each host's own, and a trial that exceeds one fails alone."""
    try:
        spec = with_base(JobSpec.model_validate(template), uow_factory=lambda: uow, uow=uow)
        dataset_info(spec.data, uow)
    except (NotFound, InvalidSpec) as err:
        return f"what its job needs is gone ({err.field}: {err.message})" if err.field else f"what its job needs is gone: {err.message}"
    return None


def _fail(study_id: uuid.UUID, terms: StudyTerms, error: str) -> None:
    """End a study that cannot go on, stopping its trials (by their jobs: its stored body may be what is wrong)."""
    with terms.uow_factory() as uow:
        if not uow.studies.lock(study_id):
            return
        study = uow.studies.get(study_id)
        if study is None or study.state != StudyState.RUNNING:
            return
        _end_failed(uow, study, error)
        uow.commit()


def _end_failed(uow: UnitOfWork, study: Study, error: str) -> None:
    _stop_trials(uow, study, error)
    uow.studies.finish(study.id, state=StudyState.FAILED, error=error)


def _settle(uow: UnitOfWork, study: Study, spec: StudySpec | None, template: dict[str, Any]) -> list[str]:
    """Write the outcome of each trial whose job ended (once, whoever gets there first); the outcomes written. Without a
    spec (its stored body no longer validates) they are written without values."""
    written = []
    for trial in study.trials:
        state = trial_state(trial)
        if trial.outcome is None and state != "running":
            value = objective_value(spec, template, trial) if state == "complete" and spec is not None else None
            if uow.studies.settle(study.id, trial.number, outcome=state, value=value):
                written.append(state)
    return written


def _stop_reason(study: Study, spec: StudySpec) -> str | None:
    if spec.timeout_s is not None and utcnow() >= study.created_at + timedelta(seconds=spec.timeout_s):
        return f"its timeout_s of {spec.timeout_s:g} s passed"
    return None


def _stop_trials(uow: UnitOfWork, study: Study, reason: str) -> None:
    """Cancel the study's queued trials at once and ask its running ones to stop at their next batch."""
    for trial in study.trials:
        if trial.job_id is None or trial.job_state not in (JobState.QUEUED, JobState.RUNNING):
            continue
        if not uow.jobs.finish(trial.job_id, state=JobState.CANCELLED, error=reason, from_state=JobState.QUEUED):
            uow.jobs.request_cancel(trial.job_id)


def _start_trials(uow: UnitOfWork, study: Study, spec: StudySpec, template: dict[str, Any], found: list[TrialView],
                  terms: StudyTerms) -> tuple[list[tuple[uuid.UUID, str]], str | None]:  # fmt: skip
    """Ask the sampler for trials while fewer than `parallelism` run and the study has trials left: their jobs to send,
    and why none may start any more (what the job needs is gone: every trial would fail the same way), or None."""
    sends: list[tuple[uuid.UUID, str]] = []
    limit = min(spec.max_trials, spec.grid_size or spec.max_trials)
    wanted = sum(1 for v in found if v.state == "running") < spec.parallelism and len(found) < limit
    if wanted and (missing := _template_missing(template, uow)):
        return sends, missing  # the running trials go on; no more start
    while sum(1 for v in found if v.state == "running") < spec.parallelism and len(found) < limit:
        number = len(found)
        params, attrs = search.ask(spec, found)
        try:
            _, stored, queue = prepare_body(paths.assign(template, params), uow, terms)
        except (KilnError, ValueError) as err:  # the values together break the job, though each range's edges did not
            message = err.message if isinstance(err, KilnError) else str(err)
            error = f"{err.field}: {message}" if isinstance(err, KilnError) and err.field else message
            try:
                uow.studies.add_trial(study.id, number, job_id=None, params=params, system_attrs=attrs, error=error)
            except IntegrityError as taken:
                raise TrialTaken from taken
            found.append(TrialView(number, params, "failed", system_attrs=attrs))
            log.warning("study %s trial %d did not validate: %s", study.id, number, error, extra={"study_id": str(study.id)})
            continue
        job_id = uuid.uuid4()
        uow.jobs.add(job_id=job_id, model_name=study.model_name, spec=stored, queue=queue, trial=(study.id, number))
        try:
            uow.studies.add_trial(study.id, number, job_id=job_id, params=params, system_attrs=attrs)
        except IntegrityError as taken:
            raise TrialTaken from taken
        found.append(TrialView(number, params, "running", system_attrs=attrs))
        sends.append((job_id, queue))
        log.info("study %s trial %d: job %s with %s", study.id, number, job_id, params, extra={"study_id": str(study.id)})
    return sends, None


def _finish(uow: UnitOfWork, study: Study, spec: StudySpec, found: list[TrialView], stopping: str | None) -> None:
    """Nothing runs and nothing more starts: the best trial's version gets `best_alias`; with no complete trial, it failed."""
    best = best_of(spec, found)
    if best is None:
        counts = {s: sum(1 for v in found if v.state == s) for s in ("failed", "pruned", "cancelled")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        uow.studies.finish(study.id, state=StudyState.FAILED, error=f"no trial completed ({summary}){f'; {stopping}' if stopping else ''}")
        return
    version = study.trials[best.number].version
    assert version is not None, "a complete trial's job registered a version"
    uow.models.set_alias(study.model_name, spec.best_alias, version)
    note = f"stopped early: {stopping}" if stopping else None  # why fewer trials ran than max_trials
    uow.studies.finish(study.id, state=StudyState.SUCCEEDED, error=note, best_trial=best.number, best_version=version)
    log.info("study %s succeeded: trial %d, %s %s = %.4g, version %d is '%s'", study.id, best.number, spec.objective.metric,
             "max" if spec.objective.maximize else "min", best.value or math.nan, version, spec.best_alias,
             extra={"study_id": str(study.id)})  # fmt: skip


def cancel_study(study_id: uuid.UUID, terms: StudyTerms) -> Study:
    """Stop a running study: its queued trials are cancelled at once, its running ones at their next batch."""
    with terms.uow_factory() as uow:
        if not uow.studies.lock(study_id):
            raise NotFound(f"no study with id {study_id}", field="study_id")
        study = uow.studies.get(study_id)
        assert study is not None
        if study.state != StudyState.RUNNING:
            raise Conflict(f"study {study_id} has already {study.state.value}: there is nothing to cancel", field="study_id")
        try:
            spec, template = study_spec(study)
            best = best_of(spec, views(spec, template, study.trials))
        except ValidationError:  # its stored body no longer validates: it stops all the same
            best = None
        _stop_trials(uow, study, "the study was cancelled")
        best_version = study.trials[best.number].version if best else None
        uow.studies.finish(study_id, state=StudyState.CANCELLED, error="cancelled", best_trial=best.number if best else None,
                           best_version=best_version)  # fmt: skip
        uow.commit()
    log.info("study %s cancelled", study_id, extra={"study_id": str(study_id)})
    advance_study(study_id, terms)  # settles the trials the cancel ended
    return get_study(study_id, uow_factory=terms.uow_factory)


def get_study(study_id: uuid.UUID, *, uow_factory: UowFactory) -> Study:
    with uow_factory() as uow:
        study = uow.studies.get(study_id)
    if study is None:
        raise NotFound(f"no study with id {study_id}", field="study_id")
    return study


def list_studies(*, uow_factory: UowFactory, limit: int, offset: int, state: StudyState | None) -> tuple[list[Study], int]:
    with uow_factory() as uow:
        return uow.studies.page(limit=limit, offset=offset, state=state)


def advance_running(terms: StudyTerms) -> int:
    """The sweeper's pass: advance every study that may move on (a coordinator that died left it waiting), skipping one
    another coordinator holds now; how many it tried."""
    with terms.uow_factory() as uow:
        running = uow.studies.needing_attention()
    for study_id in running:
        try:
            advance_study(study_id, terms, wait=False)
        except Exception:
            log.warning("study %s could not be advanced; the next sweep tries again", study_id, exc_info=True)
    return len(running)


def advance_after_job(job_id: uuid.UUID, terms: StudyTerms) -> None:
    """After a trial's job ended on this worker: settle it and start the next trial at once (the sweeper would, later)."""
    with terms.uow_factory() as uow:
        job = uow.jobs.get(job_id, with_history=False)
    if job is not None and job.study_id is not None:
        advance_study(job.study_id, terms)
