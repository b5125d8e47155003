"""A small, fast training loop: the data lives on the device as one tensor and batches are slices of it.

It knows the model only as an nn.Module and the task only as an Objective; it knows no spec.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from services.data.arrays import RowView
from services.training.callbacks import EarlyStopping
from services.training.objectives import Objective, compute_metrics
from services.training.optim import LrSchedule


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    metrics: dict[str, float]  # Keras names: loss, accuracy, val_loss, val_accuracy ... and learning_rate
    duration_s: float
    samples: int  # training rows seen


@dataclass(frozen=True)
class Split:
    """Inputs on the device as one tensor, or rows on disk (a RowView) read batch by batch."""

    x: torch.Tensor | RowView
    y: torch.Tensor  # as the loss reads it (Objective.prepare_targets), on the device
    x_dtype: torch.dtype = torch.float32  # what rows read from disk are converted to
    row_shape: tuple[int, ...] | None = None  # what rows read from disk are reshaped to (the model's input_shape)

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, order: torch.Tensor | None, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches in `order` (None: as stored); in-memory batches are views of one gather."""
        n = len(self)
        if isinstance(self.x, torch.Tensor):
            xs, ys = (self.x, self.y) if order is None else (self.x[order], self.y[order])
            for start in range(0, n, size):
                yield xs[start : start + size], ys[start : start + size]
            return
        rows = np.arange(n) if order is None else order.cpu().numpy()
        for start in range(0, n, size):
            wanted = np.sort(rows[start : start + size])  # sorted: contiguous rows become one read
            block = self.x.read(wanted)
            block = block.reshape(len(wanted), *self.row_shape) if self.row_shape else block
            x = torch.from_numpy(block).to(self.y.device, self.x_dtype, non_blocking=True)
            yield x, self.y[torch.from_numpy(wanted).to(self.y.device)]


@dataclass
class FitOptions:
    epochs: int
    batch_size: int
    metrics: list[str]
    generator: torch.Generator
    schedule: LrSchedule
    clip: Callable[[], None] | None = None
    stopper: EarlyStopping | None = None
    autocast: torch.dtype | None = None  # bf16 on CUDA where supported
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # training batches only
    should_stop: Callable[[], bool] | None = None  # asked at every batch boundary (cancellation)
    deadline: float | None = None  # time.monotonic() past which training gives up
    max_duration_s: float | None = None  # the budget `deadline` came from, for the message
    on_epoch_end: Callable[[EpochResult], None] = field(default=lambda result: None)
    penalty: Callable[[], torch.Tensor | None] | None = None  # the regularizers' loss after each forward
    constrain: Callable[[], None] | None = None  # kernel constraints, applied after each step


class Diverged(RuntimeError):
    pass


class Stopped(RuntimeError):
    """Training was asked to stop (the job was cancelled)."""


class OutOfTime(RuntimeError):
    """Training ran past its time budget."""


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def fit(network: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, *,
        train: Split, val: Split | None, options: FitOptions, done: list[EpochResult] | None = None) -> list[EpochResult]:  # fmt: skip
    """Train for up to `options.epochs`, reporting each epoch; raise Diverged on a non-finite loss.

    `done`: the epochs a checkpoint restored (the state is already back); training goes on after them.
    """
    results = list(done or [])
    finished = options.stopper is not None and options.stopper.stopped
    for epoch in range(len(results) + 1, options.epochs + 1 if not finished else 0):
        started = time.perf_counter()
        learning_rate = options.schedule.learning_rate
        metrics = _train_epoch(network, objective, optimizer, train, options, epoch)
        if val is not None and len(val):
            metrics |= {f"val_{k}": v for k, v in evaluate(network, objective, val, options.metrics, options.autocast).items()}
        metrics["learning_rate"] = learning_rate
        options.schedule.after_epoch(metrics)
        stop = options.stopper.update(epoch, metrics, network) if options.stopper else False
        result = EpochResult(epoch, metrics, time.perf_counter() - started, len(train))
        options.on_epoch_end(result)
        results.append(result)
        if stop:
            break
    if options.stopper:
        options.stopper.restore(network)
    return results


def _train_epoch(network: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                 data: Split, options: FitOptions, epoch: int) -> dict[str, float]:  # fmt: skip
    network.train()
    n, size = len(data), options.batch_size
    order = torch.randperm(n, generator=options.generator).to(data.y.device)
    losses = torch.empty((n + size - 1) // size, device=data.y.device)
    penalties = torch.zeros_like(losses) if options.penalty is not None else None
    outputs, targets = [], []
    for batch, (x, y) in enumerate(data.batches(order, size)):
        if options.should_stop is not None and options.should_stop():
            raise Stopped(f"cancelled at epoch {epoch}, batch {batch + 1}")
        if options.deadline is not None and time.monotonic() > options.deadline:
            raise OutOfTime(f"stopped at epoch {epoch}, batch {batch + 1}: training.max_duration_s of {options.max_duration_s:g} s reached")
        if options.augment is not None:
            x = options.augment(x)
        with _autocast(x, options.autocast):
            output = network(x)
            loss = objective.loss(output.float(), y)
        if penalties is not None and options.penalty is not None and (penalty := options.penalty()) is not None:
            penalties[batch] = penalty.detach()
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.clip is not None:
            options.clip()
        optimizer.step()
        if options.constrain is not None:
            options.constrain()
        options.schedule.after_batch()
        losses[batch] = loss.detach()
        outputs.append(output.detach())
        targets.append(y)
    # Checked once per epoch, not per batch: a per-batch check would stall a GPU on every step.
    bad = torch.nonzero(~torch.isfinite(losses))
    if len(bad):
        raise Diverged(f"diverged at epoch {epoch}, batch {int(bad[0]) + 1}: the loss is not finite")
    counts = torch.full_like(losses, size)
    counts[-1] = n - size * (len(losses) - 1)
    metrics = {"loss": float((losses * counts).sum() / n)}
    if penalties is not None:  # Keras' loss includes the regularizers; their share and the data's are reported apart
        metrics["regularization_loss"] = float((penalties * counts).sum() / n)
        metrics["data_loss"] = metrics["loss"] - metrics["regularization_loss"]
    return metrics | compute_metrics(objective, options.metrics, torch.cat(outputs).float(), torch.cat(targets))


@torch.no_grad()
def evaluate(network: nn.Module, objective: Objective, data: Split, metrics: list[str],
             autocast: torch.dtype | None = None, batch_size: int = 1024) -> dict[str, float]:  # fmt: skip
    """Loss and metrics over `data`, in eval mode (dropout off, batch norm on running statistics)."""
    network.eval()
    outputs = []
    for x, _ in data.batches(None, batch_size):
        with _autocast(x, autocast):
            outputs.append(network(x).float())
    output = torch.cat(outputs)
    return {"loss": float(objective.loss(output, data.y))} | compute_metrics(objective, metrics, output, data.y)
