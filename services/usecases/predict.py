"""Turning a predict call's JSON into model inputs, and outputs into label names."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.data.text import encode
from services.errors import InvalidInput
from services.registry.entities import ModelVersion
from services.serving.sessions import LoadedModel


def non_number(data: list[Any], *, integers: bool = False) -> str | None:
    """What a nested JSON list holds that is not a number (numpy reads True as 1.0 and "4" as 4.0 without a word),
    or None. With `integers`, a fraction counts too (numpy would truncate it)."""
    stack = [data]
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is int or (kind is float and not integers):
                continue
            if kind is list:
                stack.append(value)
                continue
            return {bool: "booleans", str: "strings", float: "fractions", dict: "objects"}.get(kind, "nulls")
    return None


def as_input_array(values: Any, *, dtype: str = "float32", field: str = "inputs") -> np.ndarray:
    """A JSON array of rows as a numpy array, refusing ragged, non-numeric, boolean and non-finite values."""
    if not isinstance(values, list):
        raise InvalidInput(f"{field}: expected a list of rows of numbers, one row per sample", field=field)
    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{field}: expected a rectangular array of numbers, one row per sample", field=field) from None
    if array.ndim == 0 or array.shape[0] == 0:
        raise InvalidInput(f"{field}: expected at least one row", field=field)
    found = non_number(values, integers=array.dtype.kind in "iu")
    if found is not None:
        hint = " (send 1 and 0)" if found == "booleans" else ""
        raise InvalidInput(f"{field}: expected {array.dtype.name} numbers, got {found}{hint}", field=field)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"{field}: expected finite numbers (no NaN or Infinity)", field=field)
    return array


def input_feeds(values: Any, version: ModelVersion, model: LoadedModel) -> dict[str, np.ndarray]:
    """Kiln's JSON `inputs` as the model's feeds: rows (or raw strings for a text model) for a one-input model,
    or an object naming each input, `{"a": rows, "b": rows}`, for any model."""
    specs = model.signature.inputs
    names = ", ".join(repr(s.name) for s in specs)
    if isinstance(values, dict):
        if set(values) != {s.name for s in specs}:
            given = ", ".join(repr(str(k)) for k in values) or "none"
            raise InvalidInput(f"inputs: this model's inputs are {names}; got {given}", field="inputs")
        return {s.name: as_input_array(values[s.name], dtype=s.dtype, field=f"inputs.{s.name}") for s in specs}
    if len(specs) != 1:
        raise InvalidInput(f'inputs: this model has {len(specs)} inputs ({names}): send {{"inputs": {{"name": rows, ...}}}}',
                           field="inputs")  # fmt: skip
    (spec,) = specs
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
