"""Turning a predict call's JSON into model inputs, and outputs into label names."""

from __future__ import annotations

import math
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


def only_numbers(raw: bytes) -> bool:
    """Whether a JSON body already parsed as `{"inputs": ...}` holds nothing but numbers and lists under that key.

    Its one string is then the key (an escaped quote inside a string counts as another), so no string or
    object is in the inputs, and a `true`, `false` or `null` there would show in the bytes: three C scans
    of the body instead of a Python walk of every value.
    """
    return raw.count(b'"') == 2 and b"true" not in raw and b"false" not in raw and b"null" not in raw


def as_input_array(values: Any, *, dtype: str = "float32", field: str = "inputs", numbers_only: bool = False) -> np.ndarray:
    """A JSON array of rows as a numpy array, refusing ragged, non-numeric, boolean and non-finite values.

    `numbers_only`: the body is known to hold only numbers (see `only_numbers`); fractions are still looked for
    where the input takes integers."""
    if not isinstance(values, list):
        raise InvalidInput(f"{field}: expected a list of rows of numbers, one row per sample", field=field)
    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{field}: expected a rectangular array of numbers, one row per sample", field=field) from None
    if array.ndim == 0 or array.shape[0] == 0:
        raise InvalidInput(f"{field}: expected at least one row", field=field)
    integers = array.dtype.kind in "iu"
    found = None if numbers_only and not integers else non_number(values, integers=integers)
    if found is not None:
        hint = " (send 1 and 0)" if found == "booleans" else ""
        raise InvalidInput(f"{field}: expected {array.dtype.name} numbers, got {found}{hint}", field=field)
    if array.dtype.kind == "f" and not _finite(array):
        raise InvalidInput(f"{field}: expected finite numbers (no NaN or Infinity)", field=field)
    return array


def _finite(array: np.ndarray) -> bool:
    """No NaN or infinity: for 16- and 32-bit floats, one float64 sum, which no count of finite values can overflow
    (any NaN or infinity makes it one); for float64, which could, an element-wise check."""
    if array.dtype.itemsize <= 4:
        return math.isfinite(array.sum(dtype=np.float64))
    return bool(np.isfinite(array).all())


def input_feeds(values: Any, version: ModelVersion, model: LoadedModel, *, numbers_only: bool = False) -> dict[str, np.ndarray]:
    """Kiln's JSON `inputs` as the model's feeds: rows (or raw strings for a text model) for a one-input model,
    or an object naming each input, `{"a": rows, "b": rows}`, for any model. `numbers_only`: see `only_numbers`."""
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
    array = (
        _text_ids(values, preprocessing)
        if preprocessing.get("kind") == "text"
        else as_input_array(values, dtype=spec.dtype, numbers_only=numbers_only)
    )
    return {spec.name: array}


def output_index(model: LoadedModel, wanted: Any) -> int:
    """The position of the output a call asks for by name (`"output": "h1"`); the first when it names none."""
    if wanted is None:
        return 0
    names = [t.name for t in model.signature.outputs]
    if not isinstance(wanted, str) or wanted not in names:
        listed = ", ".join(repr(n) for n in names)
        raise InvalidInput(f"output: expected one of this model's outputs, {listed}; got {wanted!r}", field="output")
    return names.index(wanted)


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
