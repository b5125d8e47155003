"""The CUDA path, run by `make test-gpu` on a machine with an NVIDIA GPU (deselected by `make test`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.data.builtins import load_builtin
from services.spec import JobSpec
from services.training.device import gpu_count, training_device
from services.training.pipeline import ParityCheck, train_and_export
from tests.conftest import ROOT

pytestmark = pytest.mark.gpu


def _example(name: str) -> JobSpec:
    return JobSpec.model_validate(json.loads((ROOT / "examples" / f"{name}.json").read_text()))


def test_a_gpu_is_visible_to_torch() -> None:
    assert gpu_count() >= 1
    assert training_device(0).type == "cuda"


@pytest.mark.parametrize(("example", "accuracy"), [("digits_mlp", 0.95), ("cnn_digits", 0.97), ("transformer_tokens", 0.95)])
def test_example_trains_on_cuda_and_exports_with_parity(tmp_path: Path, example: str, accuracy: float) -> None:
    spec = _example(example)
    data = load_builtin(spec.data.dataset, samples=spec.data.samples)
    device = training_device(0)
    outcome = train_and_export(spec, data, device=device, onnx_path=tmp_path / "m.onnx", parity=ParityCheck(256, 1e-4, 1e-4),
                               on_epoch_end=lambda r: None)  # fmt: skip
    bf16 = torch.cuda.is_bf16_supported()
    print(f"\n[gpu] {torch.cuda.get_device_name(device)} {example}: bf16 autocast {bf16}, train {outcome.metrics['train_seconds']:.2f}s, "
          f"test accuracy {outcome.metrics['test_accuracy']:.4f}, parity {outcome.metrics['onnx_parity_max_abs_diff']:.2e}")  # fmt: skip
    assert outcome.metrics["test_accuracy"] >= accuracy


def test_gpu_host_worker_consumes_the_gpu_queue_with_one_process_per_gpu() -> None:
    from services.config import Settings
    from worker.__main__ import plan_worker

    plan = plan_worker(Settings())
    assert (plan.queue, plan.concurrency) == ("gpu", gpu_count())
