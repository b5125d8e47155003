"""A small, fast training loop: the data lives on the device as one tensor and batches are slices of it.

It knows a job only as a Trainer (services/training/kinds): what a batch's step does, what an epoch's end reports.
It knows no spec.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from services.data.arrays import RowView

if TYPE_CHECKING:
    from services.training.distributed import Distributed


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    metrics: dict[str, float]  # Keras names: loss, accuracy, val_loss, val_accuracy ... and learning_rate
    duration_s: float
    samples: int  # training rows seen
    warnings: tuple[str, ...] = ()  # what the job is told about this epoch (a GAN's stability)
    image: bytes | None = None  # a PNG of the fixed latent batch's samples (GANs)
    stopped: bool = False  # early stopping ended training here


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
        """(x, y) batches of the rows in `order` (None: all, as stored); in-memory batches are views of one gather."""
        n = len(self) if order is None else len(order)
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


@dataclass(frozen=True)
class FitOptions:
    """How the loop runs, whatever kind of job it trains."""

    epochs: int
    batch_size: int
    generator: torch.Generator  # the shuffling order
    should_stop: Callable[[], bool] | None = None  # asked at every batch boundary (cancellation)
    deadline: float | None = None  # time.monotonic() past which training gives up
    max_duration_s: float | None = None  # the budget `deadline` came from, for the message
    on_epoch_end: tuple[Callable[[EpochResult], None], ...] = ()  # called in turn after each epoch (checkpoint, then report)
    distributed: Distributed | None = None  # one rank of several: it trains its shard, and figures are summed over ranks


@dataclass(frozen=True)
class EpochEnd:
    """What a trainer makes of an epoch: its metrics, whether to stop, and what to tell the job."""

    metrics: dict[str, float]
    stop: bool = False
    warnings: tuple[str, ...] = ()
    image: bytes | None = None  # a PNG of what the network makes of a fixed input (GANs)


class Trainer(Protocol):
    """One kind of job's training, as the loop drives it: the batches' steps and the epochs' ends."""

    figures: tuple[str, ...]  # what each step returns, by name; the first is the loss checked for divergence

    def begin_epoch(self, epoch: int) -> None: ...

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on one batch; return its figures, detached, in the order `figures` names them."""
        ...

    def end_epoch(self, epoch: int, means: dict[str, float], val: Split | None) -> EpochEnd:
        """The epoch's metrics from the figures' means over its rows (and the validation split)."""
        ...

    def finish(self) -> None:
        """After the last epoch (early stopping puts its best weights back here)."""
        ...


class Diverged(RuntimeError):
    """A loss went non-finite: training cannot go on from there."""

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch


class Stopped(RuntimeError):
    """Training was asked to stop (the job was cancelled)."""


class OutOfTime(RuntimeError):
    """Training ran past its time budget."""


def autocast(x: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def fit(trainer: Trainer, *, train: Split, val: Split | None, options: FitOptions,
        done: list[EpochResult] | None = None) -> list[EpochResult]:  # fmt: skip
    """Train for up to `options.epochs`, reporting each epoch; raise Diverged on a non-finite loss.

    `done`: the epochs a checkpoint restored (the state is already back); training goes on after them.
    """
    results = list(done or [])
    finished = bool(results) and results[-1].stopped
    for epoch in range(len(results) + 1, options.epochs + 1 if not finished else 0):
        started = time.perf_counter()
        trainer.begin_epoch(epoch)
        means = _train_epoch(trainer, train, options, epoch)
        end = trainer.end_epoch(epoch, means, val)
        result = EpochResult(epoch, end.metrics, time.perf_counter() - started, len(train), end.warnings, end.image, end.stop)
        for hook in options.on_epoch_end:
            hook(result)
        results.append(result)
        if end.stop:
            break
    trainer.finish()
    return results


def _train_epoch(trainer: Trainer, data: Split, options: FitOptions, epoch: int) -> dict[str, float]:
    size, ranks = options.batch_size, options.distributed
    order = ranks.shard(len(data), epoch) if ranks is not None else torch.randperm(len(data), generator=options.generator)
    order = order.to(data.y.device)
    n = len(order)
    figures = torch.empty((n + size - 1) // size, len(trainer.figures), device=data.y.device)
    for batch, (x, y) in enumerate(data.batches(order, size)):
        if options.should_stop is not None and options.should_stop():
            raise Stopped(f"cancelled at epoch {epoch}, batch {batch + 1}")
        if options.deadline is not None and time.monotonic() > options.deadline:
            raise OutOfTime(f"stopped at epoch {epoch}, batch {batch + 1}: training.max_duration_s of {options.max_duration_s:g} s reached")
        figures[batch] = trainer.step(x, y)
    counts = torch.full((len(figures), 1), float(size), device=figures.device)
    counts[-1] = n - size * (len(figures) - 1)
    # Checked once per epoch, not per batch: a per-batch check would stall a GPU on every step.
    bad = torch.nonzero(~torch.isfinite(figures))
    sums, rows, elsewhere = (figures * counts).sum(dim=0), float(n), False
    if ranks is not None:  # every rank's rows, and whether any rank diverged (all raise together, none waits on another)
        totals = ranks.sum(torch.cat([sums, torch.tensor([rows, float(len(bad))], device=sums.device)]))
        sums, rows, elsewhere = totals[:-2], float(totals[-2]), bool(totals[-1] > 0)
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise Diverged(f"diverged at epoch {epoch}, batch {row + 1}: {_the(trainer.figures[column])} is not finite", epoch)
    if elsewhere:
        raise Diverged(f"diverged at epoch {epoch} in another training process: a figure is not finite", epoch)
    return dict(zip(trainer.figures, (sums / rows).tolist(), strict=True))


def _the(figure: str) -> str:
    return "the loss" if figure == "loss" else figure
