"""A job stopped after any epoch and resumed from its checkpoint ends exactly where an uninterrupted run does."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from services.data.builtins import load_builtin
from services.spec import JobSpec
from services.training import checkpoint
from services.training.loop import EpochResult
from services.training.pipeline import Checkpointing, ParityCheck, TrainingOutcome, train_and_export
from tests.factories import job_body

CNN = {
    "input_shape": [8, 8, 1],
    "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "BatchNormalization"},
        {"type": "MaxPooling2D"},
        {"type": "Flatten"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
}
SPECS = {
    # Dropout (the global generator), Adam's moments and a per-batch schedule.
    "mlp-one-cycle": job_body(training={"epochs": 5, "lr_schedule": {"name": "one_cycle"}}),
    # Batch norm's running statistics, augmentation's own generator, momentum, a plateau schedule and early stopping.
    "cnn-augmented": job_body(
        model=CNN,
        data={"dataset": "digits", "validation_split": 0.2, "augmentation": {"rotation": 10, "shift": 0.1}},
        training={
            "epochs": 5,
            "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
            "lr_schedule": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5},
            "early_stopping": {"patience": 10, "restore_best_weights": True},
        },
    ),  # fmt: skip
    # A denoising autoencoder: the noise's own generator.
    "denoising": job_body(data={"noise": {"masking": 0.3}, "validation_split": 0.2}, training={"epochs": 5, "loss": "mse"})
    | {
        "kind": "autoencoder",
        "model": {"input_shape": [64], "layers": [{"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 64}]},
    },  # fmt: skip
}


class Crash(BaseException):
    """The worker dying: not an Exception, so nothing on the way handles it."""


def _train(spec: JobSpec, onnx: Path, ckpt: Path, *, crash_after: int | None = None,
           resume: dict[str, Any] | None = None) -> tuple[TrainingOutcome, list[EpochResult]]:  # fmt: skip
    reported: list[EpochResult] = []

    def on_epoch_end(result: EpochResult) -> None:
        reported.append(result)
        if result.epoch == crash_after:
            raise Crash

    outcome = train_and_export(spec, load_builtin("digits"), device=torch.device("cpu"), onnx_path=onnx,
                               parity=ParityCheck(rows=32, atol=1e-4, rtol=0.0), on_epoch_end=on_epoch_end,
                               checkpointing=Checkpointing(ckpt, resume))  # fmt: skip
    return outcome, reported


@pytest.mark.parametrize("name", SPECS)
def test_a_resumed_job_ends_where_an_uninterrupted_one_does(name: str, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(SPECS[name])
    straight, _ = _train(spec, tmp_path / "straight.onnx", tmp_path / "straight.pt")

    with pytest.raises(Crash):
        _train(spec, tmp_path / "crashed.onnx", tmp_path / "job.pt", crash_after=2)
    saved = checkpoint.load(tmp_path / "job.pt")
    assert saved["epoch"] == 2 and [h["epoch"] for h in saved["history"]] == [1, 2]
    resumed, reported = _train(spec, tmp_path / "resumed.onnx", tmp_path / "job.pt", resume=saved)

    assert [r.epoch for r in reported] == [3, 4, 5]  # only the epochs left are trained and reported
    assert [r.metrics for r in resumed.history] == [r.metrics for r in straight.history]
    assert resumed.metrics["test_loss"] == straight.metrics["test_loss"]
    assert (tmp_path / "resumed.onnx").read_bytes() == (tmp_path / "straight.onnx").read_bytes()


def test_a_job_resumed_after_early_stopping_said_stop_trains_no_further(tmp_path: Path) -> None:
    body = job_body(training={"epochs": 8, "early_stopping": {"monitor": "loss", "patience": 0, "min_delta": 100.0}})
    spec = JobSpec.model_validate(body)  # min_delta 100: no epoch after the first counts as better, so it stops after epoch 2
    straight, _ = _train(spec, tmp_path / "a.onnx", tmp_path / "a.pt")
    assert len(straight.history) == 2
    resumed, reported = _train(spec, tmp_path / "b.onnx", tmp_path / "a.pt", resume=checkpoint.load(tmp_path / "a.pt"))
    assert reported == [] and len(resumed.history) == 2
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


class Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this ran while loading",))


def test_checkpoints_load_tensors_only_never_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load(path)


def test_a_checkpoint_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "job.pt"
    checkpoint.save({"epoch": 1, "w": torch.ones(3)}, path)
    checkpoint.save({"epoch": 2, "w": torch.zeros(3)}, path)
    assert checkpoint.load(path)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.pt"]  # no temporary file left behind


def _tensors(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return 1
    if isinstance(state, dict):
        return sum(_tensors(v) for v in state.values())
    return sum(_tensors(v) for v in state) if isinstance(state, list | tuple) else 0


def test_an_epoch_without_an_image_adds_no_tensor_and_an_older_checkpoints_empty_image_still_reads(tmp_path: Path) -> None:
    """torch.save pays for every tensor and the history grows with each epoch: the history's epochs hold none of their
    own (a GAN's last image aside); a format-3 checkpoint written with an empty tensor per epoch reads the same."""
    spec = JobSpec.model_validate(job_body(training={"epochs": 6}))
    _, reported = _train(spec, tmp_path / "a.onnx", tmp_path / "a.pt")
    state = checkpoint.load(tmp_path / "a.pt")
    assert len(state["history"]) == 6 and _tensors(state["history"]) == 0
    assert _tensors(state) == _tensors(state["kind"]) + 2  # the weights and optimizer, torch's and the shuffle's generators
    older = state | {"history": [h | {"image": torch.empty(0, dtype=torch.uint8)} for h in state["history"]]}
    checkpoint.save(older, tmp_path / "older.pt")
    assert checkpoint.history(checkpoint.load(tmp_path / "older.pt")) == checkpoint.history(state) == reported
