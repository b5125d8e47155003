"""Denoising autoencoders: `kind`, `data.noise` on the training inputs only, reconstruction judged against clean images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.data.builtins import load_builtin
from services.errors import InvalidSpec
from services.spec import JobSpec, check_job_against_dataset
from services.spec.job import NoiseSpec
from services.training.augment import Corrupter
from services.training.pipeline import ParityCheck, train_and_export
from tests.factories import job_body

AUTOENCODER = {"input_shape": [64], "layers": [{"type": "Dense", "units": 16, "activation": "relu", "name": "code"},
                                               {"type": "Dense", "units": 64}]}  # fmt: skip


def _job(**data: Any) -> JobSpec:
    training = {"loss": "mse", "epochs": 30, "optimizer": {"name": "adam", "learning_rate": 0.01}}
    body = job_body(data={"normalization": "minmax", **data}, training=training)
    return JobSpec.model_validate(body | {"model": AUTOENCODER, "kind": "autoencoder"})


def test_kind_autoencoder_and_targets_inputs_mean_the_same() -> None:
    assert _job().data.targets == "inputs"
    body = job_body(data={"targets": "inputs"}, training={"loss": "mse"}) | {"model": AUTOENCODER}
    assert JobSpec.model_validate(body).kind == "autoencoder"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (job_body(data={"noise": {"gaussian": 0.3}}), "data.noise", ['"kind": "autoencoder"']),
        (job_body(data={"noise": {"gaussian": 0.3}, "augmentation": {"flip": "horizontal"}}, training={"loss": "mse"})
         | {"kind": "autoencoder", "model": {"input_shape": [8, 8, 1], "layers": [{"type": "Conv2D", "filters": 1, "kernel_size": 1}]}},
         "data.noise", ["not both"]),
    ],
)  # fmt: skip
def test_noise_outside_an_autoencoder_is_refused(body: dict[str, Any], field: str, words: list[str]) -> None:
    with pytest.raises(InvalidSpec) as refused:
        check_job_against_dataset(JobSpec.model_validate(body), load_builtin("digits").info)
    assert refused.value.field == field and all(word in refused.value.message for word in words)


def test_noise_on_token_ids_is_refused() -> None:
    model = {"input_shape": [20], "layers": [{"type": "Embedding", "input_dim": 100, "output_dim": 4}, {"type": "Flatten"},
                                             {"type": "Dense", "units": 20}]}  # fmt: skip
    body = job_body(data={"dataset": "tokens", "noise": {"gaussian": 0.3}}, training={"loss": "mse"}) | {
        "kind": "autoencoder",
        "model": model,
    }
    with pytest.raises(InvalidSpec, match="token ids cannot take noise") as refused:
        check_job_against_dataset(JobSpec.model_validate(body), load_builtin("tokens").info)
    assert refused.value.field == "data.noise"


@pytest.mark.parametrize(
    "body",
    [job_body(data={"targets": "inputs"}, training={"loss": "mse"}) | {"kind": "supervised", "model": AUTOENCODER},
     job_body(data={"targets": "labels"}, training={"loss": "mse"}) | {"kind": "autoencoder", "model": AUTOENCODER}],
)  # fmt: skip
def test_a_kind_that_contradicts_the_targets_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="kind"):
        JobSpec.model_validate(body)


def test_noise_takes_one_kind() -> None:
    with pytest.raises(ValueError, match="give one of gaussian"):
        NoiseSpec.model_validate({"gaussian": 0.1, "masking": 0.2})


def test_masking_zeroes_about_that_share_and_gaussian_keeps_the_mean() -> None:
    x = torch.ones(200, 64)
    masked = Corrupter(NoiseSpec(masking=0.25), seed=0)(x)
    assert set(masked.unique().tolist()) == {0.0, 1.0} and float((masked == 0).float().mean()) == pytest.approx(0.25, abs=0.02)
    noisy = Corrupter(NoiseSpec(gaussian=0.5), seed=0)(x)
    assert float(noisy.mean()) == pytest.approx(1.0, abs=0.02) and float(noisy.std()) == pytest.approx(0.5, abs=0.02)


def test_a_denoising_autoencoder_removes_noise_it_never_saw_clean(tmp_path: Path) -> None:
    spec = _job(noise={"gaussian": 4.0})  # in the inputs' own units: digits' pixels run 0..16
    digits = load_builtin("digits")
    check_job_against_dataset(spec, digits.info)
    train_and_export(spec, digits, device=torch.device("cpu"), onnx_path=tmp_path / "m.onnx",
                     parity=ParityCheck(rows=64, atol=1e-4, rtol=1e-3), on_epoch_end=lambda r: None)  # fmt: skip
    clean = digits.x_test.astype(np.float32)
    noisy = clean + np.random.default_rng(1).normal(0, 4.0, clean.shape).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (restored,) = session.run(None, {"input": noisy})
    restored_error = float(np.mean((restored - clean) ** 2))
    noisy_error = float(np.mean((noisy - clean) ** 2))
    assert restored_error < 0.5 * noisy_error, (restored_error, noisy_error)
