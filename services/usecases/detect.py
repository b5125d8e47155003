"""An autoencoder's anomaly scores: each row's reconstruction error against a threshold (the version's, or the caller's)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.errors import Conflict, InvalidInput
from services.registry.entities import ModelVersion


def check_detects(version: ModelVersion) -> None:
    """A Conflict unless the version is an autoencoder, saying what it is."""
    if version.task == "autoencoder":
        return
    raise Conflict(f"version {version.version} of '{version.model_name}' is {what_it_is(version)}: detect needs an autoencoder "
                   '(train one with "kind": "autoencoder")', field="version")  # fmt: skip


def what_it_is(version: ModelVersion) -> str:
    """What a version serves as, for a 409 on a route it cannot answer: `a classifier`, `an uploaded ONNX model`, ..."""
    if version.task:
        return f"a {version.task}"
    return "an uploaded ONNX model" if version.job_id is None else "a model with no recorded task"


def threshold_for(version: ModelVersion, given: Any) -> float:
    """The request's threshold if it gives one (a finite number), else the one training stored."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | float) or not math.isfinite(given) or given < 0:
            raise InvalidInput(f"threshold: expected a finite number >= 0, got {given!r}", field="threshold")
        return float(given)
    stored = (version.anomaly or {}).get("threshold")
    if stored is None:
        raise Conflict(f"version {version.version} of '{version.model_name}' stores no anomaly threshold: train it with "
                       '"training": {"anomaly": {"percentile": 99}}, or send "threshold"', field="threshold")  # fmt: skip
    return float(stored)


def anomaly_scores(rows: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Each row's mean squared reconstruction error, the score training's threshold was set on."""
    difference = reconstruction.astype(np.float64).reshape(len(rows), -1) - rows.astype(np.float64).reshape(len(rows), -1)
    return np.square(difference).mean(axis=1)


LARGEST = float(np.finfo(np.float64).max)


def detection(version: ModelVersion, rows: np.ndarray, reconstruction: np.ndarray, threshold: float) -> dict[str, Any]:
    """Scores and verdicts. A row the model cannot reconstruct at all (values so large its float32 graph overflows)
    scores the largest float and is an anomaly: a non-finite error is never taken for a small one."""
    scores = anomaly_scores(rows, reconstruction)
    anomalies = ~(scores <= threshold)  # NaN compares false either way: it lands on the anomaly side
    scores = np.nan_to_num(scores, nan=LARGEST, posinf=LARGEST)
    return {"model": version.model_name, "version": version.version, "scores": scores.tolist(), "threshold": threshold,
            "anomalies": anomalies.tolist()}  # fmt: skip
