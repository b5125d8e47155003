"""Responses of `/v1/studies`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from services.registry.entities import Study, StudyState
from services.usecases.trials import TRIAL_STATES, best_of, study_spec, trial_state, views


class TrialPublic(BaseModel):
    number: int
    job_id: uuid.UUID | None = Field(description="The job that runs the trial; none when its sampled job did not validate.")
    params: dict[str, Any] = Field(description="The values the sampler chose, by search-space path.")
    state: str = Field(description="running, complete, pruned, failed or cancelled.")
    value: float | None = Field(description="The objective at the epoch whose weights became the trial's version.")
    epochs: int = Field(description="Epochs the trial ran.")
    version: int | None = Field(description="The version a complete trial registered.")
    error: str | None = None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StudySummary(BaseModel):
    id: uuid.UUID
    study_name: str
    model_name: str
    state: StudyState
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    trials_started: int
    max_trials: int
    best_trial: int | None = Field(description="The best complete trial's number (recorded when the study ends).")
    best_version: int | None

    @classmethod
    def of(cls, study: Study) -> StudySummary:
        return cls(id=study.id, study_name=study.name, model_name=study.model_name, state=study.state, error=study.error,
                   created_at=study.created_at, finished_at=study.finished_at, trials_started=study.trial_count,
                   max_trials=_count(study.spec.get("max_trials")), best_trial=study.best_trial,
                   best_version=study.best_version)  # fmt: skip


class StudyPublic(StudySummary):
    objective: dict[str, Any] = Field(description="The metric and its direction (auto resolved).")
    best_alias: str
    best: TrialPublic | None = Field(description="The best complete trial so far; once the study ends, the one it recorded.")
    trials: list[TrialPublic]
    counts: dict[str, int] = Field(description="Trials by state.")
    importances: dict[str, float] | None = Field(description="fANOVA's share of the objective's variance per parameter, "
                                                 "once enough trials are complete.")  # fmt: skip
    spec: dict[str, Any] = Field(description="The study as submitted, its job template with every default spelt out.")

    @classmethod
    def of(cls, study: Study) -> StudyPublic:
        try:
            spec, template = study_spec(study)
        except ValidationError:  # stored by an earlier Kiln, say: shown as recorded (its coordinator fails it)
            return cls._as_recorded(study)
        found = views(spec, template, study.trials)
        trials = [
            TrialPublic(number=t.number, job_id=t.job_id, params=t.params, state=v.state, value=v.value, epochs=len(t.epochs),
                        version=t.version if v.state == "complete" else None, error=t.error or t.job_error)
            for t, v in zip(study.trials, found, strict=True)
        ]  # fmt: skip
        best_number = study.best_trial if study.best_trial is not None else getattr(best_of(spec, found), "number", None)
        objective = {"metric": spec.objective.metric, "direction": "maximize" if spec.objective.maximize else "minimize"}
        return cls(**StudySummary.of(study).model_dump(), objective=objective, best_alias=spec.best_alias,
                   best=trials[best_number] if best_number is not None else None, trials=trials,
                   counts={state: sum(1 for t in trials if t.state == state) for state in TRIAL_STATES},
                   importances=study.importances, spec=study.spec)  # fmt: skip

    @classmethod
    def _as_recorded(cls, study: Study) -> StudyPublic:
        trials = [TrialPublic(number=t.number, job_id=t.job_id, params=t.params, state=trial_state(t), value=t.value, epochs=len(t.epochs),
                              version=t.version, error=t.error or t.job_error) for t in study.trials]  # fmt: skip
        best = next((t for t in trials if t.number == study.best_trial), None)
        objective = study.spec.get("objective")
        return cls(**StudySummary.of(study).model_dump(), objective=objective if isinstance(objective, dict) else {},
                   best_alias=str(study.spec.get("best_alias", "best")), best=best, trials=trials,
                   counts={state: sum(1 for t in trials if t.state == state) for state in TRIAL_STATES},
                   importances=study.importances, spec=study.spec)  # fmt: skip


class StudiesPublic(BaseModel):
    data: list[StudySummary]
    count: int
