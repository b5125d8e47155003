"""What happens to raw inputs before the network: tokenising text, normalisation statistics, ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from services.data.arrays import RowView
from services.data.text import build_vocabulary, encode
from services.spec import DataSpec, TextSpec
from services.training.builder import Normalize

CHUNK_ROWS = 4096


def tokenize_splits(data: DataSpec, train: np.ndarray, *others: np.ndarray,
                    vocabulary: list[str] | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
    """Encode every split with a vocabulary built from `train` only (or the one given: a text base's); also return what
    predict needs to do the same."""
    text = data.text or TextSpec()
    vocabulary = vocabulary if vocabulary is not None else build_vocabulary(train.tolist(), text.max_tokens)
    encoded = [encode(split.tolist(), vocabulary, text.sequence_length) for split in (train, *others)]
    return encoded, {"kind": "text", "vocabulary": vocabulary, "sequence_length": text.sequence_length}


def _chunks(x: np.ndarray | RowView) -> Any:
    for start in range(0, len(x), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        yield (x.read(np.arange(len(x))[rows]) if isinstance(x, RowView) else x[rows]).astype(np.float64)


def normalizer(mode: str, x: np.ndarray | RowView, *, channels: int) -> tuple[Normalize, dict[str, Any]]:
    """Per-feature (or per-channel: the last axis of the model's input) statistics of the training rows, read in chunks."""
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    low, high = np.full(channels, np.inf), np.full(channels, -np.inf)
    for chunk in _chunks(x):
        flat = chunk.reshape(-1, channels)
        total, squares, count = total + flat.sum(0), squares + (flat**2).sum(0), count + len(flat)
        low, high = np.minimum(low, flat.min(0)), np.maximum(high, flat.max(0))
    if mode == "standard":
        shift = total / count
        scale = np.sqrt(np.maximum(squares / count - shift**2, 0.0))
    else:
        shift, scale = low, high - low
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature is shifted, not divided by zero
    module = Normalize(torch.tensor(shift, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32))
    return module, {"kind": mode, "shift": shift.tolist(), "scale": scale.tolist()}


def annotate_onnx(path: Path, metadata: dict[str, Any]) -> None:
    """Store labels and preprocessing in the model's metadata, so the artifact stands on its own."""
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"kiln.{key}", json.dumps(value)
    onnx.save(model, str(path))
