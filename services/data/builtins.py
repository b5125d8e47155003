"""Loads scikit-learn's bundled datasets (nothing is downloaded) with a fixed held-out test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split

from services.data.catalogue import TEST_FRACTION, TEST_SPLIT_SEED, DatasetInfo, get_dataset_info

_LOADERS = {
    "digits": skdatasets.load_digits,
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "breast_cancer": skdatasets.load_breast_cancer,
    "diabetes": skdatasets.load_diabetes,
}


@dataclass(frozen=True)
class LoadedDataset:
    """Features as float32 `(N, n_features)`; targets int64 class ids or float32 values."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str  # of the arrays, so a version records exactly what it learnt from


def _hash_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=8)
def load_builtin(name: str) -> LoadedDataset:
    """The named built-in dataset split into its fixed train and test parts."""
    info = get_dataset_info(name)
    x, y = _LOADERS[name](return_X_y=True)
    x = x.astype(np.float32)
    y = y.astype(np.int64) if info.task == "classification" else y.astype(np.float32).reshape(-1, info.n_targets)
    stratify = y if info.task == "classification" else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=TEST_SPLIT_SEED, stratify=stratify
    )
    return LoadedDataset(info, x_train, y_train, x_test, y_test, _hash_arrays(x, y))


def validation_split(
    x: np.ndarray, y: np.ndarray, *, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `fraction` of the training rows for validation; the same seed gives the same split."""
    if fraction <= 0:
        return x, y, x[:0], y[:0]
    try:
        x_fit, x_val, y_fit, y_val = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=y if stratify else None
        )
    except ValueError:  # too few rows per class to stratify: an unstratified split still works
        x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=fraction, random_state=seed)
    return x_fit, y_fit, x_val, y_val
