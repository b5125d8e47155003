"""Core layers: Dense, Dropout, Activation, Flatten, Reshape and the normalisations."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from services.spec.base import ActivationName, LayerSpec, Shape, ShapeError, need_rank, show
from services.spec.weights import KernelArguments


class DenseLayer(KernelArguments):
    """`Dense(units, activation=None, use_bias=True)`: a fully connected layer on a flat input."""

    type: Literal["Dense"]
    units: int = Field(gt=0, le=65_536)
    activation: ActivationName = "linear"
    use_bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 1, "a flat input", "add Flatten before it")
        return (self.units,)

    def parameter_count(self, shape: Shape) -> int:
        return shape[0] * self.units + (self.units if self.use_bias else 0)


class DropoutLayer(LayerSpec):
    """`Dropout(rate)`: zeroes a fraction of inputs while training; identity at inference."""

    type: Literal["Dropout"]
    rate: float = Field(ge=0.0, lt=1.0)

    def output_shape(self, shape: Shape) -> Shape:
        return shape


class ActivationLayer(LayerSpec):
    """`Activation(activation)`: applies an activation function on its own."""

    type: Literal["Activation"]
    activation: ActivationName

    def output_shape(self, shape: Shape) -> Shape:
        return shape


class FlattenLayer(LayerSpec):
    """`Flatten()`: turns each sample into one flat vector, so Dense can follow."""

    type: Literal["Flatten"]

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


class ReshapeLayer(LayerSpec):
    """`Reshape(target_shape)`: one dimension may be -1, inferred from the others."""

    type: Literal["Reshape"]
    target_shape: list[int] = Field(min_length=1, max_length=4)

    @field_validator("target_shape")
    @classmethod
    def _one_unknown(cls, value: list[int]) -> list[int]:
        if value.count(-1) > 1 or any(d == 0 or d < -1 for d in value):
            raise ValueError("dimensions must be positive, with at most one -1")
        return value

    def output_shape(self, shape: Shape) -> Shape:
        total, known = math.prod(shape), math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape and total % known == 0:
            return tuple(total // known if d == -1 else d for d in self.target_shape)
        if known != total or -1 in self.target_shape:
            raise ShapeError(f"cannot reshape {show(shape)} ({total} values) to {tuple(self.target_shape)}")
        return tuple(self.target_shape)


class BatchNormalizationLayer(LayerSpec):
    """`BatchNormalization(momentum=0.99, epsilon=0.001)` over the last (channels) axis."""

    type: Literal["BatchNormalization"]
    momentum: float = Field(default=0.99, gt=0.0, lt=1.0)
    epsilon: float = Field(default=1e-3, gt=0.0)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def parameter_count(self, shape: Shape) -> int:
        return 2 * shape[-1]  # a scale and a shift per channel; the running statistics are buffers


class LayerNormalizationLayer(LayerSpec):
    """`LayerNormalization(epsilon=0.001)` over the last axis."""

    type: Literal["LayerNormalization"]
    epsilon: float = Field(default=1e-3, gt=0.0)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def parameter_count(self, shape: Shape) -> int:
        return 2 * shape[-1]
