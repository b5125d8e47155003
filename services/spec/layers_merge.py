"""Merge layers of the functional API: they read two or more tensors, named in `inputs`."""

from __future__ import annotations

import math
from typing import Literal

from services.spec.base import LayerSpec, Shape, ShapeError, show


class MergeLayer(LayerSpec):
    """`Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`: element-wise over inputs of one shape."""

    type: Literal["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]

    def merge_shape(self, shapes: list[Shape]) -> Shape:
        _need_inputs(shapes, exactly=2 if self.type == "Subtract" else None)
        if any(shape != shapes[0] for shape in shapes):
            raise ShapeError(f"needs inputs of one shape, got {_listed(shapes)}: add Dense or Reshape so they agree")
        return shapes[0]

    def output_shape(self, shape: Shape) -> Shape:
        return self.merge_shape([shape])


class ConcatenateLayer(LayerSpec):
    """`Concatenate(axis=-1)`: joins inputs along `axis`, counted as Keras counts it (0 is the batch axis)."""

    type: Literal["Concatenate"]
    axis: int = -1

    def merge_shape(self, shapes: list[Shape]) -> Shape:
        _need_inputs(shapes)
        rank = len(shapes[0])
        if any(len(shape) != rank for shape in shapes):
            raise ShapeError(f"needs inputs of one rank, got {_listed(shapes)}")
        axis = self.axis if self.axis > 0 else rank + 1 + self.axis  # with the batch axis, as Keras counts
        if not 1 <= axis <= rank:
            raise ShapeError(f"axis {self.axis} is not a feature axis of {_listed(shapes)}: use -1 or 1..{rank}")
        joined = axis - 1
        rest = [shape[:joined] + shape[joined + 1 :] for shape in shapes]
        if any(other != rest[0] for other in rest):
            raise ShapeError(f"needs inputs that agree on every axis but {self.axis}, got {_listed(shapes)}")
        return (*shapes[0][:joined], sum(shape[joined] for shape in shapes), *shapes[0][joined + 1 :])

    def output_shape(self, shape: Shape) -> Shape:
        return self.merge_shape([shape])

    def activation_count(self, shape: Shape, output: Shape) -> int:
        return math.prod(output)


def _need_inputs(shapes: list[Shape], exactly: int | None = None) -> None:
    if exactly is not None and len(shapes) != exactly:
        raise ShapeError(f"needs exactly {exactly} inputs, got {len(shapes)}: list them in 'inputs'")
    if len(shapes) < 2:
        raise ShapeError(f"needs at least 2 inputs, got {len(shapes)}: list them in 'inputs'")


def _listed(shapes: list[Shape]) -> str:
    return ", ".join(map(show, shapes))
