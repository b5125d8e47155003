"""One job's ML work: build the network from its spec, train it, export ONNX, check parity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.data.builtins import LoadedDataset, validation_split
from services.errors import TrainingFailed
from services.spec import JobSpec, TrainingSpec
from services.training.builder import Network, build_network, parameter_count
from services.training.export import export_onnx, parity_max_abs_diff
from services.training.loop import EpochResult, Split, evaluate, fit
from services.training.objectives import Objective


@dataclass(frozen=True)
class TrainingOutcome:
    history: list[EpochResult]
    metrics: dict[str, float]  # final epoch, the test split (test_*), timings and the parity figure


def _optimizer(spec: TrainingSpec, network: torch.nn.Module) -> torch.optim.Optimizer:
    opt = spec.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(network.parameters(), lr=opt.learning_rate, momentum=opt.momentum)
    # Keras' Adam uses epsilon 1e-7; torch's default is 1e-8.
    return torch.optim.Adam(network.parameters(), lr=opt.learning_rate, eps=1e-7)


def _split(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...], device: torch.device) -> Split:
    # Samples are reshaped to the model's input_shape; the element counts were checked at submission.
    return Split(torch.from_numpy(x).reshape(len(x), *shape).to(device), torch.from_numpy(y).to(device))


def train_and_export(
    spec: JobSpec,
    data: LoadedDataset,
    *,
    device: torch.device,
    onnx_path: Path,
    parity_rows: int,
    parity_tolerance: float,
    on_epoch_end: Callable[[EpochResult], None],
) -> TrainingOutcome:
    """Train `spec` on `data`, write its ONNX export to `onnx_path`, and return the version's metrics."""
    shape = tuple(spec.model.input_shape)
    torch.manual_seed(spec.training.seed)
    network: Network = build_network(spec.model, fuse_output_activation=spec.training.loss != "mse")
    objective = Objective(spec.training.loss, from_logits=network.outputs_logits)
    x_fit, y_fit, x_val, y_val = validation_split(
        data.x_train,
        data.y_train,
        fraction=spec.data.validation_split,
        seed=spec.training.seed,
        stratify=objective.is_classification,
    )
    network.to(device)
    started = time.perf_counter()
    history = fit(
        network.body,
        objective,
        _optimizer(spec.training, network),
        train=_split(x_fit, y_fit, shape, device),
        val=_split(x_val, y_val, shape, device) if len(x_val) else None,
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        generator=torch.Generator().manual_seed(spec.training.seed),
        on_epoch_end=on_epoch_end,
    )
    train_seconds = time.perf_counter() - started
    test = evaluate(network.body, objective, _split(data.x_test, data.y_test, shape, device))
    started = time.perf_counter()
    export_onnx(network, input_shape=shape, path=onnx_path)
    held_out = data.x_test[:parity_rows].reshape(-1, *shape)
    diff = parity_max_abs_diff(network, path=onnx_path, rows=held_out)
    if not diff <= parity_tolerance:  # also catches NaN
        raise TrainingFailed(f"ONNX parity check failed: max abs diff {diff:.3g} > {parity_tolerance:g}")
    metrics = (
        history[-1].metrics
        | {f"test_{k}": v for k, v in test.items()}
        | {
            "epochs": float(len(history)),
            "train_seconds": train_seconds,
            "export_seconds": time.perf_counter() - started,
            "onnx_parity_max_abs_diff": diff,
            "parameters": float(parameter_count(network)),
        }
    )
    return TrainingOutcome(history, metrics)
