"""How a layer's weights start, what they cost in the loss, and what bounds them: Keras' initializers,
regularizers and constraints, each accepted in Keras' short forms and kept in one normal form."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from services.spec.base import LayerSpec, Regularizer, Strict

ConstraintName = Literal["max_norm", "non_neg", "unit_norm"]


class Constraint(Strict):
    """A bound applied to a kernel after every optimizer step, as Keras' `kernel_constraint`.

    `axis` is in Keras' kernel layout: Dense `(in, out)`, Conv1D `(k, in, out)`, Conv2D `(kh, kw, in, out)`,
    so the default `axis=0` bounds the weights each output unit receives from one input position.
    Accepts `"max_norm"`, `"non_neg"`, `"unit_norm"`, `{"max_norm": 3}` and `{"max_norm": {"max_value": 3, "axis": [0, 1, 2]}}`.
    """

    name: ConstraintName
    max_value: float = Field(default=2.0, gt=0.0)  # max_norm only
    axis: int | list[int] = 0

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in ("max_norm", "non_neg", "unit_norm"):
            ((name, arguments),) = data.items()
            if isinstance(arguments, dict):
                return {"name": name, **arguments}
            return {"name": name} if arguments is None else {"name": name, "max_value": arguments}
        return data

    def axes(self) -> list[int]:
        return [self.axis] if isinstance(self.axis, int) else list(self.axis)


InitializerName = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "zeros", "ones", "constant", "random_normal", "random_uniform", "truncated_normal", "orthogonal",
]  # fmt: skip


class Initializer(Strict):
    """How a weight starts, by Keras name: `"he_normal"`, or `{"name": "random_normal", "stddev": 0.02}`."""

    name: InitializerName
    value: float = 0.0  # constant
    mean: float = 0.0  # random_normal, truncated_normal
    stddev: float = Field(default=0.05, gt=0.0)
    minval: float = -0.05  # random_uniform
    maxval: float = 0.05
    gain: float = Field(default=1.0, gt=0.0)  # orthogonal

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


def _initializer(name: str, **arguments: float) -> Any:
    return Field(default_factory=lambda: Initializer(name=name, **arguments))  # type: ignore[arg-type]


def _check_axes(constraint: Constraint | None, rank: int, argument: str) -> None:
    if constraint is None:
        return
    axes = [axis % rank if -rank <= axis < rank else None for axis in constraint.axes()]
    if None in axes or len(set(axes)) != len(axes):
        raise ValueError(f"{argument}: axis {constraint.axis} does not fit a kernel of rank {rank} "
                         f"(Keras' layout; give distinct axes from {-rank} to {rank - 1})")  # fmt: skip


class KernelArguments(LayerSpec):
    """Keras' arguments of a layer with a kernel and a bias (Dense and the convolutions)."""

    KERNEL_RANK: ClassVar[int] = 2  # Dense (in, out); Conv1D (k, in, out) is 3, the 2D convolutions 4

    kernel_initializer: Initializer = _initializer("glorot_uniform")
    bias_initializer: Initializer = _initializer("zeros")
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    kernel_constraint: Constraint | None = None

    @model_validator(mode="after")
    def _constraint_fits(self) -> KernelArguments:
        _check_axes(self.kernel_constraint, self.KERNEL_RANK, "kernel_constraint")
        return self


class RecurrentArguments(LayerSpec):
    """Keras' weight arguments of SimpleRNN, LSTM and GRU."""

    kernel_initializer: Initializer = _initializer("glorot_uniform")
    recurrent_initializer: Initializer = _initializer("orthogonal")
    bias_initializer: Initializer = _initializer("zeros")
    kernel_regularizer: Regularizer | None = None
    recurrent_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None


class EmbeddingArguments(LayerSpec):
    """Keras' weight arguments of Embedding."""

    embeddings_initializer: Initializer = _initializer("random_uniform", minval=-0.05, maxval=0.05)
    embeddings_regularizer: Regularizer | None = None
    embeddings_constraint: Constraint | None = None

    @model_validator(mode="after")
    def _constraint_fits(self) -> EmbeddingArguments:
        _check_axes(self.embeddings_constraint, 2, "embeddings_constraint")
        return self


def regularized(layer: LayerSpec) -> bool:
    """Whether the layer adds anything to the training loss."""
    return any(isinstance(value, Regularizer) and value.active for _, value in layer)


PENALIZING = ("kernel_regularizer", "bias_regularizer", "recurrent_regularizer", "embeddings_regularizer",
              "activity_regularizer", "kernel_constraint")  # fmt: skip


def penalized_argument(layer: Any) -> str | None:
    """The first regularizer or constraint a layer (or the RNN a Bidirectional wraps) is given, or None."""
    for candidate in (layer, getattr(layer, "layer", None)):
        for argument in PENALIZING:
            if candidate is not None and getattr(candidate, argument, None) is not None:
                return argument
    return None
