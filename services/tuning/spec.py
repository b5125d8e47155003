"""The body of `POST /v1/studies`: a job template, the ranges to search, the objective, the sampler and the pruner."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from services.spec.base import Strict
from services.spec.job import JobSpec, monitor_mode

Choice = str | int | float | bool | None  # what Optuna's CategoricalDistribution holds
MAX_GRID = 100_000


class FloatParam(Strict):
    """`{"type": "float", "low": 1e-4, "high": 0.3, "log": true}`; with `step`, only low, low + step, ... up to high."""

    type: Literal["float"]
    low: float = Field(ge=-1e15, le=1e15)
    high: float = Field(ge=-1e15, le=1e15)
    log: bool = False
    step: float | None = Field(default=None, gt=0, le=1e15)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        if self.step is not None and self.step < 1e-12:
            raise ValueError(f"step must be at least 1e-12, got {self.step}")
        return self

    def _point(self, i: int) -> float:
        assert self.step is not None
        return float(Decimal(str(self.low)) + i * Decimal(str(self.step)))

    def values(self) -> list[float]:
        """The grid's points (a stepped range only), as Optuna's FloatDistribution has them."""
        return [self._point(i) for i in range(self.count)]

    @property
    def count(self) -> int:
        """Points of a stepped range, high trimmed to the last step below it as Optuna trims it (in decimal arithmetic)."""
        if self.step is None:
            return 0  # a grid refuses an unstepped float range before it counts
        return int((Decimal(str(self.high)) - Decimal(str(self.low))) // Decimal(str(self.step))) + 1

    @property
    def bounds(self) -> list[Any]:
        return [self.low, self._point(self.count - 1) if self.step else self.high]


class IntParam(Strict):
    """`{"type": "int", "low": 16, "high": 256, "log": true}`: integers from low to high, both included, every `step`."""

    type: Literal["int"]
    low: int = Field(ge=-(2**53), le=2**53)
    high: int = Field(ge=-(2**53), le=2**53)
    log: bool = False
    step: int = Field(default=1, ge=1, le=2**53)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    @property
    def bounds(self) -> list[Any]:
        return [self.low, self.low + (self.count - 1) * self.step]


class CategoricalParam(Strict):
    """`{"type": "categorical", "choices": [16, 32, 64]}`: JSON scalars (strings, numbers, booleans or null)."""

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=1000)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Choice]) -> list[Choice]:
        keyed = [(type(c).__name__, c) for c in choices]
        if len(set(keyed)) != len(keyed):
            raise ValueError("choices must be distinct")
        return choices

    def values(self) -> list[Choice]:
        return list(self.choices)

    @property
    def count(self) -> int:
        return len(self.choices)

    @property
    def bounds(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not be above high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("give log or step, not both")


class Objective(Strict):
    """What a trial is scored by: a per-epoch figure of the job (`val_accuracy`, `val_loss`, `loss`, ...)."""

    metric: str = Field(min_length=1, max_length=64)
    direction: Literal["maximize", "minimize", "auto"] = "auto"  # auto: as Keras' monitors, maximise accuracy-like figures

    @property
    def maximize(self) -> bool:
        if self.direction != "auto":
            return self.direction == "maximize"
        return monitor_mode(self.metric) == "max"


class SamplerSpec(Strict):
    """How the next trial's values are chosen: `grid`, `random` or `tpe` (Optuna's, with constant_liar)."""

    type: Literal["grid", "random", "tpe"] = "tpe"
    n_startup_trials: int = Field(default=10, ge=0, le=1000)  # tpe: random trials before it models the results


class PrunerSpec(Strict):
    """Which running trials stop early: `none`, `median` or `successive_halving` (asynchronous), from each epoch's objective."""

    type: Literal["none", "median", "successive_halving"] = "none"
    n_startup_trials: int = Field(default=5, ge=0, le=1000)  # median: complete trials before it prunes any
    n_warmup_steps: int = Field(default=0, ge=0, le=10_000)  # median: epochs a trial runs before it may be pruned
    min_resource: int = Field(default=1, ge=1, le=10_000)  # successive_halving: epochs at the first rung
    reduction_factor: int = Field(default=3, ge=2, le=100)  # successive_halving: 1/this of the trials go on at each rung


def _by_type(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class StudySpec(Strict):
    """The body of `POST /v1/studies`. Search-space keys are paths into the job as Kiln stores it
    (`training.optimizer.learning_rate`, `model.layers[0].units`)."""

    study_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    job: JobSpec
    search_space: dict[str, Param] = Field(min_length=1, max_length=32)
    objective: Objective
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    max_trials: int = Field(default=20, ge=1, le=1000)
    parallelism: int = Field(default=1, ge=1, le=64)
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86400)  # no trial starts after this; running ones are stopped
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    best_alias: str = Field(default="best", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

    _sampler_by_name = field_validator("sampler", "pruner", mode="before")(_by_type)

    @model_validator(mode="after")
    def _grid_is_finite(self) -> StudySpec:
        if self.sampler.type != "grid":
            return self
        size = 1
        for path, param in self.search_space.items():
            if isinstance(param, FloatParam) and param.step is None:
                raise ValueError(f"the grid sampler needs every range stepped: give search_space['{path}'] a step, or choices")
            size *= param.count
            if size > MAX_GRID:
                raise ValueError(f"the grid has more than {MAX_GRID} points: use random or tpe, or coarser steps")
        return self

    def grid(self) -> dict[str, list[Choice]]:
        return {path: list(param.values()) for path, param in self.search_space.items()}

    @property
    def grid_size(self) -> int | None:
        return math.prod(len(v) for v in self.grid().values()) if self.sampler.type == "grid" else None
