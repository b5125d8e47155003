"""A transfer-learning job's checks: what `training.fine_tune` unfreezes, and when it cannot work."""

from __future__ import annotations

from services.errors import InvalidSpec
from services.spec.graph import resolve
from services.spec.job import JobSpec
from services.spec.weights import penalized_argument


def _weighted_base_layers(spec: JobSpec) -> list[str]:
    base = spec.network.base
    if base is None or base.layers is None:
        return []
    return [n.name for n in resolve(spec.network).by_index() if n.name in base.layers and n.parameters]


def fine_tuned_layers(spec: JobSpec) -> list[str]:
    """The base layers `training.fine_tune` unfreezes: every one that has weights, or the last N of them."""
    fine_tune = spec.training.fine_tune
    if fine_tune is None:
        return []
    weighted = _weighted_base_layers(spec)
    return weighted if fine_tune.unfreeze == "all" else weighted[-fine_tune.unfreeze :]


def check_fine_tune(spec: JobSpec) -> None:
    fine_tune = spec.training.fine_tune
    if fine_tune is None:
        return
    base = spec.network.base if spec.kind != "gan" else None
    if base is None:
        raise InvalidSpec("training.fine_tune unfreezes a base: give model.base", field="training.fine_tune")
    if base.trainable:
        raise InvalidSpec("training.fine_tune unfreezes a frozen base: set model.base.trainable to false", field="training.fine_tune")
    if fine_tune.after_epoch >= spec.training.epochs:
        raise InvalidSpec(f"training.fine_tune.after_epoch must be below training.epochs ({spec.training.epochs})",
                          field="training.fine_tune.after_epoch")  # fmt: skip
    if spec.training.lr_schedule.name != "constant":
        raise InvalidSpec("training.fine_tune adds the base's layers with their own learning rate: use a constant lr_schedule",
                          field="training.lr_schedule")  # fmt: skip
    weighted = len(_weighted_base_layers(spec))
    layers = {str(layer.name): layer for layer in spec.network.layers}
    for name in fine_tuned_layers(spec):
        if (argument := penalized_argument(layers[name])) is not None:
            raise InvalidSpec(f"the base layer '{name}' has {argument}, which fine-tuning would not apply once it is "
                              "unfrozen: unfreeze fewer layers, or use a trainable base", field="training.fine_tune")  # fmt: skip
    if fine_tune.unfreeze != "all" and fine_tune.unfreeze > weighted:
        raise InvalidSpec(f"training.fine_tune.unfreeze is {fine_tune.unfreeze}, but the base has {weighted} layers with weights",
                          field="training.fine_tune.unfreeze")  # fmt: skip
