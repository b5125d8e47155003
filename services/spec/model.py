"""Pydantic models of a training job, named after Keras so Sequential code translates one to one."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

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

LossName = Literal[
    "mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"
]  # fmt: skip
MetricName = Literal["accuracy", "precision", "recall", "f1", "mae", "rmse"]
DeviceName = Literal["auto", "cpu", "gpu"]
REGRESSION_LOSSES = ("mse", "mae", "huber")

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


class ModelSpec(Strict):
    """A Keras model: Sequential (`input_shape` and a list of layers) or functional (named `inputs`, layers that
    name what they read, and `outputs`). Keras' own `model.to_json()` is accepted too, and translated.

    Every layer has a name after validation: unnamed ones get Keras' automatic names (`dense`, `dense_1`, ...).
    """

    input_shape: list[Dimension] | None = Field(default=None, min_length=1, max_length=4)
    inputs: list[InputSpec] | None = Field(default=None, min_length=1, max_length=16)
    layers: list[Layer] = Field(min_length=1, max_length=256)
    outputs: list[LayerName] | None = Field(default=None, min_length=1, max_length=16)  # None: the last layer
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


class AugmentationSpec(Strict):
    """Random changes to training images (never to validation or test): the seeds' remedy for overfitting."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    shift: float = Field(default=0.0, ge=0.0, le=0.5)  # up to this fraction of the width/height
    rotation: float = Field(default=0.0, ge=0.0, le=180.0)  # up to this many degrees either way
    zoom: float = Field(default=0.0, ge=0.0, le=0.9)  # scale by up to 1 +/- zoom


class NoiseSpec(Strict):
    """How a denoising autoencoder's training inputs are corrupted (its targets stay clean): one of the two."""

    gaussian: float | None = Field(default=None, gt=0.0, le=100.0)  # add N(0, gaussian^2) to every value
    masking: float | None = Field(default=None, gt=0.0, lt=1.0)  # set each value to 0 with this probability

    @model_validator(mode="after")
    def _one(self) -> NoiseSpec:
        if (self.gaussian is None) == (self.masking is None):
            raise ValueError('give one of gaussian (a standard deviation) or masking (a probability), e.g. {"gaussian": 0.3}')
        return self


class TextSpec(Strict):
    """Tokenisation of a text dataset: a word vocabulary built from the training split."""

    max_tokens: int = Field(default=10_000, ge=3, le=1_000_000)  # vocabulary size, padding and unknown included
    sequence_length: int = Field(default=64, ge=1, le=10_000)


class DataSpec(Strict):
    """Which dataset to train on, how to generate it (generated built-ins), what to hold out."""

    dataset: str = Field(min_length=1, max_length=128)  # a built-in name or an uploaded dataset's id
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    test_split: float | None = Field(default=None, gt=0.0, lt=1.0)  # uploads: default 0.2; built-ins keep theirs
    normalization: Literal["none", "standard", "minmax"] = "none"  # statistics from the training split only
    augmentation: AugmentationSpec | None = None
    noise: NoiseSpec | None = None  # autoencoders: corrupt the training inputs, reconstruct the clean ones
    text: TextSpec | None = None  # text datasets: default TextSpec()
    targets: Literal["labels", "inputs"] = "labels"  # "inputs": the model learns to reproduce its input
    samples: int | None = Field(default=None, ge=20, le=1_000_000)  # generated datasets only
    sequence_length: int | None = Field(default=None, ge=2, le=10_000)  # sine and tokens only
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # generated datasets: the same seed, the same data


class OptimizerSpec(Strict):
    """An optimizer by Keras name and arguments; `"adam"` alone works as in `model.compile(optimizer="adam")`."""

    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # sgd, rmsprop
    nesterov: bool = False  # sgd
    beta_1: float = Field(default=0.9, ge=0.0, lt=1.0)  # adam, adamw
    beta_2: float = Field(default=0.999, ge=0.0, lt=1.0)
    rho: float = Field(default=0.9, ge=0.0, lt=1.0)  # rmsprop
    epsilon: float = Field(default=1e-7, gt=0.0)
    weight_decay: float | None = Field(default=None, ge=0.0, le=1.0)  # None: 0.004 for adamw, else 0
    clipnorm: float | None = Field(default=None, gt=0.0)  # clip each update's gradient norm
    clipvalue: float | None = Field(default=None, gt=0.0)  # clip each gradient element


class ScheduleSpec(Strict):
    """How the learning rate changes: per epoch, or per batch for one_cycle."""

    name: Literal["constant", "step", "cosine", "one_cycle", "reduce_on_plateau"] = "constant"
    step_size: int = Field(default=10, ge=1)  # step: epochs between drops
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)  # step: factor per drop
    min_learning_rate: float = Field(default=0.0, ge=0.0)  # cosine floor; reduce_on_plateau's min_lr
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0)  # one_cycle: share of steps spent warming up
    monitor: str = "val_loss"  # reduce_on_plateau
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=1e-4, ge=0.0)


class EarlyStoppingSpec(Strict):
    """`EarlyStopping(monitor="val_loss", patience=0, min_delta=0, restore_best_weights=False)`."""

    monitor: str = "val_loss"
    patience: int = Field(default=0, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = False


class AnomalySpec(Strict):
    """`training.anomaly`: after training, an autoencoder's per-row reconstruction error on the validation split
    sets the threshold past which a row is an anomaly: the error's `percentile`."""

    percentile: float = Field(default=99.0, gt=0.0, lt=100.0)


class TrainingSpec(Strict):
    """`compile` and `fit` arguments."""

    optimizer: OptimizerSpec = OptimizerSpec()
    loss: LossName
    metrics: list[MetricName] | None = None  # None: accuracy for classification, mae otherwise
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    lr_schedule: ScheduleSpec = ScheduleSpec()
    early_stopping: EarlyStoppingSpec | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # the same seed gives the same split and weights
    max_duration_s: float | None = Field(default=None, gt=0)  # the job fails, registering nothing, past this much training
    anomaly: AnomalySpec | None = None  # autoencoders: learn an anomaly threshold from the validation split

    @field_validator("optimizer", "lr_schedule", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def is_regression(self) -> bool:
        return self.loss in REGRESSION_LOSSES

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics) if self.metrics is not None else ["mae" if self.is_regression else "accuracy"]


class JobSpec(Strict):
    """The body of `POST /v1/jobs`. Later versions add fields; these names never change."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    device: DeviceName = "auto"
    kind: Literal["supervised", "autoencoder"] = "supervised"  # "autoencoder" learns to reproduce its inputs

    @property
    def task(self) -> str:
        """What serving does with the version: `classifier`, `regressor` or `autoencoder` (which can `detect`)."""
        if self.kind == "autoencoder":
            return "autoencoder"
        return "regressor" if self.training.is_regression else "classifier"

    @model_validator(mode="after")
    def _kind_and_targets_agree(self) -> JobSpec:
        """`data.targets: "inputs"` means an autoencoder, and an autoencoder's targets are its inputs."""
        if self.kind == "autoencoder" and self.data.targets != "inputs":
            if "targets" in self.data.model_fields_set:
                raise ValueError('kind "autoencoder" reproduces its inputs: drop data.targets "labels"')
            object.__setattr__(self, "data", self.data.model_copy(update={"targets": "inputs"}))
        elif self.data.targets == "inputs" and self.kind != "autoencoder":
            if "kind" in self.model_fields_set:
                raise ValueError('data.targets "inputs" makes an autoencoder: set "kind": "autoencoder", not "supervised"')
            object.__setattr__(self, "kind", "autoencoder")
        return self
