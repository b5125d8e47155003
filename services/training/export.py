"""ONNX export with a dynamic batch axis (and time axis where the model allows), and the parity check.

The TorchScript-based exporter (`dynamo=False`) is used on purpose: on this project's machines it
exported every curriculum model in 0.0-0.3 s, where the dynamo exporter took 1.7-12 s per model
(../shared/FINDINGS.md; `bench/export_time.py` measures both here), and a job pays its export
time on every run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17


def example_input(input_shape: tuple[int, ...], dtype: str, batch: int = 2) -> torch.Tensor:
    """Zeros (or token id 0) shaped (batch, *input_shape); a batch of 2 keeps the axis symbolic."""
    return torch.zeros((batch, *input_shape), dtype=torch.int64 if dtype == "int64" else torch.float32)


def export_onnx(network: nn.Module, *, example: torch.Tensor, path: Path, dynamic_time: bool = False) -> None:
    """Write `network` (moved to the CPU, eval mode) to `path`; batch, and time if asked, stay dynamic."""
    network = network.cpu().eval()
    input_axes = {0: "batch", 1: "time"} if dynamic_time else {0: "batch"}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the attention fast path does not export (pytorch#177013)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network, (example,), str(path), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: input_axes, OUTPUT_NAME: {0: "batch"}},
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    agrees: bool  # every element within atol + rtol * |PyTorch|, numpy.allclose's rule


def onnx_parity(network: nn.Module, *, path: Path, rows: np.ndarray, atol: float, rtol: float) -> Parity:
    """How far onnxruntime is from PyTorch on `rows` (held-out samples), both on the CPU."""
    network = network.cpu().eval()
    rows = np.ascontiguousarray(rows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: rows})
    with torch.no_grad():
        torch_out = network(torch.from_numpy(rows)).numpy()
    if not torch_out.size:
        return Parity(0.0, True)
    diff = np.abs(onnx_out - torch_out)
    return Parity(float(diff.max()), bool(np.all(diff <= atol + rtol * np.abs(torch_out))))
