"""The training loop, losses on logits, ONNX export and the parity check (real torch, real onnxruntime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.data.builtins import load_builtin
from services.errors import TrainingFailed
from services.spec import JobSpec, ScheduleSpec
from services.training.kinds import supervised
from services.training.kinds.supervised import SupervisedTrainer
from services.training.loop import Diverged, FitOptions, Split, fit
from services.training.objectives import Objective
from services.training.optim import LrSchedule
from services.training.pipeline import ParityCheck, train_and_export
from tests.factories import job_body, tiny_job


def _options(epochs: int, batch_size: int, **extra: object) -> FitOptions:
    return FitOptions(epochs=epochs, batch_size=batch_size, generator=torch.Generator().manual_seed(0), **extra)  # type: ignore[arg-type]


def _trainer(net: torch.nn.Module, optimizer: torch.optim.Optimizer, metrics: list[str]) -> SupervisedTrainer:
    schedule = LrSchedule(ScheduleSpec(), optimizer, epochs=1, batches_per_epoch=1)
    return SupervisedTrainer(net, Objective("mse", from_logits=False), optimizer, metrics=metrics, schedule=schedule)


def test_fit_reports_every_epoch_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 3)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])).detach()
    net = torch.nn.Linear(3, 1)
    seen: list = []
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    options = _options(30, 32, on_epoch_end=(seen.append,))
    history = fit(_trainer(net, optimizer, ["mae", "rmse"]), train=Split(x, y), val=Split(x[:32], y[:32]), options=options)
    assert [r.epoch for r in seen] == list(range(1, 31)) and seen == history
    assert history[-1].metrics["loss"] < history[0].metrics["loss"] / 10
    assert set(history[-1].metrics) == {"loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse", "learning_rate"}


def test_reported_loss_is_the_mean_over_samples_with_a_ragged_last_batch() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    x, y = torch.ones(5, 1), torch.tensor([[1.0], [1.0], [1.0], [3.0], [3.0]])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # weights stay 0: the loss is exactly mean(y^2)
    (result,) = fit(_trainer(net, optimizer, ["mae"]), train=Split(x, y), val=None, options=_options(1, 2))
    assert result.metrics["loss"] == pytest.approx((1 + 1 + 1 + 9 + 9) / 5)
    assert result.metrics["mae"] == pytest.approx((1 + 1 + 1 + 3 + 3) / 5)


def test_non_finite_loss_stops_training_naming_epoch_and_batch() -> None:
    net = torch.nn.Linear(2, 1)
    x = torch.tensor([[1.0, float("nan")]] * 4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(Diverged, match="diverged at epoch 1, batch 1"):
        fit(_trainer(net, optimizer, ["mae"]), train=Split(x, torch.zeros(4, 1)), val=None, options=_options(3, 2))


def test_same_seed_trains_the_same_weights(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(tiny_job())
    data = load_builtin("digits")
    runs = [
        train_and_export(
            spec,
            data,
            device=torch.device("cpu"),
            onnx_path=tmp_path / f"{i}.onnx",
            parity=ParityCheck(rows=32, atol=1e-4, rtol=0.0),
            on_epoch_end=lambda r: None,
        )
        for i in range(2)
    ]
    assert runs[0].metrics["test_loss"] == runs[1].metrics["test_loss"]
    assert (tmp_path / "0.onnx").read_bytes() == (tmp_path / "1.onnx").read_bytes()


def _network_exported(monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    """The network the pipeline hands to the exporter, kept so a test can run it itself (the export is not changed)."""
    seen: list[torch.nn.Module] = []
    export = supervised.export_onnx

    def keeping(network: torch.nn.Module, **kwargs: Any) -> None:
        seen.append(network)
        export(network, **kwargs)

    monkeypatch.setattr(supervised, "export_onnx", keeping)
    return seen


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, loss: str, units: int, activation: str
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
    exported = _network_exported(monkeypatch)
    outcome = train_and_export(
        spec,
        load_builtin(dataset),
        device=torch.device("cpu"),
        onnx_path=path,
        parity=ParityCheck(rows=64, atol=1e-4, rtol=0.0),
        on_epoch_end=lambda r: None,
    )
    assert outcome.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    network = exported[0].eval()
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):  # onnxruntime against the trained torch network, measured here, not by the pipeline
        x = rng.normal(size=(batch, info.n_features)).astype(np.float32)
        (out,) = session.run(None, {"input": x})
        with torch.no_grad():
            expected = network(torch.from_numpy(x)).numpy()
        assert out.shape == (batch, units)
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-5, err_msg=f"batch {batch}")
    if loss != "mse":  # the exported model outputs probabilities, not the logits it was trained on
        (out,) = session.run(None, {"input": load_builtin(dataset).x_test[:5]})
        assert ((out >= 0) & (out <= 1)).all()


def test_parity_failure_fails_with_the_measured_difference(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(tiny_job())
    with pytest.raises(TrainingFailed, match=r"ONNX parity check failed on output 'output': max abs diff .* > 1e-12"):
        train_and_export(
            spec,
            load_builtin("digits"),
            device=torch.device("cpu"),
            onnx_path=tmp_path / "m.onnx",
            parity=ParityCheck(rows=256, atol=1e-12, rtol=0.0),
            on_epoch_end=lambda r: None,
        )


def test_bf16_autocast_path_trains(tmp_path: Path) -> None:
    """The CUDA path's mixed precision, exercised on the CPU's bf16 autocast."""
    torch.manual_seed(0)
    x, labels = torch.randn(128, 6, 6, 2), torch.randint(0, 3, (128,))
    x[labels == 1] += 1.0
    spec = JobSpec.model_validate(job_body(model={"input_shape": [6, 6, 2], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"}, {"type": "BatchNormalization"},
        {"type": "Flatten"}, {"type": "Dense", "units": 3}]}))  # fmt: skip
    from services.training.builder import build_network

    network = build_network(spec.model, fuse_output_activation=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    schedule = LrSchedule(ScheduleSpec(), optimizer, epochs=15, batches_per_epoch=4)
    trainer = SupervisedTrainer(network.trainable(), Objective("sparse_categorical_crossentropy", True, 3), optimizer,
                                metrics=["accuracy"], schedule=schedule, autocast=torch.bfloat16)  # fmt: skip
    history = fit(trainer, train=Split(x, labels), val=None, options=_options(15, 32))
    assert history[-1].metrics["loss"] < history[0].metrics["loss"]
    assert history[-1].metrics["accuracy"] > 0.6


def test_linear_last_layer_with_cross_entropy_is_trained_as_logits(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(job_body(
        model={"input_shape": [4], "layers": [{"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dense", "units": 3}]},
        data={"dataset": "iris", "validation_split": 0.0}, training={"epochs": 60, "optimizer": {"name": "adam", "learning_rate": 0.02}},
    ))  # fmt: skip
    outcome = train_and_export(spec, load_builtin("iris"), device=torch.device("cpu"), onnx_path=tmp_path / "m.onnx",
                               parity=ParityCheck(rows=30, atol=1e-4, rtol=1e-4), on_epoch_end=lambda r: None)  # fmt: skip
    assert outcome.metrics["loss"] > 0 and outcome.metrics["test_accuracy"] >= 0.9


@pytest.mark.parametrize("mode", ["standard", "minmax"])
def test_normalisation_statistics_per_last_axis_in_memory_and_from_disk(tmp_path: Path, mode: str) -> None:
    from services.data.arrays import RowView
    from services.training.preprocess import normalizer

    x = np.random.default_rng(0).normal([1.0, 100.0, -5.0], [2.0, 30.0, 0.1], size=(10_000, 4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    flat = x.reshape(-1, 3).astype(np.float64)
    expected = (flat.mean(0), flat.std(0)) if mode == "standard" else (flat.min(0), flat.max(0) - flat.min(0))
    for source in (x, RowView(tmp_path / "x.npy")):
        module, described = normalizer(mode, source, channels=3)
        np.testing.assert_allclose(described["shift"], expected[0], rtol=1e-6)
        np.testing.assert_allclose(described["scale"], expected[1], rtol=1e-6)
    normalised = module(torch.from_numpy(x)).reshape(-1, 3)
    if mode == "standard":
        np.testing.assert_allclose(normalised.mean(0).numpy(), 0.0, atol=1e-3)
    else:
        assert normalised.min().item() == pytest.approx(0.0, abs=1e-6) and normalised.max().item() == pytest.approx(1.0, abs=1e-6)


def test_rows_streamed_from_disk_are_reshaped_to_the_input_shape(tmp_path: Path) -> None:
    from services.data.arrays import RowView

    x = np.arange(6 * 12, dtype=np.float32).reshape(6, 12)
    np.save(tmp_path / "x.npy", x)
    split = Split(RowView(tmp_path / "x.npy"), torch.arange(6), torch.float32, (3, 4))
    batches = list(split.batches(torch.tensor([5, 0, 3, 1, 2, 4]), 4))
    assert [tuple(b[0].shape) for b in batches] == [(4, 3, 4), (2, 3, 4)]
    first_x, first_y = batches[0]
    np.testing.assert_array_equal(first_x.numpy(), x[first_y.numpy()].reshape(-1, 3, 4))  # rows and labels stay paired
