"""What every layer spec shares: strict Keras-named arguments and shape helpers."""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, model_validator

ActivationName = Literal[
    "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh", "softmax", "linear"
]  # fmt: skip
Padding = Literal["valid", "same"]
Shape = tuple[int, ...]  # one sample's shape, without the batch axis


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; the message says why and what to do."""


class Strict(BaseModel):
    # A misspelt argument ("activaton") must be an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """`"epochs": true` is a mistake, not 1: pydantic's lax mode would read it as a number."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
                    raise ValueError(f"{name}: expected a number or a name, got a boolean ({str(value).lower()})")
        return data


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a boolean (bool itself, or a union or Literal with one)."""
    if annotation is bool or annotation is Any:
        return True
    return any(arg is bool or (isinstance(arg, bool)) or _takes_bool(arg) for arg in get_args(annotation))


class LayerSpec(Strict):
    """What every layer answers besides its output shape: its weights, as torch counts them, and what training keeps.

    The defaults suit layers without weights that keep only their output (Dropout, Flatten, pooling).
    """

    def parameter_count(self, shape: Shape) -> int:
        """The number of trainable parameters the torch module built for this layer on input `shape` holds."""
        return 0

    def activation_count(self, shape: Shape, output: Shape) -> int:
        """Values per sample that training keeps for the backward pass: the output, and what the layer makes inside."""
        return math.prod(output)


def show(shape: Shape) -> str:
    """`(None, 13, 13, 32)`: the shape as Keras prints it, batch first."""
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def need_rank(shape: Shape, rank: int, what: str, fix: str) -> None:
    if len(shape) != rank:
        raise ShapeError(f"needs {what}, got {show(shape)}: {fix}")


def conv_length(size: int, kernel: int, stride: int, padding: Padding) -> int:
    """Output length of a convolution or pooling window along one axis, as Keras computes it."""
    if padding == "same":
        return math.ceil(size / stride)
    if size < kernel:
        raise ShapeError(f"window {kernel} is larger than the input length {size}: use padding 'same' or a smaller window")
    return (size - kernel) // stride + 1
