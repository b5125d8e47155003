"""A study's trials as the search sees them, and the pruning check a trial's job makes after each epoch."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from pydantic import ValidationError

from services.registry.entities import JobState, Study, Trial
from services.registry.protocols import UowFactory
from services.spec.job import EarlyStoppingSpec, monitor_mode
from services.tuning import paths, search
from services.tuning.spec import StudySpec

log = logging.getLogger(__name__)

TRIAL_STATES = ("running", "complete", "pruned", "failed", "cancelled")
_BY_JOB = {JobState.QUEUED: "running", JobState.RUNNING: "running", JobState.SUCCEEDED: "complete", JobState.FAILED: "failed",
           JobState.CANCELLED: "cancelled"}  # fmt: skip


class Pruned(Exception):
    """The study's pruner stopped this trial after an epoch: its job ends, registering nothing."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


def trial_state(trial: Trial) -> str:
    """running, complete, pruned, failed or cancelled: the outcome once written, else what its job's state says."""
    if trial.outcome is not None:
        return trial.outcome
    return _BY_JOB[trial.job_state] if trial.job_state is not None else "failed"


def _registered_epoch(epochs: list[dict[str, float]], early_stopping: dict[str, Any] | None) -> int:
    """The index of the epoch whose weights the job registered: the last, or the best one early stopping restored."""
    if not early_stopping or not early_stopping.get("restore_best_weights"):
        return len(epochs) - 1
    es = EarlyStoppingSpec.model_validate(early_stopping)
    mode = monitor_mode(es.monitor) if es.mode == "auto" else es.mode
    best, best_at = None, len(epochs) - 1
    for i, metrics in enumerate(epochs):  # callbacks.EarlyStopping's rule
        value = metrics.get(es.monitor)
        if value is None:
            continue
        if best is None or (value < best - es.min_delta if mode == "min" else value > best + es.min_delta):
            best, best_at = value, i
    return best_at


def objective_value(spec: StudySpec, template: dict[str, Any], trial: Trial) -> float | None:
    """A complete trial's score: the objective at the epoch whose weights became its version (None when not finite)."""
    if not trial.epochs:
        return None
    training = paths.assign(template, trial.params).get("training", {})
    value = trial.epochs[_registered_epoch(trial.epochs, training.get("early_stopping"))].get(spec.objective.metric)
    return float(value) if value is not None and math.isfinite(value) else None


def views(spec: StudySpec, template: dict[str, Any], trials: list[Trial]) -> list[search.TrialView]:
    out = []
    metric = spec.objective.metric
    for trial in trials:
        state = trial_state(trial)
        value = trial.value if trial.outcome is not None else objective_value(spec, template, trial) if state == "complete" else None
        steps = {i + 1: float(e[metric]) for i, e in enumerate(trial.epochs) if e.get(metric) is not None}
        out.append(search.TrialView(trial.number, trial.params, state, value, steps, trial.system_attrs))
    return out


def best_of(spec: StudySpec, found: list[search.TrialView]) -> search.TrialView | None:
    """The best complete trial (the earliest among equals)."""
    scored = [v for v in found if v.state == "complete" and v.value is not None]
    if not scored:
        return None
    sign = -1.0 if spec.objective.maximize else 1.0
    return min(scored, key=lambda v: (sign * (v.value or 0.0), v.number))


def study_spec(study: Study) -> tuple[StudySpec, dict[str, Any]]:
    """The study's body, validated again, and its job template as stored (every default spelt out)."""
    return StudySpec.model_validate(study.spec), study.spec["job"]


class PruneWatch:
    """Asked after each epoch a trial's job records: raises Pruned when the study's pruner says stop."""

    def __init__(self, study_id: uuid.UUID, number: int, uow_factory: UowFactory) -> None:
        self.study_id, self.number, self.uow_factory = study_id, number, uow_factory
        self.idle = False  # the study prunes nothing: no need to read it every epoch

    def __call__(self, epoch: int) -> None:
        if self.idle:
            return
        with self.uow_factory() as uow:
            study = uow.studies.get(self.study_id)
            if study is None:
                return
            try:
                spec, template = study_spec(study)
            except ValidationError:  # its coordinator fails the study; the trial trains on
                log.warning("study %s no longer validates: trial %d is not judged", self.study_id, self.number, exc_info=True)
                self.idle = True
                return
            if spec.pruner.type == "none":
                self.idle = True
                return
            found = views(spec, template, study.trials)
            prune, attrs = search.should_prune(spec, found, self.number)
            if attrs != study.trials[self.number].system_attrs:
                uow.studies.set_system_attrs(self.study_id, self.number, attrs)
                uow.commit()
        if prune:
            value = found[self.number].intermediate.get(epoch)
            figure = f" ({spec.objective.metric} {value:.4g})" if value is not None else ""
            raise Pruned(f"pruned by the study's {spec.pruner.type} pruner after epoch {epoch}{figure}", epoch)
