"""Shape inference in pure Python: a bad spec is refused at submission, naming the layer and the fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.data.catalogue import DatasetInfo
from services.errors import InvalidSpec
from services.spec.base import Shape, ShapeError, show
from services.spec.layers_core import ActivationLayer, DropoutLayer
from services.spec.layers_sequence import EmbeddingLayer
from services.spec.model import JobSpec, Layer, ModelSpec, TextSpec

# Layers whose exported graph is tied to the input's length: a model with one has a fixed time axis.
# (The TorchScript exporter records the sequence length in attention's reshapes.)
_FIXED_LENGTH = {"Flatten", "Reshape", "PositionalEmbedding", "PatchEmbedding", "TransformerEncoder"}
_SEQUENCE_LAYERS = {"Embedding", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "Conv1D", "TransformerEncoder"}


@dataclass(frozen=True)
class InferredLayer:
    """One layer as shape inference sees it: what it outputs, what it weighs, what training keeps of it."""

    shape: Shape  # one sample's output, without the batch axis
    parameters: int  # as torch counts them: sum(p.numel()) of the module built for the layer
    activations: int  # values per sample kept for the backward pass


def infer_layers(model: ModelSpec) -> list[InferredLayer]:
    """Each layer's output shape and cost, in order; raises InvalidSpec at the first layer that cannot apply."""
    shape: Shape = tuple(model.input_shape)
    inferred = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, EmbeddingLayer) and index != 0:
            raise InvalidSpec(
                f"layer {index} (Embedding) must be the first layer: it reads integer token ids", field=f"model.layers[{index}]"
            )
        try:
            output = layer.output_shape(shape)
        except ShapeError as err:
            raise InvalidSpec(f"layer {index} ({layer.type}) {err}", field=f"model.layers[{index}]") from None
        inferred.append(InferredLayer(output, layer.parameter_count(shape), layer.activation_count(shape, output)))
        shape = output
    return inferred


def infer_shapes(model: ModelSpec) -> list[Shape]:
    """Each layer's output shape, in order; raises InvalidSpec at the first layer that cannot apply."""
    return [layer.shape for layer in infer_layers(model)]


def input_dtype(model: ModelSpec) -> str:
    """int64 token ids for a model that starts with Embedding, float32 otherwise."""
    return "int64" if isinstance(model.layers[0], EmbeddingLayer) else "float32"


def has_dynamic_time_axis(model: ModelSpec) -> bool:
    """Whether the exported model can take sequences of any length (axis 1 of its input)."""
    types = {layer.type for layer in model.layers}
    sequence_input = len(model.input_shape) == 2 or input_dtype(model) == "int64"
    # 'same' padding with a stride pads by an amount that depends on the length.
    strided_same = any(getattr(layer, "padding", "") == "same" and getattr(layer, "strides", 1) != 1 for layer in model.layers)
    return sequence_input and bool(types & _SEQUENCE_LAYERS) and not types & _FIXED_LENGTH and not strided_same


# Layers whose `activation` argument is applied to their output (an RNN's or an encoder's is internal).
_OUTPUT_ACTIVATION = {"Dense", "Conv1D", "Conv2D", "Conv2DTranspose", "Activation"}


def output_activation(layer: Layer) -> str:
    """The activation applied to a layer's output, "linear" for none."""
    return getattr(layer, "activation", "linear") if layer.type in _OUTPUT_ACTIVATION else "linear"


def final_activation(model: ModelSpec) -> str:
    """The activation the model's output passes through last ("linear" when there is none)."""
    for layer in reversed(model.layers):
        if isinstance(layer, DropoutLayer) or (isinstance(layer, ActivationLayer) and layer.activation == "linear"):
            continue
        return output_activation(layer)
    return "linear"


def check_job_against_dataset(spec: JobSpec, dataset: DatasetInfo) -> list[Shape]:
    """Check the network fits the dataset, the loss and the callbacks; return the inferred shapes."""
    shapes = infer_shapes(spec.model)
    _check_input(spec, dataset)
    _check_loss(spec, dataset, shapes[-1])
    _check_monitors(spec)
    return shapes


def _check_text(spec: JobSpec, dataset: DatasetInfo) -> None:
    text = spec.data.text or TextSpec()
    first = spec.model.layers[0]
    if list(spec.model.input_shape) != [text.sequence_length]:
        raise InvalidSpec(
            f"a text model takes token ids: set input_shape to [{text.sequence_length}] (data.text.sequence_length)",
            field="model.input_shape",
        )
    if not isinstance(first, EmbeddingLayer):
        raise InvalidSpec(f"dataset '{dataset.name}' holds text: start the model with Embedding", field="model.layers[0]")
    if first.input_dim < text.max_tokens:
        raise InvalidSpec(
            f"layer 0 (Embedding) has input_dim {first.input_dim} but the vocabulary holds up to {text.max_tokens} tokens: "
            f"set input_dim={text.max_tokens} or lower data.text.max_tokens",
            field="model.layers[0].input_dim",
        )


def _check_data_options(spec: JobSpec, dataset: DatasetInfo) -> None:
    data = spec.data
    if data.test_split is not None and not dataset.uploaded:
        message = f"'{dataset.name}' is built in with a fixed 20% test split; test_split applies to uploads"
        raise InvalidSpec(message, field="data.test_split")
    if data.text is not None and dataset.dtype != "text":
        raise InvalidSpec("data.text applies to text datasets only", field="data.text")
    if data.augmentation is not None and len(spec.model.input_shape) != 3:
        raise InvalidSpec(
            f"augmentation needs image inputs (H, W, C); input_shape is {list(spec.model.input_shape)}", field="data.augmentation"
        )
    if data.normalization != "none" and input_dtype(spec.model) == "int64":
        raise InvalidSpec("token ids cannot be normalised: set data.normalization to 'none'", field="data.normalization")


def _check_input(spec: JobSpec, dataset: DatasetInfo) -> None:
    _check_data_options(spec, dataset)
    if dataset.dtype == "text":
        return _check_text(spec, dataset)
    wanted = math.prod(spec.model.input_shape)
    if wanted != dataset.n_features:
        raise InvalidSpec(
            f"dataset '{dataset.name}' has {dataset.n_features} features per sample {tuple(dataset.feature_shape)}, "
            f"but input_shape {list(spec.model.input_shape)} holds {wanted}",
            field="model.input_shape",
        )
    first = spec.model.layers[0]
    if dataset.vocabulary_size and not isinstance(first, EmbeddingLayer):
        raise InvalidSpec(f"dataset '{dataset.name}' holds token ids: start the model with Embedding", field="model.layers[0]")
    if isinstance(first, EmbeddingLayer) and not dataset.dtype.startswith(("int", "uint")):
        raise InvalidSpec(
            f"dataset '{dataset.name}' holds {dataset.dtype} values: Embedding needs integer token ids, such as 'tokens'",
            field="model.layers[0]",
        )
    if isinstance(first, EmbeddingLayer) and dataset.vocabulary_size and first.input_dim < dataset.vocabulary_size:
        raise InvalidSpec(
            f"layer 0 (Embedding) has input_dim {first.input_dim} but '{dataset.name}' uses token ids up to "
            f"{dataset.vocabulary_size - 1}: set input_dim={dataset.vocabulary_size}",
            field="model.layers[0].input_dim",
        )


def _check_loss(spec: JobSpec, dataset: DatasetInfo, output: Shape) -> None:
    loss, training = spec.training.loss, spec.training
    field = f"model.layers[{len(spec.model.layers) - 1}]"
    activation = final_activation(spec.model)
    if spec.data.targets == "inputs":
        if not training.is_regression:
            raise InvalidSpec(f"reproducing the inputs needs a regression loss (mse, mae, huber), not '{loss}'", field="training.loss")
        if output != tuple(spec.model.input_shape):
            raise InvalidSpec(
                f"the model outputs {show(output)} but must reproduce its input {show(tuple(spec.model.input_shape))}",
                field=field,
            )
        return
    if training.is_regression:
        if dataset.task != "regression":
            raise InvalidSpec(
                f"loss '{loss}' needs a regression dataset; '{dataset.name}' is classification: use sparse_categorical_crossentropy",
                field="training.loss",
            )
        if output != (dataset.n_targets,):
            raise InvalidSpec(
                f"the model outputs {show(output)}; '{dataset.name}' has {dataset.n_targets} target(s): "
                f"end with Dense({dataset.n_targets})",
                field=field,
            )
        return
    if dataset.task != "classification":
        raise InvalidSpec(f"loss '{loss}' needs a classification dataset; '{dataset.name}' is regression: use mse", field="training.loss")
    if len(output) != 1:
        raise InvalidSpec(f"the model must end with a flat output, got {show(output)}: add Flatten and Dense", field=field)
    units = output[0]
    if loss == "binary_crossentropy":
        if dataset.n_classes != 2:
            raise InvalidSpec(
                f"binary_crossentropy needs 2 classes; '{dataset.name}' has {dataset.n_classes}: use sparse_categorical_crossentropy",
                field="training.loss",
            )
        if units != 1 or activation == "softmax":
            raise InvalidSpec("binary_crossentropy needs a last Dense of 1 unit with activation 'sigmoid'", field=field)
        return
    if units != dataset.n_classes:
        raise InvalidSpec(
            f"the last layer outputs {units} values but '{dataset.name}' has {dataset.n_classes} classes: "
            f"set units={dataset.n_classes} on the last Dense",
            field=field,
        )
    if activation == "sigmoid":
        raise InvalidSpec(f"{loss} needs 'softmax' (or 'linear' logits) on the last layer, not 'sigmoid'", field=field)


def _check_monitors(spec: JobSpec) -> None:
    training = spec.training
    allowed = ("mae", "rmse") if training.is_regression else ("accuracy", "precision", "recall", "f1")
    if wrong := [name for name in training.metric_names if name not in allowed]:
        expected = ", ".join(allowed)
        raise InvalidSpec(f"metric '{wrong[0]}' does not apply to loss '{training.loss}': expected {expected}", field="training.metrics")
    known = {"loss", *training.metric_names}
    if spec.data.validation_split > 0:
        known |= {f"val_{name}" for name in known}
    watched = [("training.early_stopping.monitor", training.early_stopping.monitor)] if training.early_stopping else []
    if training.lr_schedule.name == "reduce_on_plateau":
        watched.append(("training.lr_schedule.monitor", training.lr_schedule.monitor))
    for field, monitor in watched:
        if monitor not in known:
            hint = " (set data.validation_split to have val_ figures)" if monitor.startswith("val_") else ""
            raise InvalidSpec(f"cannot monitor '{monitor}': expected one of {', '.join(sorted(known))}{hint}", field=field)
