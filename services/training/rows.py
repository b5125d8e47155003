"""A dataset's rows as a network reads them: split, tokenised, shaped and normalised, on the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from services.data.arrays import RowView
from services.data.builtins import LoadedDataset, validation_split
from services.errors import TrainingFailed
from services.spec import JobSpec
from services.training.builder import Network, Normalize
from services.training.loop import Split
from services.training.objectives import Objective
from services.training.preprocess import normalizer, tokenize_splits


@dataclass
class Prepared:
    """The splits as the network reads them, with what was learnt from the training rows."""

    fit: np.ndarray | RowView
    y_fit: np.ndarray
    val: np.ndarray | RowView
    y_val: np.ndarray
    test: np.ndarray | RowView
    y_test: np.ndarray
    preprocessing: dict[str, Any] | None = None
    normalization: dict[str, Any] | None = field(default=None)


def prepare(spec: JobSpec, data: LoadedDataset, stratify: bool, vocabulary: list[str] | None = None) -> Prepared:
    fit_x, y_fit, val_x, y_val = validation_split(
        data.x_train, data.y_train, fraction=spec.data.validation_split, seed=spec.data.seed, stratify=stratify
    )
    prepared = Prepared(fit_x, y_fit, val_x, y_val, data.x_test, data.y_test)
    if data.info.dtype == "text":
        assert isinstance(fit_x, np.ndarray) and isinstance(val_x, np.ndarray) and isinstance(data.x_test, np.ndarray)
        (prepared.fit, prepared.val, prepared.test), prepared.preprocessing = tokenize_splits(
            spec.data, fit_x, val_x, data.x_test, vocabulary=vocabulary
        )
    return prepared


def on_device(x: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """Rows reshaped to `shape` as one tensor on the device (pinned first, for a fast copy to a GPU)."""
    x = np.ascontiguousarray(x.reshape(len(x), *shape).astype(dtype, copy=False))  # counts checked at submission
    tensor = torch.from_numpy(x)
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)


def split(x: np.ndarray | RowView, y: np.ndarray, shape: tuple[int, ...], objective: Objective, device: torch.device,
          *, dtype: np.dtype, targets_are_inputs: bool) -> Split:  # fmt: skip
    """A split on the device; rows on disk stay there, to be read batch by batch."""
    x_dtype = torch.int64 if dtype == np.int64 else torch.float32
    if isinstance(x, RowView):
        if targets_are_inputs:
            raise TrainingFailed("autoencoders (targets: inputs) need a dataset that fits in memory")
        return Split(x, objective.prepare_targets(torch.from_numpy(y).to(device)), x_dtype, shape)
    tensor = on_device(x, shape, dtype, device)
    targets = tensor.float() if targets_are_inputs else torch.from_numpy(y).to(device)
    return Split(tensor, objective.prepare_targets(targets), x_dtype)


def row_layout(network: Network) -> tuple[tuple[int, ...], np.dtype]:
    """How training holds a row: shaped as the one input, or the inputs' values side by side (float32 unless all are ids)."""
    layout = network.layout
    if len(layout) == 1:
        return layout[0].shape, np.dtype("int64" if layout[0].dtype == torch.int64 else "float32")
    ids = all(i.dtype == torch.int64 for i in layout)
    return (sum(i.size for i in layout),), np.dtype("int64" if ids else "float32")


def normalize(network: Network, mode: str, rows: np.ndarray | RowView) -> dict[str, Any]:
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


def feeds(network: Network, rows: np.ndarray) -> list[np.ndarray]:
    """Held-out rows as one array per model input."""
    layout, count = network.layout, len(rows)
    if len(layout) == 1:
        return [rows.reshape(count, *layout[0].shape)]
    flat, start, arrays = rows.reshape(count, -1), 0, []
    for item in layout:
        dtype = np.int64 if item.dtype == torch.int64 else np.float32
        arrays.append(np.ascontiguousarray(flat[:, start : start + item.size].reshape(count, *item.shape).astype(dtype)))
        start += item.size
    return arrays
