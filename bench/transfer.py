"""Few-shot transfer: a new head on a frozen base against the same network trained from scratch, on 10, 20 and 50
samples per class of classes the base never saw, judged on a large held-out set.

The base is `examples/cnn_shapes.json`, trained through `train_and_export` on the built-in `shapes` (circles,
squares, triangles). The new task draws three other classes (rings, crosses, bars) at random places, sizes and
colours. Transfer keeps the base up to `flatten` (its convolution, frozen, as VGG16's recipe keeps its convolutional
base) and trains Dense(32) -> Dense(3) on it, copying the weights as a worker does (`base_weights`); from scratch trains
the same architecture with fresh weights. Both run with the same epochs, optimizer and seed, in this process on the
CPU; the figures are held-out accuracy per size, and the wall time of the two, as a ratio.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import LoadedDataset, load_builtin  # noqa: E402
from services.data.catalogue import DatasetInfo  # noqa: E402
from services.spec import JobSpec, ModelSpec  # noqa: E402
from services.training.pipeline import BaseWeights, ParityCheck, load_weights, train_and_export  # noqa: E402

SIZE, CLASSES, HELD_OUT, SHOTS, THREADS = 64, ("ring", "cross", "bar"), 300, (10, 20, 50), 2
PARITY = ParityCheck(rows=32, atol=1e-4, rtol=1e-3)
HEAD = [{"name": "new_features", "type": "Dense", "units": 32, "activation": "relu"},
        {"name": "new_classes", "type": "Dense", "units": 3, "activation": "softmax"}]  # fmt: skip
TRAINING = {"loss": "sparse_categorical_crossentropy", "epochs": 30, "batch_size": 8, "optimizer": {"name": "adam", "learning_rate": 0.003}}


def draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A ring, a cross or a bar at a random place, size, angle and colour, on a noisy background."""
    image = np.clip(rng.uniform(0, 0.2) + rng.normal(0, 0.08, (SIZE, SIZE, 3)), 0, 1).astype(np.float32)
    cy, cx, r, angle, width = rng.uniform(22, 42), rng.uniform(22, 42), rng.uniform(10, 20), rng.uniform(0, np.pi), rng.uniform(2, 4)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    if kind == "ring":
        mask = np.abs(np.hypot(u, v) - r) < width
    elif kind == "cross":
        mask = ((np.abs(v) < width) & (np.abs(u) < r)) | ((np.abs(u) < width) & (np.abs(v) < r))
    else:
        mask = (np.abs(v) < width) & (np.abs(u) < r + 6)
    image[mask] = rng.uniform(0.4, 1.0, 3)
    return image


def few_shot(per_class: int, rng: np.random.Generator) -> LoadedDataset:
    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(len(CLASSES)), n)
        return np.stack([draw(CLASSES[i], rng) for i in labels]), labels.astype(np.int64)

    x_train, y_train = rows(per_class)
    x_test, y_test = rows(HELD_OUT)
    info = DatasetInfo("few-shot", "drawn rings, crosses and bars", len(x_train) + len(x_test), (SIZE, SIZE, 3), "classification",
                       CLASSES, uploaded=True)  # fmt: skip
    digest = hashlib.sha256(x_train.tobytes() + x_test.tobytes()).hexdigest()
    return LoadedDataset(info, x_train, y_train, x_test, y_test, digest)


def train(body: dict[str, Any], data: LoadedDataset, path: Path, base_weights: BaseWeights | None = None) -> tuple[float, float]:
    started = time.perf_counter()
    outcome = train_and_export(JobSpec.model_validate(body), data, device=torch.device("cpu"), onnx_path=path, parity=PARITY,
                               on_epoch_end=lambda r: None, base_weights=base_weights)  # fmt: skip
    return outcome.metrics["test_accuracy"], time.perf_counter() - started


def main() -> None:
    torch.set_num_threads(THREADS)
    base_body = json.loads((ROOT / "examples" / "cnn_shapes.json").read_text())
    base_body["data"] |= {"samples": 1500}
    base_body["training"]["epochs"] = 10
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        spec = JobSpec.model_validate(base_body)
        outcome = train_and_export(spec, load_builtin("shapes", samples=1500), device=torch.device("cpu"), onnx_path=work / "base.onnx",
                                   parity=PARITY, on_epoch_end=lambda r: None, weights_path=work / "base.safetensors")  # fmt: skip
        print(f"base: cnn_shapes on 1500 shapes, test accuracy {outcome.metrics['test_accuracy']:.3f}")
        weights = BaseWeights(load_weights(work / "base.safetensors"), ["input"])
        kept = [layer.model_dump(mode="json") | {"trainable": False} for layer in spec.network.layers[:3]]  # conv2d .. flatten
        names = [layer["name"] for layer in kept]
        transfer = {"model_name": "few-shot-transfer", "training": TRAINING, "model": {
            "input_shape": [SIZE, SIZE, 3], "layers": kept + HEAD,
            "base": {"model": "cnn-shapes", "version": 1, "until": "flatten", "layers": names}}}  # fmt: skip
        scratch = copy.deepcopy(transfer) | {"model_name": "few-shot-scratch"}
        scratch["model"] = {"input_shape": [SIZE, SIZE, 3], "layers": [layer | {"trainable": True} for layer in kept] + HEAD}
        ModelSpec.model_validate(scratch["model"])
        train(scratch | {"data": {"dataset": "few-shot"}}, few_shot(3, np.random.default_rng(99)), work / "w.onnx")  # warm-up, untimed
        print(f"{'per class':>9s} {'transfer':>9s} {'scratch':>8s} {'gain':>6s} {'time transfer/scratch':>22s}")
        for shots in SHOTS:
            data = few_shot(shots, np.random.default_rng(shots))
            body = {"data": {"dataset": "few-shot"}}
            ours, ours_s = train(transfer | body, data, work / "t.onnx", base_weights=weights)
            theirs, theirs_s = train(scratch | body, data, work / "s.onnx")
            print(f"{shots:>9d} {ours:>9.3f} {theirs:>8.3f} {ours - theirs:>+6.3f} {ours_s / theirs_s:>22.2f}", flush=True)
        print(f"(held-out: {HELD_OUT} per class; {TRAINING['epochs']} epochs each; chance {1 / len(CLASSES):.3f})")


if __name__ == "__main__":
    main()
