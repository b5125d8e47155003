"""GANs: two networks trained against each other through the one loop, checkpoints of both, the generator's export
(real torch, real onnxruntime), and the 422s that name the network and the shape expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from services.data.builtins import load_builtin
from services.data.catalogue import BUILTIN_DATASETS
from services.errors import InvalidSpec
from services.spec import JobSpec, check_budget, check_job_against_dataset
from services.spec.budget import Budget
from services.training import checkpoint
from services.training.pipeline import Checkpointing, ParityCheck, TrainingOutcome
from tests.factories import gan_body, job_body
from tests.interrupted import train_until

PARITY = ParityCheck(rows=64, atol=1e-4, rtol=1e-3)


def _train(body: dict[str, Any], path: Path, *, checkpointing: Checkpointing | None = None,
           stop_after: int | None = None) -> tuple[TrainingOutcome | None, list[Any]]:  # fmt: skip
    spec = JobSpec.model_validate(body)
    data = load_builtin(spec.data.dataset)
    check_job_against_dataset(spec, data.info)
    return train_until(spec, data, path, parity=PARITY, checkpointing=checkpointing, stop_after=stop_after)


def test_a_gan_reports_both_networks_figures_renders_each_epoch_and_exports_the_generator(tmp_path: Path) -> None:
    outcome, seen = _train(gan_body(epochs=3), tmp_path / "g.onnx")
    assert outcome is not None and outcome.task == "generator"
    for result in seen:
        assert {"d_loss", "g_loss", "d_x", "d_g_z", "loss"} <= set(result.metrics)
        assert 0 < result.metrics["d_x"] < 1 and 0 < result.metrics["d_g_z"] < 1
        assert result.image is not None and result.image.startswith(b"\x89PNG\r\n\x1a\n")
    assert outcome.generation == {"latent_dim": 8, "classes": 0, "labels": None, "sample_shape": [64], "value_range": [0.0, 16.0]}
    session = ort.InferenceSession(str(tmp_path / "g.onnx"))
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("z", [8])]
    z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    (samples,) = session.run(None, {"z": z})
    assert samples.shape == (5, 64) and np.std(samples, axis=0).mean() > 0  # different z, different samples
    assert outcome.metrics["discriminator_parameters"] == (64 * 32 + 32) + (32 + 1)


def test_a_conditional_generator_takes_the_class_and_draws_by_it(tmp_path: Path) -> None:
    outcome, _ = _train(gan_body(conditional=True, epochs=2), tmp_path / "c.onnx")
    assert outcome is not None and outcome.generation is not None and outcome.generation["classes"] == 10
    session = ort.InferenceSession(str(tmp_path / "c.onnx"))
    assert [i.name for i in session.get_inputs()] == ["z", "label"]
    z = np.zeros((2, 8), dtype=np.float32)
    (samples,) = session.run(None, {"z": z, "label": np.array([[3], [7]], dtype=np.int64)})
    assert not np.allclose(samples[0], samples[1])  # the same z, another class: another sample


def test_a_killed_gan_resumes_bit_for_bit(tmp_path: Path) -> None:
    body = gan_body(epochs=4, training={"label_noise": 0.1, "label_smoothing": 0.1})
    whole, _ = _train(body, tmp_path / "a.onnx", checkpointing=Checkpointing(tmp_path / "a.pt"))
    _train(body, tmp_path / "b.onnx", checkpointing=Checkpointing(tmp_path / "b.pt"), stop_after=2)
    state = checkpoint.load(tmp_path / "b.pt")
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "noise"} <= set(state["kind"])
    resumed, seen = _train(body, tmp_path / "c.onnx", checkpointing=Checkpointing(tmp_path / "c.pt", state))
    assert whole is not None and resumed is not None
    assert [r.epoch for r in seen] == [3, 4]
    assert [r.metrics for r in resumed.history] == [r.metrics for r in whole.history]
    assert (tmp_path / "c.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_a_discriminator_that_wins_and_a_collapsed_generator_are_warned_about(tmp_path: Path) -> None:
    body = gan_body(epochs=8, training={"optimizer": {"name": "adam", "learning_rate": 1e-7},
                                        "discriminator_optimizer": {"name": "adam", "learning_rate": 0.01}})  # fmt: skip
    body["model"]["generator"]["layers"][-1]["kernel_initializer"] = "zeros"  # every z gives the same sample
    _, seen = _train(body, tmp_path / "w.onnx")
    warnings = {r.epoch: r.warnings for r in seen if r.warnings}
    assert any("collapse" in w for w in warnings[1])
    assert sum("collapse" in w for ws in warnings.values() for w in ws) == 1  # once per spell, not every epoch
    winning = [epoch for epoch, ws in warnings.items() if any("discriminator wins" in w for w in ws)]
    assert winning == [7], warnings  # d_loss falls under 0.05 at epoch 3: the fifth such epoch in a row is 7


def _refused(body: dict[str, Any]) -> InvalidSpec:
    spec = JobSpec.model_validate(body)
    with pytest.raises(InvalidSpec) as caught:
        check_job_against_dataset(spec, BUILTIN_DATASETS[spec.data.dataset])
    return caught.value


def test_a_conditional_gan_checks_both_networks_shapes() -> None:
    body = gan_body(conditional=True)
    body["model"]["generator"]["input_shape"] = [8]
    err = _refused(body)
    assert err.field == "model.generator.input_shape" and "[18]" in err.message and "10 classes" in err.message
    body = gan_body(conditional=True)
    body["model"]["discriminator"]["input_shape"] = [64]
    err = _refused(body)
    assert err.field == "model.discriminator.input_shape" and "[74]" in err.message
    body = gan_body()
    body["model"]["generator"]["layers"][-1]["units"] = 63
    err = _refused(body)
    assert err.field == "model.generator.layers[1]" and "64" in err.message
    body = gan_body()
    body["model"]["discriminator"]["layers"][-1]["units"] = 2
    assert _refused(body).field == "model.discriminator.layers[2]"


def test_image_gans_append_the_class_as_channels() -> None:
    body = json.loads((Path(__file__).parents[2] / "examples" / "cgan_digits28.json").read_text())
    check_job_against_dataset(JobSpec.model_validate(body), BUILTIN_DATASETS["digits28"])
    body["model"]["discriminator"]["input_shape"] = [28, 28, 1]
    err = _refused(body)
    assert err.field == "model.discriminator.input_shape" and "[28, 28, 11]" in err.message


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [("data", {"validation_split": 0.2}, "data.validation_split"), ("data", {"normalization": "standard"}, "data.normalization"),
     ("training", {"loss": "mse"}, "training.loss"), ("training", {"early_stopping": {"monitor": "loss"}}, "training.early_stopping"),
     ("training", {"lr_schedule": "cosine"}, "training.lr_schedule"), ("data", {"dataset": "tokens"}, "data.dataset")],
)  # fmt: skip
def test_what_a_gan_cannot_take_is_refused_by_field(section: str, value: dict[str, Any], field: str) -> None:
    assert _refused(gan_body(**{section: value})).field == field


def test_gan_only_options_and_forms_are_refused_elsewhere() -> None:
    err = _refused(job_body(training={"label_smoothing": 0.1}))
    assert err.field == "training.label_smoothing" and '"kind": "gan"' in err.message
    with pytest.raises(ValidationError, match='"kind": "gan" needs model'):
        JobSpec.model_validate(job_body(kind="gan"))
    with pytest.raises(ValidationError, match='set "kind": "gan"'):
        JobSpec.model_validate(gan_body(training={"loss": "binary_crossentropy"}) | {"kind": "supervised"})


def test_the_budget_covers_both_networks_and_names_the_one_over() -> None:
    spec = JobSpec.model_validate(gan_body())
    both = check_budget(spec, Budget(max_parameters=10**9, max_training_memory_mb=10**6)).parameters
    assert both == (8 * 32 + 32 + 32 * 64 + 64) + (64 * 32 + 32 + 33)
    with pytest.raises(InvalidSpec) as caught:
        check_budget(spec, Budget(max_parameters=2_500, max_training_memory_mb=10**6))
    assert caught.value.field == "model.discriminator.layers[0]"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [(lambda b: b["model"]["generator"]["layers"][0].update(kernel_regularizer="l2"), "model.generator.layers[0].kernel_regularizer",
      "without regularizers"),
     (lambda b: b["model"]["discriminator"]["layers"][0].update(kernel_constraint="non_neg"),
      "model.discriminator.layers[0].kernel_constraint", "constraints"),
     (lambda b: [layer.update(trainable=False) for layer in b["model"]["generator"]["layers"]], "model.generator.layers",
      "no weights to train"),
     (lambda b: b["model"]["discriminator"].update(layers=[{"type": "Dense", "units": 1, "activation": "sigmoid"},
                                                           {"type": "Dropout", "rate": 0.1}]),
      "model.discriminator.layers[1]", "sigmoid must be its last")],
)  # fmt: skip
def test_gan_networks_that_would_train_wrong_are_refused(change: Any, field: str, words: str) -> None:
    body = gan_body()
    change(body)
    err = _refused(body)
    assert err.field == field and words in err.message, (err.field, err.message)


def test_a_generator_must_draw_samples_in_the_datasets_layout() -> None:
    body = json.loads((Path(__file__).parents[2] / "examples" / "gan_digits28.json").read_text())
    body["model"]["generator"]["layers"].append({"type": "Reshape", "target_shape": [1, 28, 28]})  # channels first
    body["model"]["discriminator"]["input_shape"] = [1, 28, 28]
    err = _refused(body)
    assert err.field == "model.generator.layers[5]" and "[28, 28, 1]" in err.message
