"""Keras' regularizers, constraints, initializers and `trainable`, as a spec states them and as training applies them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from services.data.builtins import load_builtin
from services.spec import JobSpec, ModelSpec
from services.spec.base import Regularizer
from services.spec.weights import Constraint
from services.training.builder import build_network
from services.training.pipeline import ParityCheck, train_and_export
from tests.factories import job_body


def _model(*layers: dict[str, Any], input_shape: list[int] | None = None) -> ModelSpec:
    return ModelSpec.model_validate({"input_shape": input_shape or [64], "layers": list(layers)})


def _train(layers: list[dict[str, Any]], tmp_path: Path, epochs: int = 5) -> tuple[Any, Any]:
    """Train on digits; return the history and the trained network's state."""
    states: list[dict[str, torch.Tensor]] = []
    spec = JobSpec.model_validate(job_body(training={"epochs": epochs, "optimizer": {"name": "adam", "learning_rate": 0.01}})
                                  | {"model": {"input_shape": [64], "layers": layers}})  # fmt: skip
    from services.training.kinds.supervised import Supervised

    original = Supervised.export

    def keep(self: Supervised, *args: Any) -> Any:
        states.append({k: v.clone() for k, v in self.network.state_dict().items()})
        return original(self, *args)

    Supervised.export = keep  # type: ignore[method-assign]
    try:
        outcome = train_and_export(spec, load_builtin("digits"), device=torch.device("cpu"), onnx_path=tmp_path / "m.onnx",
                                   parity=ParityCheck(rows=64, atol=1e-4, rtol=1e-3), on_epoch_end=lambda r: None)  # fmt: skip
    finally:
        Supervised.export = original  # type: ignore[method-assign]
    return outcome.history, states[0]


@pytest.mark.parametrize(
    ("given", "l1", "l2"),
    [("l2", 0.0, 0.01), ("l1", 0.01, 0.0), ("l1_l2", 0.01, 0.01), ({"l2": 0.5}, 0.0, 0.5),
     ({"l1_l2": {"l1": 0.1, "l2": 0.2}}, 0.1, 0.2), ({"l1": 0.3, "l2": 0.4}, 0.3, 0.4)],
)  # fmt: skip
def test_regularizers_take_keras_short_forms(given: Any, l1: float, l2: float) -> None:
    assert Regularizer.model_validate(given) == Regularizer(l1=l1, l2=l2)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("non_neg", Constraint(name="non_neg")), ({"max_norm": 3}, Constraint(name="max_norm", max_value=3.0)),
     ({"max_norm": {"max_value": 1.5, "axis": [0, 1, 2]}}, Constraint(name="max_norm", max_value=1.5, axis=[0, 1, 2])),
     ({"unit_norm": {"axis": 1}}, Constraint(name="unit_norm", axis=1))],
)  # fmt: skip
def test_constraints_take_keras_short_forms(given: Any, expected: Constraint) -> None:
    assert Constraint.model_validate(given) == expected


def test_an_unknown_regularizer_is_refused_naming_the_forms() -> None:
    with pytest.raises(ValidationError, match="expected 'l1', 'l2', 'l1_l2'"):
        _model({"type": "Dense", "units": 2, "kernel_regularizer": "l3"})


def test_the_penalty_is_keras_sum_over_kernel_and_bias_and_the_activity_per_sample() -> None:
    network = build_network(_model(
        {"type": "Dense", "units": 3, "kernel_regularizer": {"l2": 0.1}, "bias_regularizer": {"l1": 0.5},
         "bias_initializer": {"name": "constant", "value": -2.0}, "activity_regularizer": {"l1": 0.01}},
        {"type": "Dense", "units": 2}, input_shape=[4]), fuse_output_activation=False).train()  # fmt: skip
    dense = network.body.layers["dense"]
    x = torch.randn(8, 4)
    network(x)
    output = torch.nn.functional.linear(x, dense.weight, dense.bias)
    expected = 0.1 * dense.weight.square().sum() + 0.5 * dense.bias.abs().sum() + 0.01 * output.abs().sum() / 8
    penalty = network.penalty()
    assert penalty is not None and float(penalty) == pytest.approx(float(expected), rel=1e-5)


def test_a_recurrent_layer_is_regularized_on_keras_kernels_and_its_one_bias() -> None:
    network = build_network(_model({"type": "LSTM", "units": 3, "kernel_regularizer": {"l2": 1.0}, "recurrent_regularizer": {"l1": 1.0},
                                    "bias_regularizer": {"l2": 1.0}}, input_shape=[5, 2]), fuse_output_activation=False)  # fmt: skip
    rnn = network.body.layers["lstm"].rnn
    expected = rnn.weight_ih_l0.square().sum() + rnn.weight_hh_l0.abs().sum() + (rnn.bias_ih_l0 + rnn.bias_hh_l0).square().sum()
    assert float(network.penalty()) == pytest.approx(float(expected), rel=1e-5)  # type: ignore[arg-type]


def test_the_history_reports_the_penalty_apart_from_the_data_loss_and_l2_shrinks_the_weights(tmp_path: Path) -> None:
    plain = [{"type": "Dense", "units": 32, "activation": "relu"}, {"type": "Dense", "units": 10, "activation": "softmax"}]
    history, free = _train(plain, tmp_path)
    assert "regularization_loss" not in history[-1].metrics
    decayed = [dict(plain[0], kernel_regularizer={"l2": 0.01}), plain[1]]
    history, shrunk = _train(decayed, tmp_path)
    last = history[-1].metrics
    assert last["regularization_loss"] > 0 and last["loss"] == pytest.approx(last["data_loss"] + last["regularization_loss"])
    kernel = "body.layers.dense.0.weight"
    assert shrunk[kernel].square().sum() < 0.5 * free[kernel].square().sum()


@pytest.mark.parametrize(
    ("constraint", "check"),
    [
        ({"max_norm": 0.5}, lambda w: bool((w.square().sum(dim=1).sqrt() <= 0.5 + 1e-5).all())),  # Keras axis 0: each unit's inputs
        ("non_neg", lambda w: bool((w >= 0).all())),
        ("unit_norm", lambda w: torch.allclose(w.square().sum(dim=1).sqrt(), torch.ones(w.shape[0]), atol=1e-4)),
    ],
)
def test_a_kernel_constraint_holds_after_training(constraint: Any, check: Any, tmp_path: Path) -> None:
    layers = [{"type": "Dense", "units": 16, "activation": "relu", "kernel_constraint": constraint}, {"type": "Dense", "units": 10}]
    _, state = _train(layers, tmp_path, epochs=2)
    assert check(state["body.layers.dense.0.weight"])


def test_conv_constraint_axes_are_keras_kernel_axes() -> None:
    network = build_network(_model({"type": "Conv2D", "filters": 4, "kernel_size": 3,
                                    "kernel_constraint": {"max_norm": {"max_value": 0.1, "axis": [0, 1, 2]}}},
                                   input_shape=[6, 6, 2]), fuse_output_activation=False)  # fmt: skip
    network.constrain()
    weight = network.body.layers["conv2d"].inner.weight  # (out, in, kh, kw): Keras' (kh, kw, in) is one filter
    assert (weight.square().sum(dim=(1, 2, 3)).sqrt() <= 0.1 + 1e-6).all()


def test_initializers_follow_keras_fans_and_names() -> None:
    torch.manual_seed(0)
    network = build_network(_model(
        {"type": "Dense", "units": 1000, "kernel_initializer": "he_normal", "bias_initializer": "ones"},
        {"type": "Dense", "units": 1000, "kernel_initializer": {"name": "random_uniform", "minval": 0.2, "maxval": 0.3}},
        input_shape=[500]), fuse_output_activation=False)  # fmt: skip
    first, second = network.body.layers["dense"], network.body.layers["dense_1"]
    assert float(first.weight.std()) == pytest.approx((2 / 500) ** 0.5, rel=0.02)  # fan_in is the input size, as in Keras
    assert float(first.weight.abs().max()) <= 2 * (2 / 500) ** 0.5 / 0.8796 + 1e-6  # truncated at two stddevs
    assert bool((first.bias == 1).all()) and 0.2 <= float(second.weight.min()) and float(second.weight.max()) <= 0.3


def test_a_frozen_layer_keeps_its_weights_and_its_batch_norm_statistics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layers = [{"type": "Dense", "units": 32, "activation": "relu", "trainable": False, "name": "frozen"},
              {"type": "BatchNormalization", "trainable": False}, {"type": "Dense", "units": 10}]  # fmt: skip
    start = build_network(_model(*layers), fuse_output_activation=False).state_dict()
    _, trained = _train(layers, tmp_path, epochs=2)
    for key in ("body.layers.frozen.0.weight", "body.layers.batch_normalization.running_mean"):
        assert torch.equal(trained[key], start[key]), key
    assert not torch.equal(trained["body.layers.dense.weight"], start["body.layers.dense.weight"])


def test_a_bidirectional_layer_is_regularized_and_frozen_by_its_wrapped_layers_arguments() -> None:
    inner = {"type": "LSTM", "units": 3, "kernel_regularizer": {"l2": 0.5}}
    network = build_network(_model({"type": "Bidirectional", "layer": inner}, input_shape=[5, 2]), fuse_output_activation=False)
    rnn = network.body.layers["bidirectional"].rnn
    expected = 0.5 * (rnn.weight_ih_l0.square().sum() + rnn.weight_ih_l0_reverse.square().sum())
    assert network.regularized and float(network.penalty()) == pytest.approx(float(expected), rel=1e-5)  # type: ignore[arg-type]
    frozen = build_network(_model({"type": "Bidirectional", "layer": inner | {"trainable": False}}, input_shape=[5, 2]),
                           fuse_output_activation=False)  # fmt: skip
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.regularized  # Keras regularizes what trains
    with pytest.raises(ValidationError, match="put it on the Bidirectional"):
        _model({"type": "Bidirectional", "layer": {"type": "GRU", "units": 2, "activity_regularizer": "l1"}}, input_shape=[5, 2])


def test_an_activity_penalty_on_a_softmax_output_reads_probabilities_as_in_keras() -> None:
    spec = _model({"type": "Dense", "units": 3, "activation": "softmax", "bias_initializer": {"name": "constant", "value": 5.0},
                   "activity_regularizer": {"l1": 1.0}}, input_shape=[4])  # fmt: skip
    network = build_network(spec, fuse_output_activation=True).train()
    network(torch.zeros(8, 4))
    assert float(network.penalty()) == pytest.approx(1.0, rel=1e-5)  # type: ignore[arg-type]  # each row's probabilities sum to 1


@pytest.mark.parametrize(("layer", "axis"), [("Dense", 2), ("Dense", [0, 0]), ("Conv2D", 4)])
def test_a_constraint_axis_outside_the_kernel_is_refused(layer: str, axis: Any) -> None:
    arguments = {"units": 2} if layer == "Dense" else {"filters": 2, "kernel_size": 3}
    with pytest.raises(ValidationError, match="kernel_constraint: axis"):
        _model({"type": layer, **arguments, "kernel_constraint": {"max_norm": {"max_value": 1, "axis": axis}}}, input_shape=[5, 5, 1])
