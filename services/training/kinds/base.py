"""What every kind of job is to the pipeline: networks that a Trainer steps, a checkpointable state, and an export.

The pipeline (services/training/pipeline.py) drives every kind the same way: it builds the kind, restores
a checkpoint into it, runs the one training loop over its Trainer with the same hooks (checkpoint, then
report), and asks it for its test figures and its ONNX export. A kind never sees the loop's internals,
and the loop never sees a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from services.training.loop import Split, Trainer


@dataclass(frozen=True)
class ParityCheck:
    rows: int  # held-out rows compared
    atol: float
    rtol: float


@dataclass(frozen=True)
class BaseWeights:
    """A base version's state dict, and its model's input names (normalisation statistics are kept per input)."""

    state: dict[str, torch.Tensor]
    input_names: list[str]
    vocabulary: list[str] | None = None  # a text base's, when the model tokenises with it


@dataclass(frozen=True)
class Exported:
    """What an export wrote beside the ONNX file, for the version to keep."""

    parity_max_abs_diff: float
    labels: list[str] | None = None  # class names in output order
    preprocessing: dict[str, Any] | None = None  # what serving does to raw inputs first (text models)
    anomaly: dict[str, Any] | None = None  # an autoencoder's reconstruction-error threshold
    generation: dict[str, Any] | None = None  # a generator's latent size, classes, sample shape and range


class JobKind(Protocol):
    """One kind of job (`"kind"` in the body): supervised, autoencoder or gan."""

    @property
    def task(self) -> str:
        """What serving does with the version: classifier, regressor, autoencoder or generator."""
        ...

    @property
    def trainer(self) -> Trainer:
        """What the loop steps."""
        ...

    @property
    def train(self) -> Split: ...

    @property
    def val(self) -> Split | None: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to go on bit for bit: weights, optimizers, schedules, the kind's generators."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def test(self) -> dict[str, float]:
        """Figures after training: the test split's (`test_*`), the parameter count, and the kind's own."""
        ...

    def load_base(self, state: dict[str, torch.Tensor], input_names: list[str]) -> None:
        """Copy the base version's weights into the layers the spec took from it (and its normalisation, unless the
        job names its own)."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """The state dict of the network the version serves, by layer name (what a child job copies from)."""
        ...

    def export(self, path: Path, parity: ParityCheck) -> Exported:
        """Write the ONNX file that serving runs, annotate it, and check it against PyTorch (TrainingFailed if it disagrees)."""
        ...


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a CUDA device that supports it; full precision elsewhere."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
