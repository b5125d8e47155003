"""One job's ML work: build the network from its spec, train it, export ONNX, check parity."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.data.builtins import LoadedDataset, validation_split
from services.errors import TrainingFailed
from services.spec import JobSpec, has_dynamic_time_axis, input_dtype
from services.training.builder import Network, build_network, parameter_count
from services.training.callbacks import EarlyStopping
from services.training.export import example_input, export_onnx, onnx_parity
from services.training.loop import EpochResult, FitOptions, Split, evaluate, fit
from services.training.objectives import Objective
from services.training.optim import LrSchedule, make_clipper, make_optimizer


@dataclass(frozen=True)
class TrainingOutcome:
    history: list[EpochResult]
    metrics: dict[str, float]  # final epoch, the test split (test_*), timings and the parity figure


@dataclass(frozen=True)
class ParityCheck:
    rows: int  # held-out rows compared
    atol: float
    rtol: float


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)  # one pinned copy, overlapped with set-up
    return tensor


def _splits(spec: JobSpec, data: LoadedDataset, objective: Objective, device: torch.device) -> tuple[Split, Split | None, Split]:
    shape = tuple(spec.model.input_shape)
    reconstruct = spec.data.targets == "inputs"

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        x = x.reshape(len(x), *shape)  # element counts were checked at submission
        targets = torch.from_numpy(x.astype(np.float32) if reconstruct else y)
        return Split(_to_device(x, device), objective.prepare_targets(targets.to(device)))

    x_fit, y_fit, x_val, y_val = validation_split(
        data.x_train, data.y_train, fraction=spec.data.validation_split, seed=spec.training.seed,
        stratify=objective.is_classification,
    )  # fmt: skip
    return split(x_fit, y_fit), split(x_val, y_val) if len(x_val) else None, split(data.x_test, data.y_test)


def _fit_options(spec: JobSpec, network: Network, optimizer: torch.optim.Optimizer, train: Split, device: torch.device,
                 on_epoch_end: Callable[[EpochResult], None]) -> FitOptions:  # fmt: skip
    training = spec.training
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return FitOptions(
        epochs=training.epochs, batch_size=training.batch_size, metrics=training.metric_names,
        generator=torch.Generator().manual_seed(training.seed),
        schedule=LrSchedule(training.lr_schedule, optimizer, epochs=training.epochs,
                            batches_per_epoch=math.ceil(len(train) / training.batch_size)),
        clip=make_clipper(training.optimizer, list(network.parameters())),
        stopper=EarlyStopping(training.early_stopping) if training.early_stopping else None,
        autocast=torch.bfloat16 if bf16 else None, on_epoch_end=on_epoch_end,
    )  # fmt: skip


def train_and_export(spec: JobSpec, data: LoadedDataset, *, device: torch.device, onnx_path: Path, parity: ParityCheck,
                     on_epoch_end: Callable[[EpochResult], None]) -> TrainingOutcome:  # fmt: skip
    """Train `spec` on `data`, write its ONNX export to `onnx_path`, and return the version's metrics."""
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, fuse_output_activation=not spec.training.is_regression)
    objective = Objective(spec.training.loss, from_logits=network.outputs_logits, n_classes=data.info.n_classes)
    train, val, test = _splits(spec, data, objective, device)
    network.to(device)
    if device.type == "cuda":
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # conv weights as cuDNN prefers
    optimizer = make_optimizer(spec.training.optimizer, list(network.parameters()))
    options = _fit_options(spec, network, optimizer, train, device, on_epoch_end)
    started = time.perf_counter()
    history = fit(network.body, objective, optimizer, train=train, val=val, options=options)
    train_seconds = time.perf_counter() - started
    tested = evaluate(network.body, objective, test, options.metrics, options.autocast)
    started = time.perf_counter()
    shape, dtype = tuple(spec.model.input_shape), input_dtype(spec.model)
    export_onnx(network, example=example_input(shape, dtype), path=onnx_path, dynamic_time=has_dynamic_time_axis(spec.model))
    held_out = data.x_test[: parity.rows].reshape(-1, *shape).astype(dtype)
    agreement = onnx_parity(network, path=onnx_path, rows=held_out, atol=parity.atol, rtol=parity.rtol)
    if not agreement.agrees:
        raise TrainingFailed(
            f"ONNX parity check failed: max abs diff {agreement.max_abs_diff:.3g} > {parity.atol:g} (+ rtol {parity.rtol:g})"
        )
    stopper = options.stopper
    extra = {"best_epoch": float(stopper.best_epoch)} if stopper else {}
    metrics = history[-1].metrics | {f"test_{k}": v for k, v in tested.items()} | extra | {
        "epochs": float(len(history)), "train_seconds": train_seconds, "export_seconds": time.perf_counter() - started,
        "onnx_parity_max_abs_diff": agreement.max_abs_diff, "parameters": float(parameter_count(network)),
    }  # fmt: skip
    return TrainingOutcome(history, metrics)
