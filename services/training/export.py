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


def export_onnx(network: nn.Module, *, examples: list[torch.Tensor], path: Path, input_names: list[str] | None = None,
                output_names: list[str] | None = None, dynamic_time: bool = False) -> None:  # fmt: skip
    """Write `network` (moved to the CPU, eval mode) to `path`, one ONNX input per example; batch, and time if asked, stay dynamic."""
    network = network.cpu().eval()
    inputs, outputs = input_names or [INPUT_NAME], output_names or [OUTPUT_NAME]
    input_axes = {0: "batch", 1: "time"} if dynamic_time else {0: "batch"}
    axes = {name: input_axes for name in inputs} | {name: {0: "batch"} for name in outputs}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the attention fast path does not export (pytorch#177013)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network, tuple(examples), str(path), dynamo=False, opset_version=OPSET,
                input_names=inputs, output_names=outputs, dynamic_axes=axes,
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float  # the largest over every output
    agrees: bool  # every element of every output within atol + rtol * |PyTorch|, numpy.allclose's rule
    output: str = OUTPUT_NAME  # the output that differs most


def onnx_parity(network: nn.Module, *, path: Path, feeds: dict[str, np.ndarray], atol: float, rtol: float) -> Parity:
    """How far onnxruntime is from PyTorch on held-out samples (`feeds`, by input name), output by output, both on the CPU."""
    network = network.cpu().eval()
    feeds = {name: np.ascontiguousarray(rows) for name, rows in feeds.items()}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    onnx_outputs = session.run(names, feeds)
    with torch.no_grad():
        torch_outputs = network(*(torch.from_numpy(rows) for rows in feeds.values()))
    torch_outputs = torch_outputs if isinstance(torch_outputs, tuple) else (torch_outputs,)
    worst = Parity(0.0, True, names[0])
    for name, onnx_out, torch_out in zip(names, onnx_outputs, (t.numpy() for t in torch_outputs), strict=True):
        if not torch_out.size:
            continue
        diff = np.abs(onnx_out - torch_out)
        agrees = bool(np.all(diff <= atol + rtol * np.abs(torch_out)))
        if not agrees or (worst.agrees and float(diff.max()) > worst.max_abs_diff):
            worst = Parity(float(diff.max()), agrees, name)
            if not agrees:
                break
    return worst
