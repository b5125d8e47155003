"""Pydantic models of a training job, named after Keras so Sequential code translates one to one."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, model_validator

from services.spec.base import LayerName, Strict
from services.spec.layers_conv import (
    Conv1DLayer,
    Conv2DLayer,
    Conv2DTransposeLayer,
    GlobalPooling1DLayer,
    GlobalPooling2DLayer,
    Pooling1DLayer,
    Pooling2DLayer,
    UpSampling2DLayer,
)
from services.spec.layers_core import (
    ActivationLayer,
    BatchNormalizationLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    LayerNormalizationLayer,
    ReshapeLayer,
)
from services.spec.layers_merge import ConcatenateLayer, MergeLayer
from services.spec.layers_sequence import (
    BidirectionalLayer,
    EmbeddingLayer,
    GRULayer,
    LSTMLayer,
    PatchEmbeddingLayer,
    PositionalEmbeddingLayer,
    SimpleRNNLayer,
    TransformerEncoderLayer,
)

Layer = Annotated[
    DenseLayer
    | DropoutLayer
    | ActivationLayer
    | FlattenLayer
    | ReshapeLayer
    | BatchNormalizationLayer
    | LayerNormalizationLayer
    | Conv1DLayer
    | Conv2DLayer
    | Conv2DTransposeLayer
    | Pooling1DLayer
    | Pooling2DLayer
    | GlobalPooling1DLayer
    | GlobalPooling2DLayer
    | UpSampling2DLayer
    | EmbeddingLayer
    | SimpleRNNLayer
    | LSTMLayer
    | GRULayer
    | BidirectionalLayer
    | TransformerEncoderLayer
    | PositionalEmbeddingLayer
    | PatchEmbeddingLayer
    | MergeLayer
    | ConcatenateLayer,
    Field(discriminator="type"),
]


Dimension = Annotated[int, Field(gt=0, le=100_000)]
SEQUENTIAL_INPUT = "input"  # the one input of a model given by `input_shape`, as ONNX and OIP v2 name it
SEQUENTIAL_OUTPUT = "output"  # its output, when `outputs` is not given


class InputSpec(Strict):
    """One input of a functional model: `{"name": "x", "shape": [64]}`, the shape without the batch axis."""

    name: LayerName
    shape: list[Dimension] = Field(min_length=1, max_length=4)


class BaseSpec(Strict):
    """`model.base`: a registered version whose layers start this model (transfer learning), Keras' `include_top=False`.

    `until` names the last base layer kept (default: all but the base's last layer); `trainable: false` freezes them.
    At submission the base is resolved: `version` is pinned, and `layers` lists the base layers the model copied.
    """

    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)  # None: `alias`, else `production`, else the latest
    alias: str | None = Field(default=None, min_length=1, max_length=64)
    until: LayerName | None = None
    trainable: bool = False
    layers: list[LayerName] | None = None  # set at submission: the base layers copied, in order
    vocabulary: bool = False  # set at submission: the model tokenises text with the base's vocabulary

    @model_validator(mode="after")
    def _version_or_alias(self) -> BaseSpec:
        if self.version is not None and self.alias is not None and self.layers is None:
            raise ValueError("give model.base.version or model.base.alias, not both")
        return self

    @property
    def resolved(self) -> bool:
        return self.layers is not None


class ModelSpec(Strict):
    """A Keras model: Sequential (`input_shape` and a list of layers) or functional (named `inputs`, layers that
    name what they read, and `outputs`). Keras' own `model.to_json()` is accepted too, and translated.

    Every layer has a name after validation: unnamed ones get Keras' automatic names (`dense`, `dense_1`, ...).
    """

    input_shape: list[Dimension] | None = Field(default=None, min_length=1, max_length=4)
    inputs: list[InputSpec] | None = Field(default=None, min_length=1, max_length=16)
    layers: list[Layer] = Field(min_length=1, max_length=256)
    outputs: list[LayerName] | None = Field(default=None, min_length=1, max_length=16)  # None: the last layer
    base: BaseSpec | None = None  # transfer learning: a registered version's layers first, then these (the new head)
    _graph: Any = PrivateAttr(default=None)  # services.spec.graph caches the resolved graph here

    @model_validator(mode="before")
    @classmethod
    def _keras_and_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "class_name" in data:
            from services.spec.keras import from_keras  # the translation is only needed for Keras' JSON

            data = from_keras(data)
        if isinstance(data, dict) and isinstance(data.get("layers"), list):
            inputs = data.get("inputs")
            taken = [i.get("name") for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else [SEQUENTIAL_INPUT]
            data = data | {"layers": _named(data["layers"], taken)}
        return data

    @model_validator(mode="after")
    def _one_input_form(self) -> ModelSpec:
        if self.base is not None and not self.base.resolved:
            if self.input_shape is not None or self.inputs is not None:
                raise ValueError("model.base gives the input shape: drop input_shape and inputs")
            return self
        if (self.input_shape is None) == (self.inputs is None):
            which = "both" if self.input_shape is not None else "neither"
            raise ValueError(f"give either input_shape (a Sequential model) or inputs (a functional one), not {which}")
        return self

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs] if self.inputs is not None else [SEQUENTIAL_INPUT]

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(i.shape) for i in self.inputs] if self.inputs is not None else [tuple(self.input_shape or ())]

    @property
    def output_names(self) -> list[str]:
        """The layers the model outputs, the first one trained on."""
        return list(self.outputs) if self.outputs is not None else [str(self.layers[-1].name)]

    @property
    def export_names(self) -> tuple[list[str], list[str]]:
        """The ONNX graph's input and output names: the spec's names (outputs by their layers), or `input` and `output`
        for a Sequential model that names no outputs."""
        if self.inputs is None and self.outputs is None:
            return self.input_names, [SEQUENTIAL_OUTPUT]
        return self.input_names, self.output_names


def keras_name(layer_type: str) -> str:
    """Keras' automatic layer name: `Conv2D` -> `conv2d`, `MaxPooling2D` -> `max_pooling2d`, `SimpleRNN` -> `simple_rnn`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", layer_type)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _named(layers: list[Any], inputs: list[Any]) -> list[Any]:
    """The layers with Keras' automatic names given to unnamed ones (`dense`, `dense_1`, ...), skipping names taken
    (by other layers or by the model's inputs). Names of the wrong type are left for validation to refuse."""
    given = [layer.get("name") if isinstance(layer, dict) else getattr(layer, "name", None) for layer in layers]
    taken = {name for name in [*given, *inputs] if isinstance(name, str)}
    counts: dict[str, int] = {}
    named = []
    for layer in layers:
        kind = layer.get("type") if isinstance(layer, dict) else getattr(layer, "type", None)
        current = layer.get("name") if isinstance(layer, dict) else getattr(layer, "name", None)
        if current is not None or not isinstance(kind, str):
            named.append(layer)
            continue
        base = keras_name(kind)
        while True:
            count = counts.get(base, 0)
            counts[base] = count + 1
            candidate = base if count == 0 else f"{base}_{count}"
            if candidate not in taken:
                break
        taken.add(candidate)
        named.append(layer | {"name": candidate} if isinstance(layer, dict) else layer.model_copy(update={"name": candidate}))
    return named
