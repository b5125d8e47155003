"""A small training loop: the data lives on the device as one tensor and batches are slices of it.

It knows the model only as an nn.Module and the task only as an Objective; it knows no spec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from services.training.objectives import Objective


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    metrics: dict[str, float]  # Keras names: loss, accuracy, val_loss, val_accuracy ...
    duration_s: float


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


class Diverged(RuntimeError):
    pass


def fit(
    network: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    *,
    train: Split,
    val: Split | None,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    on_epoch_end: Callable[[EpochResult], None],
) -> list[EpochResult]:
    """Train for `epochs`, reporting each epoch's averages; raise Diverged on a non-finite loss."""
    results = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        metrics = _train_epoch(network, objective, optimizer, train, batch_size, generator, epoch)
        if val is not None and len(val):
            metrics |= {f"val_{k}": v for k, v in evaluate(network, objective, val).items()}
        result = EpochResult(epoch, metrics, time.perf_counter() - started)
        on_epoch_end(result)
        results.append(result)
    return results


def _train_epoch(
    network: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    data: Split,
    batch_size: int,
    generator: torch.Generator,
    epoch: int,
) -> dict[str, float]:
    network.train()
    order = torch.randperm(len(data), generator=generator).to(data.x.device)
    loss_sum = torch.zeros((), device=data.x.device)
    metric_sum = torch.zeros((), device=data.x.device)
    for batch_index, start in enumerate(range(0, len(data), batch_size)):
        idx = order[start : start + batch_size]
        x, y = data.x[idx], data.y[idx]
        output = network(x)
        loss = objective.loss(output, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise Diverged(f"diverged at epoch {epoch}, batch {batch_index + 1}: loss is {loss.item()}")
        loss_sum += loss.detach() * len(idx)
        metric_sum += objective.metric_sum(output.detach(), y).to(loss_sum.dtype)
    n = len(data)
    return {"loss": loss_sum.item() / n, objective.metric_name(): metric_sum.item() / n}


@torch.no_grad()
def evaluate(network: nn.Module, objective: Objective, data: Split, batch_size: int = 4096) -> dict[str, float]:
    """Loss and metric over `data`, in eval mode (dropout off)."""
    network.eval()
    loss_sum = metric_sum = 0.0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start : start + batch_size], data.y[start : start + batch_size]
        output = network(x)
        loss_sum += objective.loss(output, y).item() * len(x)
        metric_sum += objective.metric_sum(output, y).item()
    return {"loss": loss_sum / len(data), objective.metric_name(): metric_sum / len(data)}
