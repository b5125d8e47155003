"""The CUDA path, run by `make test-gpu` on a machine with an NVIDIA GPU (deselected by `make test`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.data.builtins import load_builtin
from services.spec import JobSpec
from services.training.device import gpu_count, training_device
from services.training.pipeline import ParityCheck, train_and_export
from tests.factories import DIGITS_MLP

pytestmark = pytest.mark.gpu


def test_a_gpu_is_visible_to_torch() -> None:
    assert gpu_count() >= 1
    assert training_device(0).type == "cuda"


def test_digits_example_trains_on_cuda_and_exports_with_parity(tmp_path: Path) -> None:
    device = training_device(0)
    outcome = train_and_export(
        JobSpec.model_validate(DIGITS_MLP),
        load_builtin("digits"),
        device=device,
        onnx_path=tmp_path / "m.onnx",
        parity=ParityCheck(rows=256, atol=1e-4, rtol=0.0),
        on_epoch_end=lambda r: None,
    )
    print(
        f"\n[gpu] {torch.cuda.get_device_name(device)}: train {outcome.metrics['train_seconds']:.2f}s, "
        f"test accuracy {outcome.metrics['test_accuracy']:.4f}, parity {outcome.metrics['onnx_parity_max_abs_diff']:.2e}"
    )
    assert outcome.metrics["test_accuracy"] >= 0.95
    assert outcome.metrics["onnx_parity_max_abs_diff"] <= 1e-4


def test_gpu_host_worker_consumes_the_gpu_queue_with_one_process_per_gpu() -> None:
    from services.config import Settings
    from worker.__main__ import plan_worker

    plan = plan_worker(Settings())
    assert (plan.queue, plan.concurrency) == ("gpu", gpu_count())
