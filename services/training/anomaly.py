"""An autoencoder's anomaly threshold: the per-row reconstruction error on held-out rows, and its percentiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from services.spec.job import AnomalySpec
from services.training.loop import Split
from services.training.network import Network

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
SCORE = "mean squared reconstruction error per row"  # what serving's detect computes from the ONNX output too


@torch.no_grad()
def reconstruction_errors(network: Network, split: Split, batch_size: int = 1024) -> np.ndarray:
    """Each row's mean squared error between the network's reconstruction and the row, in eval mode."""
    model = network.trainable().eval()
    errors = []
    for x, target in split.batches(None, batch_size):
        output = model(x).float()
        errors.append((output - target.float()).square().reshape(len(output), -1).mean(dim=1).cpu())
    return torch.cat(errors).numpy().astype(np.float64)


def anomaly_record(network: Network, validation: Split, spec: AnomalySpec) -> dict[str, Any]:
    """What the version keeps, and its ONNX metadata says: the threshold at `spec.percentile`, and the error's spread."""
    errors = reconstruction_errors(network, validation)
    return {
        "score": SCORE,
        "percentile": spec.percentile,
        "threshold": float(np.percentile(errors, spec.percentile)),
        "percentiles": {f"{p:g}": float(np.percentile(errors, p)) for p in PERCENTILES},
        "rows": len(errors),
    }
