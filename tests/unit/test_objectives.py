"""Losses, metrics, optimizers, learning-rate schedules and early stopping, each against a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from services.spec import EarlyStoppingSpec, OptimizerSpec, ScheduleSpec
from services.training.callbacks import EarlyStopping
from services.training.objectives import Objective, compute_metrics
from services.training.optim import LrSchedule, make_clipper, make_optimizer


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"])
def test_loss_on_logits_equals_loss_on_probabilities(loss: str) -> None:
    torch.manual_seed(0)
    if loss == "binary_crossentropy":
        logits, labels = torch.randn(8, 1), torch.randint(0, 2, (8,))
        probabilities = torch.sigmoid(logits)
    else:
        logits, labels = torch.randn(8, 4), torch.randint(0, 4, (8,))
        probabilities = torch.softmax(logits, dim=-1)
    on_logits, on_probabilities = Objective(loss, True, 4), Objective(loss, False, 4)
    target = on_logits.prepare_targets(labels)
    torch.testing.assert_close(on_logits.loss(logits, target), on_probabilities.loss(probabilities, target), atol=1e-5, rtol=1e-5)
    assert torch.equal(on_logits.predicted_labels(logits), on_probabilities.predicted_labels(probabilities))


def test_categorical_one_hot_equals_sparse() -> None:
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    categorical = Objective("categorical_crossentropy", True, 3)
    one_hot = categorical.prepare_targets(labels)
    assert one_hot.shape == (6, 3) and torch.equal(one_hot.argmax(-1), labels)
    torch.testing.assert_close(
        categorical.loss(logits, one_hot), Objective("sparse_categorical_crossentropy", True, 3).loss(logits, labels)
    )


@pytest.mark.parametrize(("loss", "reference"), [("mse", 9.5 / 4), ("mae", 4.0 / 4), ("huber", (0.125 + 0.125 + 2.5) / 4)])
def test_regression_losses(loss: str, reference: float) -> None:
    output, target = torch.tensor([[0.5], [1.5], [0.0], [3.0]]), torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    assert Objective(loss, False).loss(output, target).item() == pytest.approx(reference)


def test_classification_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = torch.from_numpy(rng.normal(size=(200, 3))) + torch.nn.functional.one_hot(torch.from_numpy(labels), 3) * 1.5
    predicted = logits.argmax(-1).numpy()
    got = compute_metrics(Objective("sparse_categorical_crossentropy", True, 3), ["accuracy", "precision", "recall", "f1"],
                          logits, torch.from_numpy(labels))  # fmt: skip
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert got["precision"] == pytest.approx(skm.precision_score(labels, predicted, average="macro"))
    assert got["recall"] == pytest.approx(skm.recall_score(labels, predicted, average="macro"))
    assert got["f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))


def test_binary_metrics_score_the_positive_class() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    logits = torch.tensor([[2.0], [1.0], [-1.0], [-2.0], [0.5], [-0.5], [3.0], [-3.0]])
    predicted = (logits.reshape(-1) > 0).long().numpy()
    objective = Objective("binary_crossentropy", True, 2)
    got = compute_metrics(objective, ["precision", "recall", "f1"], logits, objective.prepare_targets(torch.from_numpy(labels)))
    assert got == pytest.approx({"precision": skm.precision_score(labels, predicted), "recall": skm.recall_score(labels, predicted),
                                 "f1": skm.f1_score(labels, predicted)})  # fmt: skip


def test_regression_metrics() -> None:
    output, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [3.0, 8.0]])
    got = compute_metrics(Objective("mse", False), ["mae", "rmse"], output, target)
    assert got == pytest.approx({"mae": 1.5, "rmse": np.sqrt(5.0)})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"name": "sgd", "momentum": 0.9, "nesterov": True}, (torch.optim.SGD, {"momentum": 0.9, "nesterov": True})),
        ({"name": "adam", "beta_1": 0.8}, (torch.optim.Adam, {"betas": (0.8, 0.999), "eps": 1e-7})),
        ({"name": "adamw"}, (torch.optim.AdamW, {"weight_decay": 0.004})),
        ({"name": "rmsprop", "rho": 0.8}, (torch.optim.RMSprop, {"alpha": 0.8})),
        ({"name": "adagrad", "weight_decay": 0.01}, (torch.optim.Adagrad, {"weight_decay": 0.01, "initial_accumulator_value": 0.1})),
    ],
)
def test_optimizers_take_keras_arguments(spec: dict, expected: tuple) -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = make_optimizer(OptimizerSpec.model_validate(spec), [param])
    cls, options = expected
    assert isinstance(optimizer, cls)
    assert {k: optimizer.defaults[k] for k in options} == options
    param.sum().backward()
    optimizer.step()
    assert not torch.equal(param.detach(), torch.ones(3))


def test_clipnorm_clips_each_gradient_and_clipvalue_each_element() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
    make_clipper(OptimizerSpec(clipnorm=1.0), [a, b])()  # type: ignore[misc]
    assert a.grad.norm().item() == pytest.approx(1.0) and b.grad.item() == pytest.approx(0.5)
    a.grad = torch.tensor([3.0, -0.2])
    make_clipper(OptimizerSpec(clipvalue=0.5), [a])()  # type: ignore[misc]
    assert a.grad.tolist() == pytest.approx([0.5, -0.2])
    assert make_clipper(OptimizerSpec(), [a]) is None


def _lrs(schedule: dict, metrics: list[float] | None = None, epochs: int = 6, batches: int = 1) -> list[float]:
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    sched = LrSchedule(ScheduleSpec.model_validate(schedule), optimizer, epochs=epochs, batches_per_epoch=batches)
    seen = []
    for epoch in range(epochs):
        seen.append(sched.learning_rate)
        for _ in range(batches):
            optimizer.step()
            sched.after_batch()
        sched.after_epoch({"val_loss": metrics[epoch] if metrics else 0.0})
    return seen


def test_a_constant_schedule_keeps_the_learning_rate() -> None:
    assert _lrs({"name": "constant"}) == [1.0] * 6


def test_a_step_schedule_multiplies_by_gamma_every_step_size_epochs() -> None:
    assert _lrs({"name": "step", "step_size": 2, "gamma": 0.5}) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_a_cosine_schedule_falls_monotonically_to_half_at_mid_training() -> None:
    cosine = _lrs({"name": "cosine"}, epochs=4)
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[2] == pytest.approx(0.5)


def test_a_one_cycle_schedule_warms_up_to_the_peak_then_anneals() -> None:
    cycle = _lrs({"name": "one_cycle"}, epochs=10, batches=3)
    assert cycle[0] < 0.1 and max(cycle) > 0.9 and cycle[-1] < max(cycle)


def test_reduce_on_plateau_halves_the_rate_once_val_loss_stalls_past_patience() -> None:
    plateau = _lrs({"name": "reduce_on_plateau", "patience": 1, "factor": 0.5}, metrics=[1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert plateau == pytest.approx([1, 1, 1, 1, 0.5, 0.5])


def test_early_stopping_stops_after_patience_and_restores_the_best_weights() -> None:
    network = torch.nn.Linear(1, 1)
    stopper = EarlyStopping(EarlyStoppingSpec(monitor="val_loss", patience=2, restore_best_weights=True))
    losses = [1.0, 0.5, 0.6, 0.55]
    stops = []
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            network.weight.fill_(epoch)
        stops.append(stopper.update(epoch, {"val_loss": loss}, network))
    assert stops == [False, False, False, True] and stopper.best_epoch == 2
    stopper.restore(network)
    assert network.weight.item() == 2.0


def test_early_stopping_on_accuracy_waits_for_a_rise_of_min_delta() -> None:
    stopper = EarlyStopping(EarlyStoppingSpec(monitor="val_accuracy", patience=1, min_delta=0.05))
    network = torch.nn.Linear(1, 1)
    assert stopper.mode == "max"
    assert [stopper.update(e, {"val_accuracy": a}, network) for e, a in enumerate([0.5, 0.52, 0.6], 1)] == [False, True, False]
