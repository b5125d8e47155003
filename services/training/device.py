"""Which device this process trains on."""

from __future__ import annotations

import torch


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_device(gpu_index: int | None) -> torch.device:
    """`cuda:<gpu_index>` when a GPU is present and one was assigned, else the CPU."""
    if gpu_index is not None and gpu_index < gpu_count():
        return torch.device("cuda", gpu_index)
    return torch.device("cpu")
