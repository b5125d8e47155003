"""Both ONNX exporters on every example model: seconds per export and parity, to choose on evidence.

Kiln exports with the TorchScript-based exporter (dynamo=False). This benchmark re-measures the
choice: it exports each example network with both exporters in the same process and checks
onnxruntime against PyTorch on a batch of 7 for each file.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.spec import JobSpec, has_dynamic_time_axis, input_dtype  # noqa: E402
from services.training.builder import build_network  # noqa: E402
from services.training.export import example_input, export_onnx  # noqa: E402


def dynamo_export(network: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(network.eval(), (example,), str(path), dynamo=True, input_names=["input"], output_names=["output"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), verbose=False)  # fmt: skip


def max_diff(network: torch.nn.Module, path: Path, x: torch.Tensor) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        return float(np.abs(got - network(x).numpy()).max())


def main() -> None:
    torch.set_num_threads(2)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the dynamo exporter's notes on missing torchvision
    ratios = []
    print(f"{'example':24s} {'legacy s':>9s} {'dynamo s':>9s} {'dynamo/legacy':>14s} {'legacy diff':>12s} {'dynamo diff':>12s}")
    for path in sorted((ROOT / "examples").glob("*.json")):
        body = json.loads(path.read_text())
        if "study_name" in body:
            continue  # a study, not a job: its template is digits_mlp's
        spec = JobSpec.model_validate(body)
        model = spec.network  # a GAN's: its generator, the network it exports
        torch.manual_seed(0)
        network = build_network(model, fuse_output_activation=spec.kind != "gan" and not spec.training.is_regression).eval()
        if len(model.input_shapes) != 1:
            print(f"{path.stem:24s} skipped: {len(model.input_shapes)} inputs (this comparison feeds one)")
            continue
        shape, dtype = model.input_shapes[0], input_dtype(model)
        x = example_input(shape, dtype, batch=7)
        if dtype == "float32":
            x = torch.randn_like(x)
        with tempfile.TemporaryDirectory() as tmp:
            legacy, dynamo = Path(tmp) / "legacy.onnx", Path(tmp) / "dynamo.onnx"
            started = time.perf_counter()
            export_onnx(network, examples=[example_input(shape, dtype)], path=legacy, dynamic_time=has_dynamic_time_axis(model))
            legacy_s = time.perf_counter() - started
            started = time.perf_counter()
            try:
                dynamo_export(network, example_input(shape, dtype), dynamo)
                dynamo_s, dynamo_diff = time.perf_counter() - started, f"{max_diff(network, dynamo, x):.1e}"
            except Exception as exc:  # report, do not hide: an exporter that fails is a finding
                dynamo_s, dynamo_diff = float("nan"), f"failed: {type(exc).__name__}"
            ratios.append(dynamo_s / legacy_s)
            print(f"{path.stem:24s} {legacy_s:9.3f} {dynamo_s:9.3f} {dynamo_s / legacy_s:14.1f} "
                  f"{max_diff(network, legacy, x):12.1e} {dynamo_diff:>12s}")  # fmt: skip
    finite = [r for r in ratios if r == r]
    print(f"median dynamo / legacy export time: {statistics.median(finite):.1f}x over {len(finite)} models")


if __name__ == "__main__":
    main()
