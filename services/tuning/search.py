"""Optuna's samplers and pruners on an in-memory study, rebuilt from Kiln's trial rows each time it is asked.

Optuna's own RDB storage is never used: it runs Alembic migrations on the `alembic_version` table Kiln's
own migrations use, and its FAQ advises against SQLite for parallel studies. SQL rows are the truth;
this module turns them into an Optuna study (`add_trial`), asks it or lets its pruner judge, and hands
back what Optuna wrote on the trial (its system attributes: a grid point, a successive-halving rung),
which the caller stores with the trial so the next rebuild sees it.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.tuning.spec import CategoricalParam, FloatParam, StudySpec

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
MIN_FOR_IMPORTANCE = 4  # complete trials before parameter importances mean anything


@dataclass(frozen=True)
class TrialView:
    """What the search needs of one trial: its values, where it stands, and each epoch's objective."""

    number: int
    params: dict[str, Any]
    state: str  # running, complete, pruned, failed, cancelled
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)  # epoch -> the objective's value
    system_attrs: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(spec: StudySpec) -> dict[str, Any]:
    dist = _optuna().distributions
    out: dict[str, Any] = {}
    for path, param in spec.search_space.items():
        if isinstance(param, CategoricalParam):
            out[path] = dist.CategoricalDistribution(param.choices)
        elif isinstance(param, FloatParam):
            out[path] = dist.FloatDistribution(param.low, param.bounds[1], log=param.log, step=param.step)  # high on its last step
        else:
            out[path] = dist.IntDistribution(param.low, param.bounds[1], log=param.log, step=param.step)
    return out


def _sampler(spec: StudySpec, number: int) -> Any:
    """Seeded per trial number: a rebuilt study given the same history samples the same, and trials differ. (The grid's
    seed orders its points, which trials name by index in their system attributes, so it stays the study's.)"""
    samplers = _optuna().samplers
    if spec.sampler.type == "grid":
        return samplers.GridSampler(spec.grid(), seed=spec.seed)
    seed = (spec.seed * 1_000_003 + number) % 2**32
    if spec.sampler.type == "random":
        return samplers.RandomSampler(seed=seed)
    return samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=spec.sampler.n_startup_trials)


def _pruner(spec: StudySpec) -> Any:
    pruners, p = _optuna().pruners, spec.pruner
    if p.type == "median":
        return pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "successive_halving":
        return pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    return pruners.NopPruner()


def rebuild(spec: StudySpec, trials: list[TrialView], *, number: int) -> optuna.Study:
    """An in-memory study holding `trials` in order (their numbers are their positions)."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    study = optuna.create_study(direction="maximize" if spec.objective.maximize else "minimize", sampler=_sampler(spec, number),
                                pruner=_pruner(spec), study_name="kiln")  # fmt: skip
    space = distributions(spec)
    for trial in sorted(trials, key=lambda t: t.number):
        complete = trial.state == "complete" and trial.value is not None and math.isfinite(trial.value)
        state = (
            states.COMPLETE if complete
            else states.RUNNING if trial.state == "running"
            else states.PRUNED if trial.state == "pruned"
            else states.FAIL
        )  # fmt: skip
        params = {k: v for k, v in trial.params.items() if k in space}
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: space[k] for k in params}, state=state, value=trial.value if complete else None,
                intermediate_values={step: v for step, v in trial.intermediate.items() if math.isfinite(v)},
                system_attrs=trial.system_attrs,
            ))  # fmt: skip
        except ValueError:  # values the space cannot hold (stored by an earlier Kiln): kept in place, as a failed trial
            log.warning("trial %d's values %s are outside the search space; counted as failed", trial.number, trial.params)
            study.add_trial(optuna.trial.create_trial(state=states.FAIL, system_attrs=trial.system_attrs))
    return study


def ask(spec: StudySpec, trials: list[TrialView]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next trial's values (trial number len(trials)) and what the sampler wrote on it."""
    study = rebuild(spec, trials, number=len(trials))
    trial = study.ask(distributions(spec))
    return dict(trial.params), dict(study.trials[-1].system_attrs)


def should_prune(spec: StudySpec, trials: list[TrialView], number: int) -> tuple[bool, dict[str, Any]]:
    """Whether trial `number` (running, its epochs so far in `intermediate`) should stop, and its system attributes after."""
    if spec.pruner.type == "none":
        return False, {}
    study = rebuild(spec, trials, number=number)
    frozen = study.trials[number]
    if frozen.last_step is None:
        return False, dict(frozen.system_attrs)
    prune = bool(study.pruner.prune(study, frozen))
    return prune, dict(study.trials[number].system_attrs)


def importances(spec: StudySpec, trials: list[TrialView]) -> dict[str, float] | None:
    """fANOVA's share of the objective's variance per parameter, once enough trials are complete; None before."""
    complete = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
    if len(complete) < MIN_FOR_IMPORTANCE or len(spec.search_space) < 1:
        return None
    optuna = _optuna()
    study = rebuild(spec, complete, number=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):  # every complete trial had the same values, say
        log.info("parameter importances not computed", exc_info=True)
        return None
    return {path: round(float(share), 6) for path, share in found.items()}
