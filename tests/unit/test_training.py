"""The training loop, losses on logits, ONNX export and the parity check (real torch, real onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.data.builtins import load_builtin
from services.errors import TrainingFailed
from services.spec import JobSpec
from services.training.loop import Diverged, Split, fit
from services.training.objectives import Objective
from services.training.pipeline import train_and_export
from tests.factories import job_body, tiny_job


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "binary_crossentropy"])
def test_loss_on_logits_equals_loss_on_probabilities(loss: str) -> None:
    torch.manual_seed(0)
    if loss == "binary_crossentropy":
        logits, target = torch.randn(8, 1), torch.randint(0, 2, (8,))
        probabilities = torch.sigmoid(logits)
    else:
        logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
        probabilities = torch.softmax(logits, dim=-1)
    on_logits = Objective(loss, from_logits=True)
    on_probabilities = Objective(loss, from_logits=False)
    torch.testing.assert_close(on_logits.loss(logits, target), on_probabilities.loss(probabilities, target), atol=1e-5, rtol=1e-5)
    assert on_logits.metric_sum(logits, target) == on_probabilities.metric_sum(probabilities, target)


def test_fit_reports_every_epoch_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 3)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])).detach()
    net = torch.nn.Linear(3, 1)
    seen = []
    history = fit(
        net,
        Objective("mse", from_logits=False),
        torch.optim.Adam(net.parameters(), lr=0.05),
        train=Split(x, y),
        val=Split(x[:32], y[:32]),
        epochs=30,
        batch_size=32,
        generator=torch.Generator().manual_seed(0),
        on_epoch_end=seen.append,
    )
    assert [r.epoch for r in seen] == list(range(1, 31)) and seen == history
    assert history[-1].metrics["loss"] < history[0].metrics["loss"] / 10
    assert set(history[-1].metrics) == {"loss", "mae", "val_loss", "val_mae"}


def test_non_finite_loss_stops_training_naming_epoch_and_batch() -> None:
    net = torch.nn.Linear(2, 1)
    x = torch.tensor([[1.0, float("nan")]] * 4)
    with pytest.raises(Diverged, match="diverged at epoch 1, batch 1"):
        fit(
            net,
            Objective("mse", from_logits=False),
            torch.optim.SGD(net.parameters(), lr=0.1),
            train=Split(x, torch.zeros(4, 1)),
            val=None,
            epochs=3,
            batch_size=2,
            generator=torch.Generator().manual_seed(0),
            on_epoch_end=lambda r: None,
        )


def test_same_seed_trains_the_same_weights(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(tiny_job())
    data = load_builtin("digits")
    runs = [
        train_and_export(
            spec,
            data,
            device=torch.device("cpu"),
            onnx_path=tmp_path / f"{i}.onnx",
            parity_rows=32,
            parity_tolerance=1e-4,
            on_epoch_end=lambda r: None,
        )
        for i in range(2)
    ]
    assert runs[0].metrics["test_loss"] == runs[1].metrics["test_loss"]
    assert (tmp_path / "0.onnx").read_bytes() == (tmp_path / "1.onnx").read_bytes()


@pytest.mark.parametrize(
    ("dataset", "loss", "units", "activation"),
    [
        ("digits", "sparse_categorical_crossentropy", 10, "softmax"),
        ("breast_cancer", "binary_crossentropy", 1, "sigmoid"),
        ("diabetes", "mse", 1, "linear"),
        ("iris", "sparse_categorical_crossentropy", 3, "tanh"),
    ],
)
def test_exported_onnx_matches_torch_at_any_batch_size(
    tmp_path: Path, dataset: str, loss: str, units: int, activation: str
) -> None:
    from services.data.catalogue import BUILTIN_DATASETS

    info = BUILTIN_DATASETS[dataset]
    layers = [{"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dense", "units": units, "activation": activation}]
    if activation == "tanh":  # a layer list that ends in an Activation layer
        layers = [layers[0], {"type": "Dense", "units": units}, {"type": "Activation", "activation": "softmax"}]
    spec = JobSpec.model_validate(
        job_body(
            model={"input_shape": [info.n_features], "layers": layers},
            data={"dataset": dataset, "validation_split": 0.1},
            training={"loss": loss, "epochs": 3},
        )
    )
    path = tmp_path / "m.onnx"
    outcome = train_and_export(
        spec,
        load_builtin(dataset),
        device=torch.device("cpu"),
        onnx_path=path,
        parity_rows=64,
        parity_tolerance=1e-4,
        on_epoch_end=lambda r: None,
    )
    assert outcome.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 64):
        (out,) = session.run(None, {"input": np.zeros((batch, info.n_features), np.float32)})
        assert out.shape == (batch, units)
    if loss != "mse":  # the exported model outputs probabilities, not the logits it was trained on
        (out,) = session.run(None, {"input": load_builtin(dataset).x_test[:5]})
        assert ((out >= 0) & (out <= 1)).all()


def test_parity_failure_fails_with_the_measured_difference(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(tiny_job())
    with pytest.raises(TrainingFailed, match=r"ONNX parity check failed: max abs diff .* > 1e-12"):
        train_and_export(
            spec,
            load_builtin("digits"),
            device=torch.device("cpu"),
            onnx_path=tmp_path / "m.onnx",
            parity_rows=256,
            parity_tolerance=1e-12,
            on_epoch_end=lambda r: None,
        )
