"""One job's ML work: build the network from its spec, train it, export ONNX, check parity."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.data.arrays import RowView
from services.data.builtins import LoadedDataset, validation_split
from services.errors import TrainingFailed
from services.spec import JobSpec, final_activation, has_dynamic_time_axis
from services.training import checkpoint
from services.training.anomaly import anomaly_record
from services.training.augment import Augmenter, Corrupter
from services.training.builder import Network, Normalize, build_network, parameter_count
from services.training.callbacks import EarlyStopping
from services.training.export import example_input, export_onnx, onnx_parity
from services.training.loop import EpochResult, FitOptions, Split, evaluate, fit
from services.training.objectives import Objective
from services.training.optim import LrSchedule, make_clipper, make_optimizer
from services.training.preprocess import annotate_onnx, normalizer, tokenize_splits


@dataclass(frozen=True)
class TrainingOutcome:
    history: list[EpochResult]
    metrics: dict[str, float]  # final epoch, the test split (test_*), timings and the parity figure
    labels: list[str] | None = None  # class names in output order
    preprocessing: dict[str, Any] | None = None  # what predict does to raw inputs (text models)
    anomaly: dict[str, Any] | None = None  # an autoencoder's reconstruction-error threshold (training.anomaly)


@dataclass(frozen=True)
class ParityCheck:
    rows: int  # held-out rows compared
    atol: float
    rtol: float


@dataclass(frozen=True)
class Checkpointing:
    """Where each epoch's checkpoint goes, and the checkpoint of an earlier attempt to resume from."""

    path: Path
    resume: dict[str, Any] | None = None


@dataclass
class _Prepared:
    """The splits as the network reads them, with what was learnt from the training rows."""

    fit: np.ndarray | RowView
    y_fit: np.ndarray
    val: np.ndarray | RowView
    y_val: np.ndarray
    test: np.ndarray | RowView
    y_test: np.ndarray
    preprocessing: dict[str, Any] | None = None
    normalization: dict[str, Any] | None = field(default=None)


def _prepare(spec: JobSpec, data: LoadedDataset, stratify: bool) -> _Prepared:
    fit_x, y_fit, val_x, y_val = validation_split(
        data.x_train, data.y_train, fraction=spec.data.validation_split, seed=spec.data.seed, stratify=stratify
    )
    prepared = _Prepared(fit_x, y_fit, val_x, y_val, data.x_test, data.y_test)
    if data.info.dtype == "text":
        assert isinstance(fit_x, np.ndarray) and isinstance(val_x, np.ndarray) and isinstance(data.x_test, np.ndarray)
        (prepared.fit, prepared.val, prepared.test), prepared.preprocessing = tokenize_splits(spec.data, fit_x, val_x, data.x_test)
    return prepared


def _split(x: np.ndarray | RowView, y: np.ndarray, shape: tuple[int, ...], objective: Objective, device: torch.device,
           *, dtype: np.dtype, targets_are_inputs: bool) -> Split:  # fmt: skip
    """A split on the device; rows on disk stay there, to be read batch by batch."""
    x_dtype = torch.int64 if dtype == np.int64 else torch.float32
    if isinstance(x, RowView):
        if targets_are_inputs:
            raise TrainingFailed("autoencoders (targets: inputs) need a dataset that fits in memory")
        return Split(x, objective.prepare_targets(torch.from_numpy(y).to(device)), x_dtype, shape)
    x = np.ascontiguousarray(x.reshape(len(x), *shape).astype(dtype, copy=False))  # counts checked at submission
    tensor = torch.from_numpy(x)
    tensor = tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor
    targets = torch.from_numpy(x.astype(np.float32) if targets_are_inputs else y).to(device)
    return Split(tensor, objective.prepare_targets(targets), x_dtype)


def _fit_options(spec: JobSpec, network: Network, optimizer: torch.optim.Optimizer, train: Split, device: torch.device,
                 on_epoch_end: Callable[[EpochResult], None], should_stop: Callable[[], bool] | None) -> FitOptions:  # fmt: skip
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
        augment=_augmenter(spec), should_stop=should_stop,
        penalty=network.penalty if network.regularized else None, constrain=network.constrain if network.constrained else None,
    )  # fmt: skip


def _augmenter(spec: JobSpec) -> Augmenter | Corrupter | None:
    """What changes each training batch (never validation or test): augmentation, or an autoencoder's noise."""
    if spec.data.augmentation is not None:
        return Augmenter(spec.data.augmentation, seed=spec.training.seed)
    if spec.data.noise is not None:
        return Corrupter(spec.data.noise, seed=spec.training.seed)
    return None


def train_and_export(
    spec: JobSpec, data: LoadedDataset, *, device: torch.device, onnx_path: Path, parity: ParityCheck,
    on_epoch_end: Callable[[EpochResult], None], should_stop: Callable[[], bool] | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainingOutcome:  # fmt: skip
    """Train `spec` on `data`, write its ONNX export to `onnx_path`, and return the version's metrics."""
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, fuse_output_activation=not spec.training.is_regression)
    shape, dtype = _row_layout(network)
    # A lifted softmax/sigmoid leaves logits; so does a last layer with no squashing activation ("linear" is read as logits).
    from_logits = network.outputs_logits or final_activation(spec.model) not in ("softmax", "sigmoid")
    objective = Objective(spec.training.loss, from_logits=from_logits, n_classes=data.info.n_classes)
    prepared = _prepare(spec, data, stratify=objective.is_classification)
    if spec.data.normalization != "none":
        prepared.normalization = _normalize(network, spec.data.normalization, prepared.fit)
    reconstruct = spec.data.targets == "inputs"
    make = lambda x, y: _split(x, y, shape, objective, device, dtype=dtype, targets_are_inputs=reconstruct)  # noqa: E731
    train, test = make(prepared.fit, prepared.y_fit), make(prepared.test, prepared.y_test)
    val = make(prepared.val, prepared.y_val) if len(prepared.y_val) else None
    network.to(device)
    if device.type == "cuda":
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # conv weights as cuDNN prefers
    optimizer = make_optimizer(spec.training.optimizer, [p for p in network.parameters() if p.requires_grad])
    options = _fit_options(spec, network, optimizer, train, device, on_epoch_end, should_stop)
    done = _checkpoint_every_epoch(checkpointing, network, optimizer, options) if checkpointing else []
    started = time.perf_counter()
    if spec.training.max_duration_s is not None:  # the budget covers earlier attempts' epochs too
        left = spec.training.max_duration_s - sum(r.duration_s for r in done)
        options.deadline, options.max_duration_s = time.monotonic() + left, spec.training.max_duration_s
    history = fit(network.trainable(), objective, optimizer, train=train, val=val, options=options, done=done)
    train_seconds = time.perf_counter() - started
    tested = evaluate(network.trainable(), objective, test, options.metrics, options.autocast)
    started = time.perf_counter()
    labels = (list(data.info.class_names) or None) if spec.kind == "supervised" else None
    anomaly = anomaly_record(network, val, spec.training.anomaly) if spec.training.anomaly is not None and val else None
    parity_diff = _export(spec, network, prepared, onnx_path, parity, labels, anomaly)
    export_seconds = time.perf_counter() - started
    extra = {"best_epoch": float(options.stopper.best_epoch)} if options.stopper else {}
    metrics = history[-1].metrics | {f"test_{k}": v for k, v in tested.items()} | extra | {
        "epochs": float(len(history)), "train_seconds": train_seconds, "export_seconds": export_seconds,
        "onnx_parity_max_abs_diff": parity_diff, "parameters": float(parameter_count(network)),
    }  # fmt: skip
    return TrainingOutcome(history, metrics, labels, prepared.preprocessing, anomaly)


def _checkpoint_every_epoch(checkpointing: Checkpointing, network: Network, optimizer: torch.optim.Optimizer,
                            options: FitOptions) -> list[EpochResult]:  # fmt: skip
    """Restore an earlier attempt's checkpoint if there is one, and save one after every epoch (before it is reported)."""
    done = checkpoint.restore(checkpointing.resume, network, optimizer, options) if checkpointing.resume else []
    history, report = list(done), options.on_epoch_end

    def on_epoch_end(result: EpochResult) -> None:
        history.append(result)
        checkpoint.save(checkpoint.capture(result.epoch, history, network, optimizer, options), checkpointing.path)
        report(result)

    options.on_epoch_end = on_epoch_end
    return done


def _row_layout(network: Network) -> tuple[tuple[int, ...], np.dtype]:
    """How training holds a row: shaped as the one input, or the inputs' values side by side (float32 unless all are ids)."""
    layout = network.layout
    if len(layout) == 1:
        return layout[0].shape, np.dtype("int64" if layout[0].dtype == torch.int64 else "float32")
    ids = all(i.dtype == torch.int64 for i in layout)
    return (sum(i.size for i in layout),), np.dtype("int64" if ids else "float32")


def _normalize(network: Network, mode: str, rows: np.ndarray | RowView) -> dict[str, Any]:
    """Statistics of the training rows, per channel for one input (the last axis), per value for several."""
    layout = network.layout
    if len(layout) == 1:
        network.normalize[0], statistics = normalizer(mode, rows, channels=layout[0].shape[-1])
        return statistics
    module, statistics = normalizer(mode, rows, channels=sum(i.size for i in layout))
    start = 0
    for position, item in enumerate(layout):
        part = slice(start, start + item.size)
        network.normalize[position] = Normalize(module.shift[part].reshape(item.shape), module.scale[part].reshape(item.shape))
        start += item.size
    return statistics


def _feeds(network: Network, rows: np.ndarray) -> list[np.ndarray]:
    """Held-out rows as one array per model input."""
    layout, count = network.layout, len(rows)
    if len(layout) == 1:
        return [rows.reshape(count, *layout[0].shape)]
    flat, start, feeds = rows.reshape(count, -1), 0, []
    for item in layout:
        dtype = np.int64 if item.dtype == torch.int64 else np.float32
        feeds.append(np.ascontiguousarray(flat[:, start : start + item.size].reshape(count, *item.shape).astype(dtype)))
        start += item.size
    return feeds


def _export(spec: JobSpec, network: Network, prepared: _Prepared, path: Path, parity: ParityCheck, labels: list[str] | None,
            anomaly: dict[str, Any] | None = None) -> float:  # fmt: skip
    """Export, annotate and check the model; return the parity figure or raise TrainingFailed."""
    input_names, output_names = spec.model.export_names
    examples = [example_input(i.shape, "int64" if i.dtype == torch.int64 else "float32") for i in network.layout]
    export_onnx(network, examples=examples, path=path, input_names=input_names, output_names=output_names,
                dynamic_time=has_dynamic_time_axis(spec.model))  # fmt: skip
    metadata = {"labels": labels, "preprocessing": prepared.preprocessing, "normalization": prepared.normalization,
                "task": spec.task, "anomaly": anomaly}  # fmt: skip
    annotate_onnx(path, {key: value for key, value in metadata.items() if value})
    rows = min(parity.rows, len(prepared.y_test))
    test = prepared.test
    held_out = test.read(np.arange(rows)) if isinstance(test, RowView) else test[:rows]
    _, dtype = _row_layout(network)
    feeds = dict(zip(input_names, _feeds(network, held_out.astype(dtype)), strict=True))
    agreement = onnx_parity(network, path=path, feeds=feeds, atol=parity.atol, rtol=parity.rtol)
    if not agreement.agrees:
        raise TrainingFailed(
            f"ONNX parity check failed on output '{agreement.output}': max abs diff {agreement.max_abs_diff:.3g} > {parity.atol:g} "
            f"(+ rtol {parity.rtol:g})"
        )
    return agreement.max_abs_diff
