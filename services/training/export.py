"""ONNX export with a dynamic batch axis, and the check that onnxruntime agrees with PyTorch.

The TorchScript-based exporter (`dynamo=False`) is used on purpose: on this project's machines it
exported every curriculum model in 0.0-0.3 s, where the dynamo exporter took 1.7-12 s per model
(../shared/FINDINGS.md), and a job's export time is paid on every training run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17


def export_onnx(network: nn.Module, *, input_shape: tuple[int, ...], path: Path) -> None:
    """Write `network` (moved to the CPU, eval mode) to `path` with batch as a dynamic axis."""
    network = network.cpu().eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)  # (B, *input_shape), B > 1 stays symbolic
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def parity_max_abs_diff(network: nn.Module, *, path: Path, rows: np.ndarray) -> float:
    """Largest |onnxruntime - PyTorch| over `rows` (held-out samples), both on the CPU."""
    network = network.cpu().eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(rows, dtype=np.float32)
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.no_grad():
        torch_out = network(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(onnx_out - torch_out))) if x.size else 0.0
