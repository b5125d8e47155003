"""services/tuning and the trial views: paths into a job, the study body's checks, Optuna rebuilt from rows."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from services.errors import InvalidSpec
from services.registry.entities import JobState, Trial
from services.registry.tables import utcnow
from services.spec import JobSpec
from services.tuning import paths, search
from services.tuning.search import TrialView
from services.tuning.spec import StudySpec
from services.usecases.trials import best_of, objective_value, trial_state
from tests.factories import job_body

TEMPLATE = JobSpec.model_validate(job_body()).model_dump(mode="json")


def spec(**fields: Any) -> StudySpec:
    body = {"study_name": "s", "job": job_body(), "objective": {"metric": "val_accuracy"},
            "search_space": {"training.optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 0.3, "log": True}}}  # fmt: skip
    return StudySpec.model_validate(body | fields)


def test_paths_parse_check_and_assign() -> None:
    assert paths.parse("model.layers[0].units") == ["model", "layers", 0, "units"]
    paths.check(TEMPLATE, "model.layers[0].units")
    paths.check(TEMPLATE, "training.batch_size")  # a default the template left out, spelt out in the stored job
    changed = paths.assign(TEMPLATE, {"model.layers[0].units": 7, "training.optimizer.learning_rate": 0.5})
    assert changed["model"]["layers"][0]["units"] == 7 and changed["training"]["optimizer"]["learning_rate"] == 0.5
    assert TEMPLATE["model"]["layers"][0]["units"] == 128  # a copy


@pytest.mark.parametrize(
    ("path", "words"),
    [("model.layers[3].units", "has 3 item"), ("model.nope", "has no 'nope'"), ("training.early_stopping.patience", "not set"),
     ("model..units", "is not a path"), ("training.optimizer", "names an object"), ("model.layers[0].units[1]", "is not a list")],
)  # fmt: skip
def test_a_path_the_job_does_not_have_names_itself(path: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        paths.check(TEMPLATE, path)
    assert err.value.field == f"search_space.{path}" and words in err.value.message


@pytest.mark.parametrize(
    ("param", "words"),
    [({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log range needs low > 0"),
     ({"type": "int", "low": 5, "high": 1}, "must not be above"),
     ({"type": "float", "low": 1.0, "high": 2.0, "log": True, "step": 0.5}, "log or step"),
     ({"type": "categorical", "choices": [1, 1]}, "distinct"),
     ({"type": "categorical", "choices": [{"name": "adam"}]}, "choices"),
     ({"type": "uniform", "low": 0, "high": 1}, "type"),
     ({"type": "int", "low": 0, "high": 10**30}, "less than or equal"),
     ({"type": "float", "low": 0, "high": 1, "step": 1e-320}, "at least 1e-12"),
     ({"type": "float", "low": -1e308, "high": 1e308}, "greater than or equal")],
)  # fmt: skip
def test_bad_ranges_are_refused(param: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(search_space={"training.batch_size": param})
    assert words in str(err.value)


def test_a_grid_needs_stepped_ranges_and_counts_its_points() -> None:
    with pytest.raises(ValidationError, match="needs every range stepped"):
        spec(sampler="grid")
    space = {"training.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
             "model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}}  # fmt: skip
    grid = spec(sampler="grid", search_space=space)
    assert grid.grid() == {"training.batch_size": [16, 32, 48, 64], "model.layers[1].rate": [0.0, 0.25, 0.5]}
    assert grid.grid_size == 12
    assert grid.search_space["training.batch_size"].bounds == [16, 64]
    # A high off the step is trimmed to the last step below it, in decimal arithmetic, as Optuna's distribution trims it.
    trimmed = spec(sampler="grid", search_space={"model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.5 - 1e-12, "step": 0.1}})
    assert trimmed.grid() == {"model.layers[1].rate": [0.0, 0.1, 0.2, 0.3, 0.4]}
    distribution = search.distributions(trimmed)["model.layers[1].rate"]
    assert distribution.high == 0.4 and all(distribution._contains(v) for v in trimmed.grid()["model.layers[1].rate"])


def test_the_grid_visits_every_point_once_whatever_runs_meanwhile() -> None:
    grid = spec(sampler="grid", search_space={"training.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
                                              "training.epochs": {"type": "int", "low": 1, "high": 2}})  # fmt: skip
    trials: list[TrialView] = []
    for number in range(6):
        params, attrs = search.ask(grid, trials)
        state = "running" if number % 2 else "complete"
        trials.append(TrialView(number, params, state, value=0.5 if state == "complete" else None, system_attrs=attrs))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_trials_asked_while_others_run_differ_and_a_rebuild_asks_the_same(sampler: str) -> None:
    study = spec(sampler=sampler)
    trials: list[TrialView] = []
    for number in range(4):
        params, attrs = search.ask(study, trials)
        trials.append(TrialView(number, params, "running", system_attrs=attrs))
    rates = [t.params["training.optimizer.learning_rate"] for t in trials]
    assert len(set(rates)) == 4 and all(1e-4 <= r <= 0.3 for r in rates)
    assert search.ask(study, trials[:2])[0] == trials[2].params  # the same history samples the same


def test_the_median_pruner_stops_a_trial_below_the_completed_ones() -> None:
    study = spec(pruner={"type": "median", "n_startup_trials": 1})
    done = TrialView(0, {"training.optimizer.learning_rate": 0.01}, "complete", 0.9, {1: 0.8, 2: 0.9})
    assert search.should_prune(study, [done, TrialView(1, {"training.optimizer.learning_rate": 1e-4}, "running", None, {1: 0.1})], 1)[0]
    assert not search.should_prune(study, [done, TrialView(1, {"training.optimizer.learning_rate": 0.02}, "running", None, {1: 0.85})], 1)[
        0
    ]
    assert not search.should_prune(spec(), [done, TrialView(1, {}, "running", None, {1: 0.1})], 1)[0]  # pruner none


def test_successive_halving_writes_its_rung_on_the_trial_and_judges_by_the_others() -> None:
    study = spec(pruner={"type": "successive_halving", "min_resource": 1, "reduction_factor": 2})
    lr = "training.optimizer.learning_rate"
    prune, attrs = search.should_prune(study, [TrialView(0, {lr: 0.01}, "running", None, {1: 0.5})], 0)
    assert (prune, attrs) == (False, {"completed_rung_0": 0.5})  # the first at its rung: nothing to compare with
    ahead = [TrialView(n, {lr: 0.01 * (n + 1)}, "complete", v, {1: v}, {"completed_rung_0": v}) for n, v in enumerate((0.9, 0.8, 0.85))]
    assert search.should_prune(study, [*ahead, TrialView(3, {lr: 1e-4}, "running", None, {1: 0.1})], 3) == (True, {"completed_rung_0": 0.1})
    assert not search.should_prune(study, [*ahead, TrialView(3, {lr: 0.02}, "running", None, {1: 0.95})], 3)[0]


def test_importances_need_four_complete_trials() -> None:
    study = spec(search_space={"training.optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
                               "training.batch_size": {"type": "categorical", "choices": [16, 32]}})  # fmt: skip
    trials = [TrialView(n, {"training.optimizer.learning_rate": 10 ** -(n % 4 + 1), "training.batch_size": 16 * (1 + n % 2)},
                        "complete", value=1 - 0.2 * (n % 4)) for n in range(6)]  # fmt: skip
    assert search.importances(study, trials[:3]) is None
    found = search.importances(study, trials)
    assert found is not None and set(found) == set(study.search_space) and sum(found.values()) == pytest.approx(1.0, abs=1e-3)
    assert found["training.optimizer.learning_rate"] > found["training.batch_size"]  # the value follows the rate alone


def _trial(epochs: list[dict[str, float]], state: JobState = JobState.SUCCEEDED, **params: Any) -> Trial:
    return Trial(number=0, job_id=uuid.uuid4(), params=params, system_attrs={}, outcome=None, value=None, error=None,
                 created_at=utcnow(), job_state=state, epochs=epochs)  # fmt: skip


def test_a_trials_value_is_its_registered_epochs() -> None:
    epochs = [{"val_accuracy": 0.5, "val_loss": 1.0}, {"val_accuracy": 0.9, "val_loss": 0.4}, {"val_accuracy": 0.7, "val_loss": 0.6}]
    study = spec()
    assert objective_value(study, TEMPLATE, _trial(epochs)) == 0.7  # the last epoch's weights were registered
    restoring = paths.assign(TEMPLATE, {"training.early_stopping": {"monitor": "val_loss", "patience": 1, "restore_best_weights": True}})
    assert objective_value(study, restoring, _trial(epochs)) == 0.9  # early stopping restored epoch 2's
    assert objective_value(study, TEMPLATE, _trial([{"val_accuracy": float("nan")}])) is None


def test_trial_states_follow_their_job_until_settled() -> None:
    assert [trial_state(_trial([], state)) for state in JobState] == ["running", "running", "complete", "failed", "cancelled"]
    no_job = Trial(number=1, job_id=None, params={}, system_attrs={}, outcome=None, value=None, error="x", created_at=utcnow())
    assert trial_state(no_job) == "failed"
    views = [TrialView(0, {}, "complete", 0.8), TrialView(1, {}, "complete", 0.9), TrialView(2, {}, "complete", 0.9),
             TrialView(3, {}, "pruned")]  # fmt: skip
    assert best_of(spec(), views).number == 1  # the earliest of equals
    assert best_of(spec(objective={"metric": "val_loss"}), views).number == 0  # auto: a loss is minimised
