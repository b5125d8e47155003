"""Predictions from a registered version through onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.data.text import encode
from services.errors import InvalidInput
from services.serving.sessions import OnnxSessionCache
from services.serving.signature import check_input
from services.usecases.jobs import UowFactory
from services.usecases.models import get_version


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    outputs: np.ndarray
    labels: list[str] | None = None  # the predicted class name of each row, for classifiers


def as_input_array(values: Any, *, dtype: str = "float32") -> np.ndarray:
    """A JSON array of rows as a numpy array, refusing ragged, non-numeric and non-finite values."""
    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError):
        raise InvalidInput("inputs must be a rectangular array of numbers, one row per sample", field="inputs") from None
    if array.ndim == 0 or array.shape[0] == 0:
        raise InvalidInput("inputs must hold at least one row", field="inputs")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput("inputs must be finite numbers (no NaN or Infinity)", field="inputs")
    return array


def predict(name: str, version: int, values: Any, *, uow_factory: UowFactory, sessions: OnnxSessionCache) -> Prediction:
    """Run `values` (rows) through version `version` of model `name`."""
    found = get_version(name, version, uow_factory=uow_factory)
    model = sessions.get(found.artifact_sha256)
    (spec,) = model.signature.inputs
    preprocessing = found.preprocessing or {}
    array = _text_ids(values, preprocessing) if preprocessing.get("kind") == "text" else as_input_array(values, dtype=spec.dtype)
    check_input(spec, array)
    (outputs, *_) = model.run({spec.name: array})
    return Prediction(name, version, outputs, predicted_labels(outputs, found.labels))


def _text_ids(values: Any, preprocessing: dict[str, Any]) -> np.ndarray:
    """Raw strings tokenised with the vocabulary the model was trained with."""
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidInput("this model reads text: send inputs as a list of strings, one per sample", field="inputs")
    return encode(values, preprocessing["vocabulary"], preprocessing["sequence_length"])


def predicted_labels(outputs: np.ndarray, labels: list[str] | None) -> list[str] | None:
    """Class names for each row: argmax of K probabilities, or p > 0.5 for a single sigmoid output."""
    if not labels or outputs.ndim != 2:
        return None
    if outputs.shape[1] == 1 and len(labels) == 2:
        return [labels[int(p > 0.5)] for p in outputs[:, 0]]
    if outputs.shape[1] == len(labels):
        return [labels[i] for i in outputs.argmax(axis=1)]
    return None
