"""Spec -> torch: inferred shapes equal the module's real shapes; softmax/sigmoid heads are lifted for the loss."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from services.spec import ModelSpec, infer_shapes
from services.training.builder import build_network

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "linear"]


@st.composite
def valid_models(draw: st.DrawFn) -> ModelSpec:
    input_shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    flat = len(input_shape) == 1
    layers = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["Dense", "Dropout", "Activation", "Flatten"]))
        if kind == "Dense" and not flat:
            kind = "Flatten"
        if kind == "Dense":
            layers.append({"type": "Dense", "units": draw(st.integers(1, 9)), "activation": draw(st.sampled_from(ACTIVATIONS))})
        elif kind == "Dropout":
            layers.append({"type": "Dropout", "rate": draw(st.floats(0, 0.9))})
        elif kind == "Activation":
            layers.append({"type": "Activation", "activation": draw(st.sampled_from(ACTIVATIONS))})
        else:
            layers.append({"type": "Flatten"})
            flat = True
    return ModelSpec.model_validate({"input_shape": input_shape, "layers": layers})


@settings(max_examples=60, deadline=None)
@given(spec=valid_models(), batch=st.integers(1, 5))
def test_inferred_shapes_equal_torch_shapes(spec: ModelSpec, batch: int) -> None:
    network = build_network(spec, fuse_output_activation=False).eval()
    x = torch.randn(batch, *spec.input_shape)
    shapes = infer_shapes(spec)
    assert tuple(network(x).shape) == (batch, *shapes[-1])


def test_softmax_head_is_lifted_for_the_loss_and_kept_for_export() -> None:
    spec = ModelSpec.model_validate({"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]})
    network = build_network(spec, fuse_output_activation=True).eval()
    assert isinstance(network.head, nn.Softmax) and network.outputs_logits
    x = torch.randn(5, 4)
    torch.testing.assert_close(network(x), torch.softmax(network.body(x), dim=-1))
    assert torch.allclose(network(x).sum(dim=-1), torch.ones(5))


def test_unfused_network_keeps_activation_in_body() -> None:
    spec = ModelSpec.model_validate({"input_shape": [4], "layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]})
    network = build_network(spec, fuse_output_activation=False)
    assert isinstance(network.head, nn.Identity) and not network.outputs_logits
    assert isinstance(network.body[-1][-1], nn.Sigmoid)  # the last block: Linear, then its activation


def test_dense_uses_keras_glorot_uniform_and_zero_bias() -> None:
    torch.manual_seed(0)
    spec = ModelSpec.model_validate({"input_shape": [300], "layers": [{"type": "Dense", "units": 200}]})
    linear = build_network(spec, fuse_output_activation=False).body[0]
    limit = math.sqrt(6 / (300 + 200))
    assert linear.weight.abs().max() <= limit and linear.weight.abs().max() > 0.9 * limit
    assert torch.count_nonzero(linear.bias) == 0
