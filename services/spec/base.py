"""What every layer spec shares: strict Keras-named arguments and shape helpers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


KERAS_DEFAULT = 0.01  # keras.regularizers.get("l2") is L2(0.01)


class Regularizer(Strict):
    """`{"l1": a, "l2": b}`: adds `l1 * sum(|w|) + l2 * sum(w**2)` to the training loss.

    Accepts Keras' forms: `"l1"`, `"l2"` (0.01 each), `"l1_l2"` (0.01 and 0.01, as tf.keras' `l1_l2()`),
    `{"l1": a}`, `{"l2": b}` and `{"l1_l2": {"l1": a, "l2": b}}`.
    """

    l1: float = Field(default=0.0, ge=0.0, le=1e3)
    l2: float = Field(default=0.0, ge=0.0, le=1e3)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            forms = {"l1": {"l1": KERAS_DEFAULT}, "l2": {"l2": KERAS_DEFAULT}, "l1_l2": {"l1": KERAS_DEFAULT, "l2": KERAS_DEFAULT}}
            if data not in forms:
                raise ValueError(f"expected 'l1', 'l2', 'l1_l2' or an object such as {{\"l2\": 0.01}}, got {data!r}")
            return forms[data]
        if isinstance(data, dict) and set(data) == {"l1_l2"}:
            both = data["l1_l2"]
            return both if isinstance(both, dict) else {"l1": both, "l2": both}
        return data

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.l2 > 0


LayerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")]


class LayerSpec(Strict):
    """What every layer answers besides its output shape: its weights, as torch counts them, and what training keeps.

    The defaults suit layers without weights that keep only their output (Dropout, Flatten, pooling).
    Every layer may be named (unnamed ones get Keras' automatic names) and may list the names of the
    layers or model inputs it reads; without `inputs` it reads the previous layer's output.
    """

    name: LayerName | None = None
    inputs: list[LayerName] | None = Field(default=None, min_length=1, max_length=64)
    trainable: bool = True  # False: its weights keep their initial (or base) values
    activity_regularizer: Regularizer | None = None  # a penalty on the layer's output

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


@contextmanager
def fields_under(prefix: str) -> Iterator[None]:
    """Errors about a model met under `prefix` name their field there: `model.layers[2]` -> `model.generator.layers[2]`."""
    from services.errors import InvalidSpec

    try:
        yield
    except InvalidSpec as err:
        if err.field is not None and err.field.startswith("model") and prefix != "model":
            err.field = prefix + err.field[len("model") :]
        raise
