"""Turning a predict call's JSON into model inputs, and outputs into label names."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.data.text import encode
from services.errors import InvalidInput
from services.registry.entities import ModelVersion
from services.serving.sessions import LoadedModel


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


def input_feeds(values: Any, version: ModelVersion, model: LoadedModel) -> dict[str, np.ndarray]:
    """Kiln's JSON `inputs` (rows, or raw strings for a text model) as the feeds of a single-input model."""
    (spec,) = model.signature.inputs
    preprocessing = version.preprocessing or {}
    array = _text_ids(values, preprocessing) if preprocessing.get("kind") == "text" else as_input_array(values, dtype=spec.dtype)
    return {spec.name: array}


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
