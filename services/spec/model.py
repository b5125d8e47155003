"""Pydantic models of a training job, named after Keras so Sequential code translates one to one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ActivationName = Literal["relu", "sigmoid", "tanh", "softmax", "linear"]
LossName = Literal["sparse_categorical_crossentropy", "binary_crossentropy", "mse"]
DeviceName = Literal["auto", "cpu", "gpu"]


class _Strict(BaseModel):
    # A misspelt argument ("activaton") must be an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DenseLayer(_Strict):
    """`Dense(units, activation=None, use_bias=True)`: a fully connected layer on a flat input."""

    type: Literal["Dense"]
    units: int = Field(gt=0, le=65_536)
    activation: ActivationName = "linear"
    use_bias: bool = True


class DropoutLayer(_Strict):
    """`Dropout(rate)`: zeroes a fraction of inputs while training; identity at inference."""

    type: Literal["Dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


class ActivationLayer(_Strict):
    """`Activation(activation)`: applies an activation function on its own."""

    type: Literal["Activation"]
    activation: ActivationName


class FlattenLayer(_Strict):
    """`Flatten()`: turns each sample into one flat vector, so Dense can follow."""

    type: Literal["Flatten"]


Layer = Annotated[
    DenseLayer | DropoutLayer | ActivationLayer | FlattenLayer,
    Field(discriminator="type"),
]


class ModelSpec(_Strict):
    """A Keras Sequential model: the per-sample `input_shape` (no batch axis) and its layers."""

    input_shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=4)
    layers: list[Layer] = Field(min_length=1, max_length=256)


class DataSpec(_Strict):
    """Which dataset to train on and how much of its training part to hold out for validation."""

    dataset: str = Field(min_length=1, max_length=128)
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)


class OptimizerSpec(_Strict):
    """An optimizer by Keras name; `"adam"` alone is accepted as in `model.compile(optimizer="adam")`."""

    name: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # sgd only


class TrainingSpec(_Strict):
    """`compile` and `fit` arguments."""

    optimizer: OptimizerSpec = OptimizerSpec()
    loss: LossName
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # the same seed gives the same split and weights

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class JobSpec(_Strict):
    """The body of `POST /v1/jobs`. Later versions add fields; these names never change."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    device: DeviceName = "auto"
