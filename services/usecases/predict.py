"""Predictions from a registered version through onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    array = as_input_array(values, dtype=spec.dtype)
    check_input(spec, array)
    (outputs, *_) = model.run({spec.name: array})
    return Prediction(name, version, outputs)
