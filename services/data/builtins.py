"""Loads the built-in datasets with a fixed held-out test split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split

from services.data import generated
from services.data.arrays import RowView
from services.data.catalogue import TEST_FRACTION, TEST_SPLIT_SEED, DatasetInfo, resolve_dataset, upload_info
from services.registry.entities import DatasetRecord

_SKLEARN: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "digits": skdatasets.load_digits,
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "breast_cancer": skdatasets.load_breast_cancer,
    "diabetes": skdatasets.load_diabetes,
}


@dataclass(frozen=True)
class LoadedDataset:
    """Features `(N, *feature_shape)` (in memory, or a RowView on disk; strings for text); targets as class ids or values."""

    info: DatasetInfo
    x_train: np.ndarray | RowView
    y_train: np.ndarray
    x_test: np.ndarray | RowView
    y_test: np.ndarray
    sha256: str  # of the arrays, so a version records exactly what it learnt from


def _hash_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _arrays(info: DatasetInfo, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if info.name in _SKLEARN:
        return _SKLEARN[info.name](return_X_y=True)
    if info.name == "digits28":
        return generated.digits28()
    if info.name == "shapes":
        return generated.shapes(info.n_samples, seed)
    if info.name == "sine":
        return generated.sine(info.n_samples, seed, info.feature_shape[0])
    return generated.tokens(info.n_samples, seed, info.feature_shape[0], info.vocabulary_size or 100)


@lru_cache(maxsize=8)
def load_builtin(name: str, *, samples: int | None = None, sequence_length: int | None = None, seed: int = 0) -> LoadedDataset:
    """The named built-in dataset split into its fixed train and test parts."""
    info = resolve_dataset(name, samples=samples, sequence_length=sequence_length)
    x, y = _arrays(info, seed)
    x = x.astype(info.dtype).reshape(len(x), *info.feature_shape)
    y = y.astype(np.int64) if info.task == "classification" else y.astype(np.float32).reshape(-1, info.n_targets)
    stratify = y if info.task == "classification" else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, random_state=TEST_SPLIT_SEED, stratify=stratify)
    return LoadedDataset(info, x_train, y_train, x_test, y_test, _hash_arrays(x, y))


Rows = np.ndarray | RowView  # features in memory, or read from disk batch by batch


def split_indices(y: np.ndarray, *, fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (kept, held out): `fraction` held out, stratified by class when asked; the same seed, the same split."""
    rows = np.arange(len(y))
    try:
        kept, held = train_test_split(rows, test_size=fraction, random_state=seed, stratify=y if stratify else None)
    except ValueError:  # too few rows per class to stratify: an unstratified split still works
        kept, held = train_test_split(rows, test_size=fraction, random_state=seed)
    return kept, held


def take(x: Rows, rows: np.ndarray) -> Rows:
    return x.take(rows) if isinstance(x, RowView) else x[rows]


def validation_split(x: Rows, y: np.ndarray, *, fraction: float, seed: int, stratify: bool) -> tuple[Rows, np.ndarray, Rows, np.ndarray]:
    """Hold out `fraction` of the training rows for validation; the same seed gives the same split."""
    if fraction <= 0:
        return x, y, take(x, np.arange(0)), y[:0]
    kept, held = split_indices(y, fraction=fraction, seed=seed, stratify=stratify)
    return take(x, kept), y[kept], take(x, held), y[held]


def load_upload(record: DatasetRecord, folder: Path, *, test_split: float, seed: int, max_in_memory_bytes: int) -> LoadedDataset:
    """An uploaded dataset split into train and test; arrays over `max_in_memory_bytes` stay on disk as RowViews."""
    info = upload_info(str(record.id), name=record.name, n_samples=record.n_samples, feature_shape=record.feature_shape,
                       dtype=record.dtype, target=record.target)  # fmt: skip
    y = np.load(folder / "y.npy", allow_pickle=False)
    x: Rows
    if record.dtype == "text":
        x = np.array(json.loads((folder / "texts.json").read_text()), dtype=object)  # Python strings, never pickled
    elif (folder / "x.npy").stat().st_size <= max_in_memory_bytes:
        x = np.load(folder / "x.npy", allow_pickle=False)
    else:
        x = RowView(folder / "x.npy")
    train, test = split_indices(y, fraction=test_split, seed=seed, stratify=info.task == "classification")
    return LoadedDataset(info, take(x, train), y[train], take(x, test), y[test], record.sha256)
