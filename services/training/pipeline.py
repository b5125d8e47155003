"""One job's ML work, whatever its kind: build the kind's networks, train them, export ONNX, check parity.

Every kind (services/training/kinds) runs through the same steps here: one loop, one checkpoint hook, one
report hook, one time budget. What differs between kinds lives in their modules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.data.builtins import LoadedDataset
from services.errors import TrainingFailed
from services.spec import JobSpec
from services.spec.budget import footprints
from services.training import checkpoint
from services.training.device import cpu_threads_for
from services.training.distributed import Distributed
from services.training.epoch_writer import EpochWriter
from services.training.kinds import BaseWeights, JobKind, ParityCheck, build_kind
from services.training.loop import EpochResult, FitOptions, fit

__all__ = ["BaseWeights", "Checkpointing", "ParityCheck", "TrainingOutcome", "train_and_export"]


@dataclass(frozen=True)
class TrainingOutcome:
    history: list[EpochResult]
    metrics: dict[str, float]  # final epoch, the test split (test_*), timings and the parity figure
    labels: list[str] | None = None  # class names in output order
    preprocessing: dict[str, Any] | None = None  # what predict does to raw inputs (text models)
    anomaly: dict[str, Any] | None = None  # an autoencoder's reconstruction-error threshold (training.anomaly)
    task: str | None = None  # what serving does with the version (the kind's task)
    generation: dict[str, Any] | None = None  # a GAN generator's: latent_dim, classes, sample shape and range
    unfrozen: list[str] | None = None  # the base layers fine-tuning unfroze (none if training ended first)


# A checkpoint up to this size is written behind training (a snapshot in memory meanwhile); a bigger one, as it is taken.
BACKGROUND_CHECKPOINT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Checkpointing:
    """Where each epoch's checkpoint goes, the checkpoint of an earlier attempt to resume from, and the writer that writes
    it behind training (None: written before the next epoch starts)."""

    path: Path
    resume: dict[str, Any] | None = None
    writer: EpochWriter | None = None


def train_and_export(
    spec: JobSpec, data: LoadedDataset, *, device: torch.device, onnx_path: Path, parity: ParityCheck,
    on_epoch_end: Callable[[EpochResult], None], should_stop: Callable[[], bool] | None = None,
    checkpointing: Checkpointing | None = None, weights_path: Path | None = None,
    base_weights: BaseWeights | None = None, distributed: Distributed | None = None,
) -> TrainingOutcome:  # fmt: skip
    """Train `spec` on `data`, write its ONNX export to `onnx_path` (and its state dict, as safetensors, to
    `weights_path`), and return the version's metrics. `base_weights`: the state dict of `spec`'s base version, whose
    layers the network starts from (transfer learning). `distributed`: this process is one rank of several; only
    rank 0 checkpoints, reports epochs, tests and exports (the others' outcome holds their history alone)."""
    torch.manual_seed(spec.training.seed)
    kind = build_kind(spec, data, device, base_weights.vocabulary if base_weights is not None else None, distributed)
    base = spec.network.base if spec.kind != "gan" else None
    if (base_weights is None) != (base is None):
        raise TrainingFailed("a model on a base needs the base's weights" if base else "weights given for a model with no base")
    if base_weights is not None:
        kind.load_base(base_weights.state, base_weights.input_names)
    shuffle = torch.Generator().manual_seed(spec.training.seed)
    resume = checkpointing.resume if checkpointing else None
    done = checkpoint.restore(resume, kind, shuffle) if resume else []
    writer = distributed is None or distributed.is_writer
    hooks = (_checkpointer(checkpointing, kind, shuffle, done), on_epoch_end) if checkpointing else (on_epoch_end,)
    deadline, budget = None, spec.training.max_duration_s
    if budget is not None:  # the budget covers earlier attempts' epochs too
        deadline = time.monotonic() + budget - sum(r.duration_s for r in done)
    options = FitOptions(epochs=spec.training.epochs, batch_size=spec.training.batch_size, generator=shuffle,
                         should_stop=should_stop, deadline=deadline, max_duration_s=budget, on_epoch_end=hooks if writer else (),
                         distributed=distributed)  # fmt: skip
    started = time.perf_counter()
    with cpu_threads_for(_footprint(spec), device):  # a small network trains faster, and cheaper, on one thread
        history = fit(kind.trainer, train=kind.train, val=kind.val, options=options, done=done)
    train_seconds = time.perf_counter() - started
    if not writer:
        return TrainingOutcome(history, history[-1].metrics if history else {})
    tested = kind.test()
    started = time.perf_counter()
    exported = kind.export(onnx_path, parity)
    if weights_path is not None:
        save_weights(kind.weights(), weights_path)
    export_seconds = time.perf_counter() - started
    metrics = history[-1].metrics | tested | {
        "epochs": float(len(history)), "train_seconds": train_seconds, "export_seconds": export_seconds,
        "onnx_parity_max_abs_diff": exported.parity_max_abs_diff,
    }  # fmt: skip
    return TrainingOutcome(history, metrics, exported.labels, exported.preprocessing, exported.anomaly, kind.task,
                           exported.generation, list(getattr(kind, "unfrozen", [])))  # fmt: skip


def _footprint(spec: JobSpec) -> int | None:
    try:
        return footprints(spec)[-1].memory_bytes
    except Exception:  # a spec the estimate cannot read: the process's own thread count
        return None


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """A state dict as safetensors: tensors only, no pickled code; every tensor its own contiguous copy on the CPU."""
    from safetensors.torch import save_file

    save_file({name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}, str(path),
              metadata={"format": "kiln-state-dict-1"})  # fmt: skip


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _checkpointer(to: Checkpointing, kind: JobKind, shuffle: torch.Generator, done: list[EpochResult]) -> Callable[[EpochResult], None]:
    """The hook that saves a checkpoint after every epoch, before the epoch is reported (so SQL never runs ahead of it)."""
    history = list(done)

    def save(result: EpochResult) -> None:
        history.append(result)
        state = checkpoint.capture(result.epoch, history, kind, shuffle)
        if to.writer is None or checkpoint.size(state) > BACKGROUND_CHECKPOINT_BYTES:
            if to.writer is not None:
                to.writer.flush()  # the writes already given come first
            checkpoint.save(state, to.path)
            return
        data = checkpoint.snapshot(state)
        to.writer.submit(lambda: checkpoint.write(data, to.path))

    return save
