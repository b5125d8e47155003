"""Token, recurrent and attention layers on sequences `(T, F)`."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from services.spec.base import ActivationName, LayerSpec, Shape, ShapeError, need_rank, show
from services.spec.layers_conv import IMAGE, SEQUENCE, Size
from services.spec.weights import EmbeddingArguments, RecurrentArguments

Units = Annotated[int, Field(gt=0, le=8192)]


class EmbeddingLayer(EmbeddingArguments):
    """`Embedding(input_dim, output_dim)`: integer token ids `(T,)` -> vectors `(T, output_dim)`."""

    type: Literal["Embedding"]
    input_dim: Annotated[int, Field(gt=0, le=10_000_000)]  # vocabulary size: ids are 0 .. input_dim - 1
    output_dim: Units

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 1, "token ids (T,)", "set input_shape to [T], the sequence length")
        return (shape[0], self.output_dim)

    def parameter_count(self, shape: Shape) -> int:
        return self.input_dim * self.output_dim


class _Recurrent(RecurrentArguments):
    GATES: ClassVar[int] = 1  # weight blocks per step: 1 for SimpleRNN, 4 for LSTM, 3 for GRU
    units: Units
    return_sequences: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # on the inputs, as Keras' `dropout`

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, *SEQUENCE)
        return (shape[0], self.units) if self.return_sequences else (self.units,)

    def parameter_count(self, shape: Shape) -> int:
        # torch keeps two biases per gate (bias_ih and bias_hh), as Keras' GRU with reset_after does.
        return self.GATES * self.units * (shape[-1] + self.units + 2)

    def activation_count(self, shape: Shape, output: Shape) -> int:
        return shape[0] * (self.GATES + 1) * self.units  # every step's gates and state are kept for the backward pass


class SimpleRNNLayer(_Recurrent):
    """`SimpleRNN(units, activation="tanh", return_sequences=False, dropout=0.0)`."""

    type: Literal["SimpleRNN"]
    activation: Literal["tanh", "relu"] = "tanh"


class LSTMLayer(_Recurrent):
    """`LSTM(units, return_sequences=False, dropout=0.0)`."""

    GATES: ClassVar[int] = 4
    type: Literal["LSTM"]


class GRULayer(_Recurrent):
    """`GRU(units, return_sequences=False, dropout=0.0)`."""

    GATES: ClassVar[int] = 3
    type: Literal["GRU"]


RecurrentLayer = Annotated[SimpleRNNLayer | LSTMLayer | GRULayer, Field(discriminator="type")]


class BidirectionalLayer(LayerSpec):
    """`Bidirectional(layer, merge_mode="concat")`: runs the wrapped RNN forwards and backwards."""

    type: Literal["Bidirectional"]
    layer: RecurrentLayer
    merge_mode: Literal["concat", "sum"] = "concat"

    @model_validator(mode="after")
    def _inner_reads_nothing_itself(self) -> BidirectionalLayer:
        if self.layer.inputs is not None:
            raise ValueError("layer.inputs: the wrapped layer reads what the Bidirectional reads; name inputs on the Bidirectional")
        if self.layer.activity_regularizer is not None:
            raise ValueError("layer.activity_regularizer: put it on the Bidirectional, whose output it would read")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        inner = self.layer.output_shape(shape)
        return (*inner[:-1], inner[-1] * 2) if self.merge_mode == "concat" else inner

    def parameter_count(self, shape: Shape) -> int:
        return 2 * self.layer.parameter_count(shape)

    def activation_count(self, shape: Shape, output: Shape) -> int:
        return 2 * self.layer.activation_count(shape, self.layer.output_shape(shape)) + math.prod(output)


class TransformerEncoderLayer(LayerSpec):
    """`TransformerEncoder(num_heads, ff_dim, dropout=0.0)`: self-attention and feed-forward, each with residual and norm."""

    type: Literal["TransformerEncoder"]
    num_heads: Annotated[int, Field(gt=0, le=128)]
    ff_dim: Units
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    activation: ActivationName = "relu"

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, *SEQUENCE)
        if shape[1] % self.num_heads:
            raise ShapeError(
                f"needs a feature size divisible by num_heads={self.num_heads}, got {show(shape)}: change num_heads or the embedding size"
            )
        return shape

    def parameter_count(self, shape: Shape) -> int:
        model, ff = shape[-1], self.ff_dim
        attention = 4 * model * model + 4 * model  # query, key, value and output projections with biases
        return attention + 2 * model * ff + ff + model + 4 * model  # two feed-forward layers, two LayerNorms

    def activation_count(self, shape: Shape, output: Shape) -> int:
        length, model = shape
        # q, k, v, the attention weights (a T x T map per head), the feed-forward's hidden layer, residuals and norms
        return 3 * length * model + self.num_heads * length * length + length * self.ff_dim + 4 * length * model


class PositionalEmbeddingLayer(LayerSpec):
    """`PositionalEmbedding()`: adds a learned vector per position to a sequence `(T, F)`."""

    type: Literal["PositionalEmbedding"]

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 2, "a sequence (T, F)", "put it after Embedding")
        return shape

    def parameter_count(self, shape: Shape) -> int:
        return shape[0] * shape[1]


class PatchEmbeddingLayer(LayerSpec):
    """`PatchEmbedding(patch_size, dim)`: the ViT stem, image `(H, W, C)` -> patches `(H*W/p², dim)` plus positions."""

    type: Literal["PatchEmbedding"]
    patch_size: Size
    dim: Units

    def output_shape(self, shape: Shape) -> Shape:
        need_rank(shape, 3, *IMAGE)
        height, width, _ = shape
        if height % self.patch_size or width % self.patch_size:
            raise ShapeError(f"patch_size {self.patch_size} does not divide the image {show(shape)}: pick a divisor of both sides")
        return ((height // self.patch_size) * (width // self.patch_size), self.dim)

    def parameter_count(self, shape: Shape) -> int:
        patches = self.output_shape(shape)[0]
        projection = shape[-1] * self.dim * self.patch_size**2 + self.dim
        return projection + patches * self.dim  # and one learned position per patch
