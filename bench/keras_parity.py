"""Kiln against Keras 3 itself: the same model, rows and hyperparameters, trained by `model.fit` and by Kiln.

Both run in this process on the CPU with the same torch threads, on `digits28` as Kiln loads it (the
same training and test rows, nothing held out for validation), with Adam (epsilon 1e-7), a fresh
shuffle each epoch and Keras' default initialisers (glorot_uniform kernels, zero biases), which Kiln
uses too. Keras runs on its torch backend, so the kernels underneath are the same; what differs is
the loop around them. Each model is trained with a few seeds, Keras and Kiln alternating, and the
mean test accuracy of each is compared: the target is Kiln within 1 point of Keras. The time per
epoch is the median over every seed's epochs after the first (warm-up) one, as a ratio Kiln / Keras.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import LoadedDataset, load_builtin  # noqa: E402
from services.spec import JobSpec  # noqa: E402
from services.training.pipeline import ParityCheck, train_and_export  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)  # one seed's accuracy moves by a point or more; the mean of five far less
THREADS = 2
MAX_GAP_POINTS = 1.0  # Kiln's mean test accuracy may trail Keras' by at most this much


@dataclass(frozen=True)
class Case:
    """One model, in Kiln's spec language (Keras' layer names and arguments), and how it is trained."""

    name: str
    input_shape: tuple[int, ...]
    layers: list[dict[str, Any]]
    learning_rate: float
    batch_size: int
    epochs: int


CASES = [
    Case("mlp", (784,), [
        {"type": "Dense", "units": 64, "activation": "relu"},
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ], learning_rate=1e-3, batch_size=32, epochs=15),
    Case("cnn", (28, 28, 1), [
        {"type": "Conv2D", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"type": "MaxPooling2D"},
        {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
        {"type": "MaxPooling2D"},
        {"type": "Flatten"},
        {"type": "Dense", "units": 64, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ], learning_rate=1e-3, batch_size=32, epochs=8),
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    test_accuracy: float
    epoch_seconds: list[float]


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch of `fit`, measured as Kiln measures its own (training steps and metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def train_keras(case: Case, data: LoadedDataset, seed: int) -> Run:
    """`compile` and `fit` as a Keras user writes them, on Kiln's rows."""
    keras.utils.set_random_seed(seed)
    layers = [getattr(keras.layers, layer["type"])(**{k: v for k, v in layer.items() if k != "type"}) for layer in case.layers]
    model = keras.Sequential([keras.Input(shape=case.input_shape), *layers])
    optimizer = keras.optimizers.Adam(learning_rate=case.learning_rate, epsilon=1e-7)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x_train, x_test = (np.asarray(x).reshape(len(x), *case.input_shape) for x in (data.x_train, data.x_test))
    timer = EpochTimer()
    model.fit(x_train, data.y_train, batch_size=case.batch_size, epochs=case.epochs, shuffle=True, verbose=0, callbacks=[timer])
    _, accuracy = model.evaluate(x_test, data.y_test, batch_size=1024, verbose=0)
    return Run(float(accuracy), timer.seconds)


def train_kiln(case: Case, data: LoadedDataset, seed: int) -> Run:
    """The same model and hyperparameters as a Kiln job, trained in process on the CPU."""
    spec = JobSpec.model_validate({
        "model_name": f"keras-parity-{case.name}",
        "model": {"input_shape": list(case.input_shape), "layers": case.layers},
        "data": {"dataset": "digits28", "validation_split": 0.0},
        "training": {
            "optimizer": {"name": "adam", "learning_rate": case.learning_rate, "epsilon": 1e-7},
            "loss": "sparse_categorical_crossentropy", "epochs": case.epochs, "batch_size": case.batch_size, "seed": seed,
        },
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        outcome = train_and_export(spec, data, device=torch.device("cpu"), onnx_path=Path(folder) / "model.onnx",
                                   parity=ParityCheck(64, 1e-4, 1e-4), on_epoch_end=lambda result: None)  # fmt: skip
    return Run(outcome.metrics["test_accuracy"], [result.duration_s for result in outcome.history])


def compare(case: Case, data: LoadedDataset) -> dict[str, Any]:
    """Train `case` with every seed, alternating Keras and Kiln, and summarise each side."""
    runs: dict[str, list[Run]] = {"keras": [], "kiln": []}
    for index, seed in enumerate(SEEDS):
        order = [("keras", train_keras), ("kiln", train_kiln)]
        for side, train in order if index % 2 == 0 else order[::-1]:  # neither always runs on a warmer machine
            runs[side].append(train(case, data, seed))
    summary: dict[str, Any] = {"model": case.name}
    for side, done in runs.items():
        summary[f"{side}_accuracy"] = statistics.fmean(run.test_accuracy for run in done)
        summary[f"{side}_accuracies"] = [round(run.test_accuracy, 4) for run in done]
        summary[f"{side}_ms_per_epoch"] = 1000 * statistics.median(s for run in done for s in run.epoch_seconds[1:])
    summary["gap_points"] = 100 * (summary["kiln_accuracy"] - summary["keras_accuracy"])
    summary["time_ratio"] = summary["kiln_ms_per_epoch"] / summary["keras_ms_per_epoch"]
    return summary


def print_table(summaries: list[dict[str, Any]], rows: int) -> None:
    print(f"digits28: {rows} training rows, seeds {list(SEEDS)}, {THREADS} torch threads, CPU")
    print(f"{'model':<6}{'keras acc':>11}{'kiln acc':>10}{'kiln-keras':>12}{'keras ms/ep':>13}{'kiln ms/ep':>12}{'kiln/keras':>12}")
    for s in summaries:
        print(f"{s['model']:<6}{s['keras_accuracy']:>11.4f}{s['kiln_accuracy']:>10.4f}{s['gap_points']:>+10.2f}pt"
              f"{s['keras_ms_per_epoch']:>13.1f}{s['kiln_ms_per_epoch']:>12.1f}{s['time_ratio']:>12.3f}")  # fmt: skip
    print(f"target: kiln within {MAX_GAP_POINTS:g} point of keras in mean test accuracy")


if __name__ == "__main__":
    torch.set_num_threads(THREADS)
    data = load_builtin("digits28")
    summaries = [compare(case, data) for case in CASES]
    print_table(summaries, len(data.y_train))
    rounded = [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in summaries]
    print(json.dumps({"bench": "keras_parity", "results": rounded}))
    sys.exit(1 if any(s["gap_points"] < -MAX_GAP_POINTS for s in summaries) else 0)
