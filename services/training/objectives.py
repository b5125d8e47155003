"""Losses and metrics. Losses read the network's raw output: logits when the head was lifted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-7


@dataclass(frozen=True)
class Objective:
    """A Keras loss name bound to how the network's output and the targets look."""

    loss_name: str
    from_logits: bool  # the output is logits (a softmax/sigmoid head was lifted for the loss)
    n_classes: int = 0  # classification only

    @property
    def is_classification(self) -> bool:
        return self.loss_name.endswith("crossentropy")

    def prepare_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as the loss reads them: one-hot rows for categorical_crossentropy, floats for the rest."""
        if self.loss_name == "categorical_crossentropy":
            return F.one_hot(y, self.n_classes).float()
        if self.loss_name == "binary_crossentropy":
            return y.float().reshape(-1, 1)  # (B,) -> (B, 1)
        return y

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = self.loss_name
        if name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            if self.from_logits:
                return F.cross_entropy(output, target)
            log_p = torch.log(output.clamp_min(_EPS))
            return F.nll_loss(log_p, target) if target.dtype == torch.int64 else -(target * log_p).sum(-1).mean()
        if name == "binary_crossentropy":
            if self.from_logits:
                return F.binary_cross_entropy_with_logits(output, target)
            return F.binary_cross_entropy(output.clamp(_EPS, 1 - _EPS), target)
        if name == "mae":
            return F.l1_loss(output, target)
        if name == "huber":
            return F.huber_loss(output, target, delta=1.0)
        return F.mse_loss(output, target)

    def predicted_labels(self, output: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "binary_crossentropy":
            return (output.reshape(-1) > (0.0 if self.from_logits else 0.5)).long()
        return output.argmax(dim=-1)

    def true_labels(self, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "categorical_crossentropy":
            return target.argmax(dim=-1)
        return target.reshape(-1).long()


def compute_metrics(objective: Objective, names: list[str], output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Keras-named metrics over a whole split; precision, recall and F1 are binary for 2 classes, else macro."""
    if not objective.is_classification:
        error = (output.float() - target).reshape(len(output), -1)
        found = {"mae": error.abs().mean(), "rmse": error.pow(2).mean().sqrt()}
        return {name: float(found[name]) for name in names}
    k = max(objective.n_classes, 2)
    predicted, true = objective.predicted_labels(output), objective.true_labels(target)
    confusion = torch.bincount(true * k + predicted, minlength=k * k).reshape(k, k).double()  # rows: true, cols: predicted
    hits = confusion.diagonal()
    precision = hits / confusion.sum(0).clamp_min(1)
    recall = hits / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    pick = (lambda v: v[1]) if k == 2 else (lambda v: v.mean())
    found = {"accuracy": hits.sum() / confusion.sum(), "precision": pick(precision), "recall": pick(recall), "f1": pick(f1)}
    return {name: float(found[name]) for name in names}
