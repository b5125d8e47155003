"""Convolutions and pooling on channels-last data: sequences `(T, F)` and images `(H, W, C)`."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from services.spec.base import ActivationName, LayerSpec, Padding, Shape, ShapeError, conv_length, need_rank, pair
from services.spec.weights import KernelArguments

Size = Annotated[int, Field(gt=0, le=1024)]
Size2D = Size | tuple[Size, Size]

SEQUENCE = ("a sequence input (T, F)", "add Reshape to (T, F) before it")
IMAGE = ("an image input (H, W, C)", "add Reshape to (H, W, C) before it")


class Conv1DLayer(KernelArguments):
    """`Conv1D(filters, kernel_size, strides=1, padding="valid", activation=None)` on `(T, F)`."""

    KERNEL_RANK: ClassVar[int] = 3
    type: Literal["Conv1D"]
    filters: Size
    kernel_size: Size
    strides: Size = 1
    padding: Padding = "valid"
    activation: ActivationName = "linear"
    use_bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, *SEQUENCE)
        return (conv_length(shape[0], self.kernel_size, self.strides, self.padding), self.filters)

    def parameter_count(self, shape: Shape) -> int:
        return shape[-1] * self.filters * self.kernel_size + (self.filters if self.use_bias else 0)


class _Conv2DArguments(KernelArguments):
    KERNEL_RANK: ClassVar[int] = 4
    filters: Size
    kernel_size: Size2D
    strides: Size2D = 1
    padding: Padding = "valid"
    activation: ActivationName = "linear"
    use_bias: bool = True

    def parameter_count(self, shape: Shape) -> int:
        return shape[-1] * self.filters * math.prod(pair(self.kernel_size)) + (self.filters if self.use_bias else 0)


class Conv2DLayer(_Conv2DArguments):
    """`Conv2D(filters, kernel_size, strides=(1, 1), padding="valid", activation=None)` on `(H, W, C)`."""

    type: Literal["Conv2D"]

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        (kh, kw), (sh, sw) = pair(self.kernel_size), pair(self.strides)
        return (conv_length(shape[0], kh, sh, self.padding), conv_length(shape[1], kw, sw, self.padding), self.filters)


class Conv2DTransposeLayer(_Conv2DArguments):
    """`Conv2DTranspose(filters, kernel_size, strides=(1, 1), padding="valid")`: the decoder's upsampling conv."""

    type: Literal["Conv2DTranspose"]

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        (kh, kw), (sh, sw) = pair(self.kernel_size), pair(self.strides)
        if self.padding == "same":
            return (shape[0] * sh, shape[1] * sw, self.filters)
        return ((shape[0] - 1) * sh + kh, (shape[1] - 1) * sw + kw, self.filters)


class _Pooling(LayerSpec):
    padding: Padding = "valid"

    def _check_same(self, pool: tuple[int, ...], strides: tuple[int, ...]) -> None:
        # Pooling with padding "same" is exported as ceil-mode pooling, which agrees with Keras
        # only when each window starts where the last one ended.
        if self.padding == "same" and pool != strides:
            raise ShapeError("padding 'same' needs strides equal to pool_size: leave strides unset")


class Pooling1DLayer(_Pooling):
    """`MaxPooling1D` / `AveragePooling1D(pool_size=2, strides=None, padding="valid")` on `(T, F)`."""

    type: Literal["MaxPooling1D", "AveragePooling1D"]
    pool_size: Size = 2
    strides: Size | None = None  # None: pool_size, as in Keras

    @property
    def stride(self) -> int:
        return self.strides or self.pool_size

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, *SEQUENCE)
        self._check_same((self.pool_size,), (self.stride,))
        return (conv_length(shape[0], self.pool_size, self.stride, self.padding), shape[1])


class Pooling2DLayer(_Pooling):
    """`MaxPooling2D` / `AveragePooling2D(pool_size=(2, 2), strides=None, padding="valid")` on `(H, W, C)`."""

    type: Literal["MaxPooling2D", "AveragePooling2D"]
    pool_size: Size2D = 2
    strides: Size2D | None = None

    @property
    def stride(self) -> tuple[int, int]:
        return pair(self.strides) if self.strides is not None else pair(self.pool_size)

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        (ph, pw), (sh, sw) = pair(self.pool_size), self.stride
        self._check_same((ph, pw), (sh, sw))
        return (conv_length(shape[0], ph, sh, self.padding), conv_length(shape[1], pw, sw, self.padding), shape[2])


class GlobalPooling1DLayer(LayerSpec):
    """`GlobalAveragePooling1D` / `GlobalMaxPooling1D`: `(T, F) -> (F,)`."""

    type: Literal["GlobalAveragePooling1D", "GlobalMaxPooling1D"]

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, *SEQUENCE)
        return (shape[1],)


class GlobalPooling2DLayer(LayerSpec):
    """`GlobalAveragePooling2D` / `GlobalMaxPooling2D`: `(H, W, C) -> (C,)`."""

    type: Literal["GlobalAveragePooling2D", "GlobalMaxPooling2D"]

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        return (shape[2],)


class UpSampling2DLayer(LayerSpec):
    """`UpSampling2D(size=(2, 2), interpolation="nearest")`."""

    type: Literal["UpSampling2D"]
    size: Size2D = 2
    interpolation: Literal["nearest", "bilinear"] = "nearest"

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        sh, sw = pair(self.size)
        return (shape[0] * sh, shape[1] * sw, shape[2])
