"""Kiln's training loop against a hand-written PyTorch loop: same model, same data, same process.

The hand-written loop is what a careful PyTorch user writes: the data as one tensor, a fresh
permutation per epoch, batches sliced from it, forward, loss, backward, step, nothing else, on the
layers as a plain nn.Sequential. Kiln's loop runs them as a job does: the named graph of layers.
Kiln's loop does that plus per-epoch metrics and the divergence check. Runs alternate and the
median of each is compared; the target is a ratio of at most 1.05.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import load_builtin  # noqa: E402
from services.spec import JobSpec, ScheduleSpec  # noqa: E402
from services.training.builder import build_network  # noqa: E402
from services.training.kinds.supervised import SupervisedTrainer  # noqa: E402
from services.training.loop import FitOptions, Split, fit  # noqa: E402
from services.training.objectives import Objective  # noqa: E402
from services.training.optim import LrSchedule  # noqa: E402

EPOCHS, REPEATS = 10, 5


def hand_written(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-7)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def kiln(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-7)
    schedule = LrSchedule(ScheduleSpec(), optimizer, epochs=EPOCHS, batches_per_epoch=1)
    trainer = SupervisedTrainer(model, Objective("sparse_categorical_crossentropy", True, 10), optimizer, metrics=["accuracy"],
                                schedule=schedule)  # fmt: skip
    options = FitOptions(epochs=EPOCHS, batch_size=batch_size, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    fit(trainer, train=Split(x, y), val=None, options=options)
    return time.perf_counter() - started


def compare(example: str) -> float:
    spec = JobSpec.model_validate(json.loads((ROOT / "examples" / f"{example}.json").read_text()))
    data = load_builtin(spec.data.dataset)
    x = torch.from_numpy(data.x_train).reshape(len(data.x_train), *spec.network.input_shapes[0])
    y = torch.from_numpy(data.y_train)
    torch.manual_seed(0)
    network = build_network(spec.network, fuse_output_activation=True)
    # The hand-written loop trains the layers as a plain nn.Sequential; Kiln's trains what a job runs: the named graph.
    models = {"hand-written": torch.nn.Sequential(*network.body), "kiln": network.trainable()}
    times: dict[str, list[float]] = {"hand-written": [], "kiln": []}
    for _ in range(REPEATS + 1):  # the first round warms both up and is dropped
        for name, loop in (("hand-written", hand_written), ("kiln", kiln)):
            times[name].append(loop(copy.deepcopy(models[name]), x, y, spec.training.batch_size))
    base, ours = (statistics.median(times[k][1:]) for k in ("hand-written", "kiln"))
    print(f"{example}: {EPOCHS} epochs on {len(x)} rows, hand-written {base * 1000 / EPOCHS:.1f} ms/epoch, "
          f"kiln {ours * 1000 / EPOCHS:.1f} ms/epoch, kiln / hand-written = {ours / base:.3f} (target <= 1.05)")  # fmt: skip
    return ours / base


if __name__ == "__main__":
    torch.set_num_threads(2)
    for name in ("cnn_digits", "digits_mlp", "mlp_digits28"):
        compare(name)
