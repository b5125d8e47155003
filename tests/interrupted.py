"""Training in-process as a worker does, optionally dying after an epoch's checkpoint (as a killed worker would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from services.data.builtins import LoadedDataset
from services.spec import JobSpec
from services.training.loop import EpochResult
from services.training.pipeline import BaseWeights, Checkpointing, ParityCheck, TrainingOutcome, train_and_export


def train_until(spec: JobSpec, data: LoadedDataset, onnx_path: Path, *, parity: ParityCheck, stop_after: int | None = None,
                checkpointing: Checkpointing | None = None, base_weights: BaseWeights | None = None,
                ) -> tuple[TrainingOutcome | None, list[EpochResult]]:  # fmt: skip
    """The outcome (None when it died) and every epoch reported; `stop_after` kills it once that epoch is checkpointed."""
    seen: list[EpochResult] = []

    def report(result: Any) -> None:
        seen.append(result)
        if stop_after is not None and result.epoch == stop_after:
            raise KeyboardInterrupt  # the worker dies after this epoch's checkpoint

    try:
        outcome = train_and_export(spec, data, device=torch.device("cpu"), onnx_path=onnx_path, parity=parity, on_epoch_end=report,
                                   checkpointing=checkpointing, base_weights=base_weights)  # fmt: skip
    except KeyboardInterrupt:
        return None, seen
    return outcome, seen
