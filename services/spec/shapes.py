"""Shape inference in pure Python: a bad spec is refused at submission, naming the layer and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from services.data.catalogue import DatasetInfo
from services.errors import InvalidSpec
from services.spec.base import Shape, show
from services.spec.gan import check_not_gan_options
from services.spec.graph import Graph, describe, resolve
from services.spec.job import JobSpec, TextSpec
from services.spec.layers_core import ActivationLayer, DropoutLayer
from services.spec.layers_sequence import EmbeddingLayer
from services.spec.model import Layer, ModelSpec
from services.spec.transfer import check_fine_tune

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
    """Each layer's output shape and cost, in the order of `model.layers`; raises InvalidSpec naming the first that cannot apply."""
    return [InferredLayer(n.shape, n.parameters, n.activations) for n in resolve(model).by_index()]


def infer_shapes(model: ModelSpec) -> list[Shape]:
    """Each layer's output shape, in the order of `model.layers`; raises InvalidSpec at the first layer that cannot apply."""
    return [layer.shape for layer in infer_layers(model)]


def input_dtype(model: ModelSpec) -> str:
    """int64 token ids for a model whose (first) input Embedding reads, float32 otherwise."""
    return resolve(model).inputs[0].dtype


def has_dynamic_time_axis(model: ModelSpec) -> bool:
    """Whether the exported model can take sequences of any length (axis 1 of its one input)."""
    if len(model.input_names) != 1:
        return False
    types = {layer.type for layer in model.layers}
    sequence_input = len(model.input_shapes[0]) == 2 or input_dtype(model) == "int64"
    # 'same' padding with a stride pads by an amount that depends on the length.
    strided_same = any(getattr(layer, "padding", "") == "same" and getattr(layer, "strides", 1) != 1 for layer in model.layers)
    return sequence_input and bool(types & _SEQUENCE_LAYERS) and not types & _FIXED_LENGTH and not strided_same


# Layers whose `activation` argument is applied to their output (an RNN's or an encoder's is internal).
_OUTPUT_ACTIVATION = {"Dense", "Conv1D", "Conv2D", "Conv2DTranspose", "Activation"}


def output_activation(layer: Layer) -> str:
    """The activation applied to a layer's output, "linear" for none."""
    return getattr(layer, "activation", "linear") if layer.type in _OUTPUT_ACTIVATION else "linear"


def final_activation(model: ModelSpec) -> str:
    """The activation the trained output passes through last ("linear" when there is none)."""
    graph = resolve(model)
    node = graph.output
    while True:
        layer = node.layer
        passes = isinstance(layer, DropoutLayer) or (isinstance(layer, ActivationLayer) and layer.activation == "linear")
        if not passes:
            return output_activation(layer)
        if node.sources[0] in model.input_names:
            return "linear"
        node = graph.node(node.sources[0])


def check_job_against_dataset(spec: JobSpec, dataset: DatasetInfo) -> list[Shape]:
    """Check the network fits the dataset, the loss and the callbacks; return the inferred shapes (a GAN's generator's)."""
    if spec.kind == "gan":
        from services.spec.gan import check_gan_against_dataset

        check_gan_against_dataset(spec, dataset)
        return infer_shapes(spec.network)
    check_not_gan_options(spec)
    check_fine_tune(spec)
    graph = resolve(spec.network)
    check_trainable(graph)
    _check_input(spec, dataset, graph)
    _check_loss(spec, dataset, graph)
    _check_monitors(spec)
    return infer_shapes(spec.network)


def _input_field(spec: JobSpec) -> str:
    """Where the (first) input's shape is given: `model.input_shape`, or a functional model's first input."""
    return "model.input_shape" if spec.network.inputs is None else "model.inputs[0].shape"


def check_trainable(graph: Graph) -> None:
    """Something must learn: a model whose every weighted layer is frozen has nothing for the optimizer."""
    weighted = [n for n in graph.by_index() if n.parameters]
    if not any(n.layer.trainable and getattr(n.layer, "layer", n.layer).trainable for n in weighted):
        frozen = ", ".join(f"'{n.name}'" for n in weighted) or "none"
        raise InvalidSpec(f"the model has no weights to train: its layers with weights ({frozen}) are all trainable: false",
                          field="model.layers")  # fmt: skip


def _token_readers(graph: Graph) -> list[tuple[str, EmbeddingLayer, str]]:
    """Every Embedding (each reads a model input): its description, spec and field."""
    return [(describe(n.index, n.layer), n.layer, n.field) for n in graph.by_index() if isinstance(n.layer, EmbeddingLayer)]


def _check_text(spec: JobSpec, dataset: DatasetInfo, graph: Graph) -> None:
    text = spec.data.text or TextSpec()
    if len(graph.inputs) != 1:
        raise InvalidSpec(f"dataset '{dataset.name}' holds text, which is one input: the model has {len(graph.inputs)}",
                          field="model.inputs")  # fmt: skip
    if list(graph.inputs[0].shape) != [text.sequence_length]:
        raise InvalidSpec(
            f"a text model takes token ids: set its input shape to [{text.sequence_length}] (data.text.sequence_length)",
            field=_input_field(spec),
        )
    readers = _token_readers(graph)
    if not readers or graph.inputs[0].dtype != "int64":
        raise InvalidSpec(f"dataset '{dataset.name}' holds text: start the model with Embedding", field="model.layers[0]")
    for name, embedding, field in readers:
        if embedding.input_dim < text.max_tokens:
            raise InvalidSpec(
                f"{name} has input_dim {embedding.input_dim} but the vocabulary holds up to {text.max_tokens} tokens: "
                f"set input_dim={text.max_tokens} or lower data.text.max_tokens",
                field=f"{field}.input_dim",
            )


def _check_data_options(spec: JobSpec, dataset: DatasetInfo, graph: Graph) -> None:
    data = spec.data
    if data.test_split is not None and not dataset.uploaded:
        message = f"'{dataset.name}' is built in with a fixed 20% test split; test_split applies to uploads"
        raise InvalidSpec(message, field="data.test_split")
    if data.text is not None and dataset.dtype != "text":
        raise InvalidSpec("data.text applies to text datasets only", field="data.text")
    if data.augmentation is not None and (len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 3):
        shapes = ", ".join(str(list(i.shape)) for i in graph.inputs)
        raise InvalidSpec(f"augmentation needs one image input (H, W, C); the model takes {shapes}", field="data.augmentation")
    if spec.training.anomaly is not None:
        if spec.kind != "autoencoder":
            raise InvalidSpec('training.anomaly scores an autoencoder\'s reconstructions: set "kind": "autoencoder"',
                              field="training.anomaly")  # fmt: skip
        if data.validation_split == 0:
            raise InvalidSpec("training.anomaly learns its threshold from the validation split: set data.validation_split",
                              field="training.anomaly")  # fmt: skip
    if data.noise is not None:
        if spec.kind != "autoencoder":
            raise InvalidSpec('data.noise corrupts an autoencoder\'s inputs: set "kind": "autoencoder"', field="data.noise")
        if data.augmentation is not None:
            raise InvalidSpec("give data.noise or data.augmentation, not both", field="data.noise")
        if any(i.dtype == "int64" for i in graph.inputs) or dataset.dtype == "text":
            raise InvalidSpec("token ids cannot take noise: data.noise applies to inputs of numbers", field="data.noise")
    if data.normalization != "none" and any(i.dtype == "int64" for i in graph.inputs):
        raise InvalidSpec("token ids cannot be normalised: set data.normalization to 'none'", field="data.normalization")


def _check_input(spec: JobSpec, dataset: DatasetInfo, graph: Graph) -> None:
    _check_data_options(spec, dataset, graph)
    if dataset.dtype == "text":
        return _check_text(spec, dataset, graph)
    wanted = graph.input_values
    if wanted != dataset.n_features:
        if spec.network.inputs is None:
            held = f"input_shape {list(graph.inputs[0].shape)} holds {wanted}"
        elif len(graph.inputs) == 1:
            held = f"input '{graph.inputs[0].name}' of shape {list(graph.inputs[0].shape)} holds {wanted}"
        else:
            parts = " + ".join(f"{i.name} {list(i.shape)}" for i in graph.inputs)
            held = f"the inputs hold {wanted} ({parts}; each row's features are split among them in order)"
        raise InvalidSpec(
            f"dataset '{dataset.name}' has {dataset.n_features} features per sample {tuple(dataset.feature_shape)}, but {held}",
            field=_input_field(spec),
        )
    readers = _token_readers(graph)
    if dataset.vocabulary_size and not readers:
        raise InvalidSpec(f"dataset '{dataset.name}' holds token ids: start the model with Embedding", field="model.layers[0]")
    for name, embedding, field in readers:
        if not dataset.dtype.startswith(("int", "uint")):
            raise InvalidSpec(
                f"dataset '{dataset.name}' holds {dataset.dtype} values: Embedding needs integer token ids, such as 'tokens'",
                field=field,
            )
        if dataset.vocabulary_size and embedding.input_dim < dataset.vocabulary_size:
            raise InvalidSpec(
                f"{name} has input_dim {embedding.input_dim} but '{dataset.name}' uses token ids up to "
                f"{dataset.vocabulary_size - 1}: set input_dim={dataset.vocabulary_size}",
                field=f"{field}.input_dim",
            )


def _check_loss(spec: JobSpec, dataset: DatasetInfo, graph: Graph) -> None:
    loss, training = spec.training.loss, spec.training
    output, field = graph.output.shape, graph.output.field
    activation = final_activation(spec.network)
    if spec.data.targets == "inputs":
        if not training.is_regression:
            raise InvalidSpec(f"reproducing the inputs needs a regression loss (mse, mae, huber), not '{loss}'", field="training.loss")
        if len(graph.inputs) != 1 or output != graph.inputs[0].shape:
            wanted = ", ".join(show(i.shape) for i in graph.inputs)
            raise InvalidSpec(f"the model outputs {show(output)} but must reproduce its input {wanted}", field=field)
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


GAN_FIGURES = ("loss", "d_loss", "g_loss", "d_x", "d_g_z")


def epoch_figures(spec: JobSpec) -> set[str]:
    """The figures each epoch of the job records, by their Keras names: what callbacks and studies may watch."""
    if spec.kind == "gan":
        return set(GAN_FIGURES)
    known = {"loss", *spec.training.metric_names}
    if spec.data.validation_split > 0:
        known |= {f"val_{name}" for name in known}
    return known


def _check_monitors(spec: JobSpec) -> None:
    training = spec.training
    allowed = ("mae", "rmse") if training.is_regression else ("accuracy", "precision", "recall", "f1")
    if wrong := [name for name in training.metric_names if name not in allowed]:
        expected = ", ".join(allowed)
        raise InvalidSpec(f"metric '{wrong[0]}' does not apply to loss '{training.loss}': expected {expected}", field="training.metrics")
    known = epoch_figures(spec)
    watched = [("training.early_stopping.monitor", training.early_stopping.monitor)] if training.early_stopping else []
    if training.lr_schedule.name == "reduce_on_plateau":
        watched.append(("training.lr_schedule.monitor", training.lr_schedule.monitor))
    for field, monitor in watched:
        if monitor not in known:
            hint = " (set data.validation_split to have val_ figures)" if monitor.startswith("val_") else ""
            raise InvalidSpec(f"cannot monitor '{monitor}': expected one of {', '.join(sorted(known))}{hint}", field=field)
