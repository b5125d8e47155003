"""What every upload parser shares: its options, its result, and the error that names the culprit."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

UploadFormat = Literal["csv", "text_csv", "npz", "image_zip"]


class DatasetError(ValueError):
    """An upload Kiln cannot use; `where` names the row, column or file, the message says what was expected."""

    def __init__(self, message: str, *, where: str = "file") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass(frozen=True)
class UploadOptions:
    """How to read an upload. Identical bytes read with identical options are the same dataset."""

    format: UploadFormat
    target: str | None = None  # csv: the target column; text_csv: the label column (default "label")
    text_column: str = "text"  # text_csv
    image_size: tuple[int, int] = (64, 64)  # image_zip: every image is resized to (height, width)
    task: Literal["auto", "classification", "regression"] = "auto"

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ZipLimits:
    max_files: int
    max_uncompressed_bytes: int


@dataclass
class Ingested:
    """What a parser wrote into the dataset folder: x.npy (or texts.json), y.npy and their description."""

    n_samples: int
    feature_shape: tuple[int, ...]
    dtype: str  # float32, int64 ... or "text"
    task: Literal["classification", "regression"]
    class_names: list[str] = field(default_factory=list)
    n_targets: int = 1

    def target(self) -> dict[str, Any]:
        if self.task == "classification":
            return {"kind": "classification", "class_names": self.class_names}
        return {"kind": "regression", "n_targets": self.n_targets}


def encode_targets(values: list[str], task: str, where: str) -> tuple[np.ndarray, str, list[str]]:
    """Targets from text cells: numbers for regression, class ids (names sorted) for classification."""
    if not values:
        raise DatasetError("the file has a header but no data rows", where=where)
    numeric = _all_numbers(values)
    if task == "regression" or (task == "auto" and numeric is not None and not _looks_like_ids(numeric)):
        if numeric is None:
            bad = next(v for v in values if _number(v) is None)
            raise DatasetError(f"regression needs numeric targets; got {bad!r}", where=where)
        return numeric.astype(np.float32).reshape(-1, 1), "regression", []
    names = sorted(set(values), key=lambda v: (_number(v) is None, _number(v) or 0.0, v))
    if len(names) < 2:
        raise DatasetError(f"classification needs at least 2 classes; every row is {names[0]!r}", where=where)
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], np.int64), "classification", names


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _all_numbers(values: list[str]) -> np.ndarray | None:
    numbers = [_number(v) for v in values]
    return None if any(n is None for n in numbers) else np.array(numbers, np.float64)


def _looks_like_ids(numbers: np.ndarray) -> bool:
    """Small non-negative integers (0, 1, 2 ...) read as class ids rather than a quantity."""
    return bool(np.all(numbers == np.round(numbers)) and numbers.min() >= 0 and len(np.unique(numbers)) <= 20)


def save_npy(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
