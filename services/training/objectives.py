"""Losses and metrics. Each objective reads the network's raw output: logits when the head was lifted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-7


@dataclass(frozen=True)
class Objective:
    """A Keras loss name bound to whether the network's output is logits or already activated."""

    loss_name: str
    from_logits: bool

    @property
    def is_classification(self) -> bool:
        return self.loss_name != "mse"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "sparse_categorical_crossentropy":
            if self.from_logits:
                return F.cross_entropy(output, target)  # (B, K), (B,)
            return F.nll_loss(torch.log(output.clamp_min(_EPS)), target)
        if self.loss_name == "binary_crossentropy":
            target = target.to(output.dtype).reshape(output.shape)  # (B,) -> (B, 1)
            if self.from_logits:
                return F.binary_cross_entropy_with_logits(output, target)
            return F.binary_cross_entropy(output.clamp(_EPS, 1 - _EPS), target)
        return F.mse_loss(output, target)

    def metric_name(self) -> str:
        return "accuracy" if self.is_classification else "mae"

    def metric_sum(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The metric summed over the batch, so batches of any size add up exactly."""
        if self.loss_name == "sparse_categorical_crossentropy":
            return (output.argmax(dim=-1) == target).sum()
        if self.loss_name == "binary_crossentropy":
            threshold = 0.0 if self.from_logits else 0.5
            return ((output.reshape(-1) > threshold).long() == target.reshape(-1)).sum()
        return (output - target).abs().mean(dim=-1).sum()
