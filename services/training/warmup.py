"""Pay torch's one-off start-up costs (kernel selection, autograd, the ONNX exporter, onnxruntime) before the first job."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from services.data.builtins import load_builtin
from services.spec import JobSpec

# A job of the commonest layers on the digits, one epoch: what a first job would otherwise pay for, paid at start.
WARM_UP_JOB = {
    "model_name": "warm-up",
    "model": {"input_shape": [8, 8, 1], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "MaxPooling2D"}, {"type": "Flatten"}, {"type": "Dropout", "rate": 0.1},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ]},
    "data": {"dataset": "digits", "validation_split": 0.2},
    "training": {"optimizer": {"name": "adam", "learning_rate": 0.003}, "loss": "sparse_categorical_crossentropy", "epochs": 1,
                 "batch_size": 64},
}  # fmt: skip


def warm_up(device: torch.device) -> None:
    """Kiln's own pipeline on a tiny job: train (with a checkpoint), export, check ONNX parity; well under a second, once
    per process. It also loads the digits, which the examples train on, into this process's dataset cache."""
    from services.training.epoch_writer import EpochWriter
    from services.training.pipeline import Checkpointing, ParityCheck, train_and_export

    spec = JobSpec.model_validate(WARM_UP_JOB)
    with tempfile.TemporaryDirectory() as tmp, EpochWriter() as writer:
        folder = Path(tmp)
        train_and_export(spec, load_builtin("digits"), device=device, onnx_path=folder / "warm.onnx", parity=ParityCheck(64, 1e-3, 1e-3),
                         on_epoch_end=lambda _: None, checkpointing=Checkpointing(folder / "warm.pt", writer=writer),
                         weights_path=folder / "warm.safetensors")  # fmt: skip
        writer.flush()
