"""Shape inference in pure Python: a bad spec is refused at submission, naming the layer and the fix."""

from __future__ import annotations

import math

from services.data.catalogue import DatasetInfo
from services.errors import InvalidSpec
from services.spec.model import ActivationLayer, DenseLayer, FlattenLayer, JobSpec, Layer, ModelSpec

Shape = tuple[int, ...]  # one sample's shape, without the batch axis


def _show(shape: Shape) -> str:
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


def _output_shape(index: int, layer: Layer, shape: Shape) -> Shape:
    if isinstance(layer, DenseLayer):
        if len(shape) != 1:
            raise InvalidSpec(
                f"layer {index} (Dense) needs a flat input, got {_show(shape)}: add Flatten before it",
                field=f"model.layers[{index}]",
            )
        return (layer.units,)
    if isinstance(layer, FlattenLayer):
        return (math.prod(shape),)
    return shape  # Dropout and Activation keep the shape


def infer_shapes(model: ModelSpec) -> list[Shape]:
    """Each layer's output shape, in order; raises InvalidSpec at the first layer that cannot apply."""
    shape: Shape = tuple(model.input_shape)
    shapes = []
    for index, layer in enumerate(model.layers):
        shape = _output_shape(index, layer, shape)
        shapes.append(shape)
    return shapes


def final_activation(model: ModelSpec) -> str:
    """The activation the model's output passes through last ("linear" when there is none)."""
    for layer in reversed(model.layers):
        if isinstance(layer, DenseLayer):
            return layer.activation
        if isinstance(layer, ActivationLayer) and layer.activation != "linear":
            return layer.activation
    return "linear"


def check_job_against_dataset(spec: JobSpec, dataset: DatasetInfo) -> list[Shape]:
    """Check the network fits the dataset and the loss; return the inferred shapes."""
    shapes = infer_shapes(spec.model)
    wanted = math.prod(spec.model.input_shape)
    if wanted != dataset.n_features:
        raise InvalidSpec(
            f"dataset '{dataset.name}' has {dataset.n_features} features per sample, "
            f"but input_shape {list(spec.model.input_shape)} holds {wanted}",
            field="model.input_shape",
        )
    _check_loss(spec, dataset, shapes[-1])
    return shapes


def _check_loss(spec: JobSpec, dataset: DatasetInfo, output: Shape) -> None:
    loss = spec.training.loss
    last = len(spec.model.layers) - 1
    field = f"model.layers[{last}]"
    if len(output) != 1:
        raise InvalidSpec(f"the model must end with a flat output, got {_show(output)}: add Flatten and Dense", field=field)
    units, activation = output[0], final_activation(spec.model)
    if loss == "mse":
        if dataset.task != "regression":
            raise InvalidSpec(
                f"loss 'mse' needs a regression dataset; '{dataset.name}' is classification: use sparse_categorical_crossentropy",
                field="training.loss",
            )
        if units != dataset.n_targets:
            raise InvalidSpec(
                f"the last layer outputs {units} values; '{dataset.name}' has {dataset.n_targets} target(s): "
                f"set units={dataset.n_targets}",
                field=field,
            )
        return
    if dataset.task != "classification":
        raise InvalidSpec(
            f"loss '{loss}' needs a classification dataset; '{dataset.name}' is regression: use mse", field="training.loss"
        )
    if loss == "binary_crossentropy":
        if dataset.n_classes != 2:
            raise InvalidSpec(
                f"binary_crossentropy needs 2 classes; '{dataset.name}' has {dataset.n_classes}: "
                "use sparse_categorical_crossentropy",
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
        raise InvalidSpec(
            "sparse_categorical_crossentropy needs 'softmax' (or 'linear' logits) on the last layer, not 'sigmoid'", field=field
        )
