"""What a study is checked against before it is recorded, and what its coordinator needs wherever it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.errors import InvalidSpec, KilnError
from services.registry.protocols import UnitOfWork, UowFactory
from services.spec import Budget, JobSpec
from services.spec.job import format_loc
from services.spec.shapes import epoch_figures
from services.tuning import paths
from services.tuning.spec import FloatParam, StudySpec
from services.usecases.jobs import JobDispatcher, prepare_job

# What a trial may not change: which model its version joins, what kind of job it is, which base it starts from, or
# which dataset it learns from (its objective would not compare, and a running study's upload is kept from deletion).
FIXED = ("model_name", "kind", "model.base", "data.dataset")


@dataclass(frozen=True)
class StudyTerms:
    """What a coordinator needs, wherever it runs (the API, a worker's pool child, its sweeper)."""

    uow_factory: UowFactory
    dispatcher: JobDispatcher
    budget: Budget
    stale_after_s: float
    count_trial: Callable[[str], None] | None = None  # kiln_study_trials_total{outcome}, in the process that settles it


def checked_template(spec: StudySpec, terms: StudyTerms) -> dict[str, Any]:
    """The job template as trials will start from it (every default spelt out, its base pinned), once every path exists,
    every value has the right type, and the job is valid, with its objective, at each range's edges: else InvalidSpec
    naming the path."""
    template = spec.job.model_dump(mode="json")
    for path, param in spec.search_space.items():
        if any(path == fixed or path.startswith(f"{fixed}.") for fixed in FIXED):
            raise InvalidSpec(f"{path} is the same for every trial of a study: set it in the job", field=f"search_space.{path}")
        paths.check(template, path)
        current = paths.value(template, path)
        if isinstance(param, FloatParam) and isinstance(current, int) and not isinstance(current, bool):
            raise InvalidSpec(f"{path} is an integer ({current} in the job): search it with type int, or categorical",
                              field=f"search_space.{path}")  # fmt: skip
    with terms.uow_factory() as uow:
        resolved, stored, _ = prepare_body(template, uow, terms)
    _check_objective(spec, resolved, field="objective.metric")
    template["data"]["dataset"] = stored["data"]["dataset"]  # an upload by its canonical id, as jobs name it
    template = _pin_base(template, resolved)
    for path, param in spec.search_space.items():
        for value in param.bounds:
            with terms.uow_factory() as uow:  # one short transaction each: SQLite has one writer
                try:
                    edge, _, _ = prepare_body(paths.assign(template, {path: value}), uow, terms)
                    _check_objective(spec, edge, field=f"search_space.{path}")
                except KilnError as err:
                    where = f" (at {err.field})" if err.field and err.field not in ("body", f"search_space.{path}") else ""
                    raise InvalidSpec(f"{path} = {value!r} (an edge of its range) makes the job invalid{where}: {err.message}",
                                      field=f"search_space.{path}") from None  # fmt: skip
    return template


def prepare_body(body: dict[str, Any], uow: UnitOfWork, terms: StudyTerms) -> tuple[JobSpec, dict[str, Any], str]:
    """A job body checked as `POST /v1/jobs` checks one (the schema, shapes, budget and dataset): the spec, the spec as
    stored, and its queue."""
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidSpec(first["msg"], field=format_loc(tuple(first["loc"]))) from None
    return prepare_job(spec, uow, uow_factory=terms.uow_factory, budget=terms.budget, stale_after_s=terms.stale_after_s)


def _check_objective(spec: StudySpec, job: JobSpec, *, field: str) -> None:
    known = epoch_figures(job)
    if spec.objective.metric not in known:
        hint = " (set job.data.validation_split to have val_ figures)" if spec.objective.metric.startswith("val_") else ""
        raise InvalidSpec(f"the job records no '{spec.objective.metric}' each epoch: expected one of {', '.join(sorted(known))}{hint}",
                          field=field)  # fmt: skip


def _pin_base(template: dict[str, Any], resolved: JobSpec) -> dict[str, Any]:
    """Every trial starts from the base version the template resolved to now, even if its alias moves mid-study."""
    base = resolved.network.base if resolved.kind != "gan" else None
    if base is None:
        return template
    return paths.assign(template, {"model.base.version": base.version, "model.base.alias": None})
