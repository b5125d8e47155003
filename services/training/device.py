"""Which device this process trains on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_device(gpu_index: int | None) -> torch.device:
    """`cuda:<gpu_index>` when a GPU is present and one was assigned, else the CPU."""
    if gpu_index is not None and gpu_index < gpu_count():
        return torch.device("cuda", gpu_index)
    return torch.device("cpu")


def gpu_figures(device: torch.device) -> tuple[int, float | None]:
    """The memory torch holds on `device` and the GPU's utilisation (0 to 1; None without NVML, pynvml)."""
    try:
        utilization: float | None = torch.cuda.utilization(device) / 100
    except Exception:
        log.debug("GPU utilisation unavailable", exc_info=True)
        utilization = None
    return torch.cuda.memory_allocated(device), utilization


# Below this training footprint (weights, gradients, optimizer state, one batch's activations; services/spec/budget.py)
# a network's ops are too small to split: a second CPU thread only spins, taking the core the registry, the checkpoint
# writer and the API would use. Measured on 2 cores, 1 vs 2 threads: the digits MLP 0.078 vs 0.078 s, the digits CNN
# 0.188 vs 0.186 s, the LSTM 0.32 vs 0.39 s, the ViT 0.85 vs 0.82 s; cnn_shapes (84 MB) 4.18 vs 2.88 s.
SMALL_NETWORK_BYTES = 16 * 2**20


@contextlib.contextmanager
def cpu_threads_for(footprint_bytes: int | None, device: torch.device) -> Iterator[None]:
    """One intra-op thread for a small network trained on the CPU, the process's setting otherwise; restored after."""
    configured = torch.get_num_threads()
    small = device.type == "cpu" and footprint_bytes is not None and footprint_bytes < SMALL_NETWORK_BYTES
    torch.set_num_threads(1 if small else configured)
    try:
        yield
    finally:
        torch.set_num_threads(configured)
