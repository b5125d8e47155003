"""Spec -> torch: inferred shapes equal the module's real shapes; softmax/sigmoid heads are lifted for the loss."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from services.spec import ModelSpec, infer_shapes, input_dtype
from services.training.builder import build_network

ACTIVATIONS = ["relu", "leaky_relu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softmax", "linear"]


def _flat_layer(draw: st.DrawFn, shape: tuple[int, ...]) -> dict:
    kind = draw(st.sampled_from(["Dense", "Dropout", "Activation", "BatchNormalization", "LayerNormalization", "Reshape"]))
    if kind == "Dense":
        return {"type": "Dense", "units": draw(st.integers(1, 9)), "activation": draw(st.sampled_from(ACTIVATIONS))}
    if kind == "Reshape" and shape[0] % 2 == 0:
        return {"type": "Reshape", "target_shape": [-1, 2]}
    if kind == "Dropout":
        return {"type": "Dropout", "rate": draw(st.floats(0, 0.9))}
    if kind == "Activation":
        return {"type": "Activation", "activation": draw(st.sampled_from(ACTIVATIONS))}
    return {"type": "LayerNormalization" if kind == "Reshape" else kind}


def _sequence_layer(draw: st.DrawFn, shape: tuple[int, ...]) -> dict:
    length, features = shape
    kind = draw(st.sampled_from(["Conv1D", "Pool", "Global", "RNN", "Bidirectional", "TransformerEncoder", "Flatten", "Norm"]))
    if kind == "Conv1D":
        padding = draw(st.sampled_from(["valid", "same"])) if length >= 3 else "same"
        return {"type": "Conv1D", "filters": draw(st.integers(1, 6)), "kernel_size": 3, "strides": draw(st.integers(1, 2)),
                "padding": padding, "activation": draw(st.sampled_from(ACTIVATIONS))}  # fmt: skip
    if kind == "Pool" and length >= 2:
        return {"type": draw(st.sampled_from(["MaxPooling1D", "AveragePooling1D"])), "padding": draw(st.sampled_from(["valid", "same"]))}
    if kind in ("RNN", "Bidirectional"):
        rnn = {"type": draw(st.sampled_from(["SimpleRNN", "LSTM", "GRU"])), "units": draw(st.integers(1, 6)),
               "return_sequences": draw(st.booleans())}  # fmt: skip
        if kind == "RNN":
            return rnn
        return {"type": "Bidirectional", "layer": rnn, "merge_mode": draw(st.sampled_from(["concat", "sum"]))}
    if kind == "TransformerEncoder":
        heads = draw(st.sampled_from([h for h in (1, 2, 3, 4) if features % h == 0]))
        return {"type": "TransformerEncoder", "num_heads": heads, "ff_dim": draw(st.integers(1, 12))}
    if kind == "Norm":
        return {"type": draw(st.sampled_from(["BatchNormalization", "LayerNormalization", "PositionalEmbedding"]))}
    return {"type": "Flatten"} if kind == "Flatten" else {"type": draw(st.sampled_from(["GlobalAveragePooling1D", "GlobalMaxPooling1D"]))}


def _image_layer(draw: st.DrawFn, shape: tuple[int, ...]) -> dict:
    height, width, _ = shape
    kind = draw(st.sampled_from(["Conv2D", "Conv2DTranspose", "Pool", "Global", "UpSampling2D", "Patch", "Flatten"]))
    small = min(height, width)
    if kind == "Conv2D":
        return {"type": "Conv2D", "filters": draw(st.integers(1, 5)), "kernel_size": [min(3, small), 1],
                "strides": draw(st.integers(1, 2)), "padding": draw(st.sampled_from(["valid", "same"]))}  # fmt: skip
    if kind == "Conv2DTranspose" and small <= 6:
        return {"type": "Conv2DTranspose", "filters": draw(st.integers(1, 4)), "kernel_size": draw(st.integers(1, 3)),
                "strides": draw(st.integers(1, 2)), "padding": draw(st.sampled_from(["valid", "same"]))}  # fmt: skip
    if kind == "Pool" and small >= 2:
        return {"type": draw(st.sampled_from(["MaxPooling2D", "AveragePooling2D"])), "padding": draw(st.sampled_from(["valid", "same"]))}
    if kind == "UpSampling2D" and small <= 4:
        return {"type": "UpSampling2D", "interpolation": draw(st.sampled_from(["nearest", "bilinear"]))}
    if kind == "Patch" and height % 2 == 0 and width % 2 == 0:
        return {"type": "PatchEmbedding", "patch_size": 2, "dim": draw(st.integers(1, 6))}
    return {"type": "Flatten"} if kind == "Flatten" else {"type": draw(st.sampled_from(["GlobalAveragePooling2D", "GlobalMaxPooling2D"]))}


@st.composite
def valid_models(draw: st.DrawFn) -> ModelSpec:
    start = draw(st.sampled_from(["flat", "sequence", "image", "tokens"]))
    layers: list[dict] = []
    if start == "tokens":
        input_shape = [draw(st.integers(2, 8))]
        layers.append({"type": "Embedding", "input_dim": 30, "output_dim": draw(st.integers(1, 8))})
    else:
        rank = {"flat": 1, "sequence": 2, "image": 3}[start]
        input_shape = draw(st.lists(st.integers(2, 8), min_size=rank, max_size=rank))
    for _ in range(draw(st.integers(1, 5))):
        shape = infer_shapes(ModelSpec.model_validate({"input_shape": input_shape, "layers": layers}))[-1] if layers else tuple(input_shape)
        pick = {1: _flat_layer, 2: _sequence_layer, 3: _image_layer}[len(shape)]
        layers.append(pick(draw, shape))
    return ModelSpec.model_validate({"input_shape": input_shape, "layers": layers})


@settings(max_examples=150, deadline=None)
@given(spec=valid_models(), batch=st.integers(1, 4))
def test_inferred_shapes_equal_torch_shapes_layer_by_layer(spec: ModelSpec, batch: int) -> None:
    network = build_network(spec, fuse_output_activation=False).eval()
    if input_dtype(spec) == "int64":
        x = torch.randint(0, 30, (batch, *spec.input_shape))
    else:
        x = torch.randn(batch, *spec.input_shape)
    for index, (block, expected) in enumerate(zip(network.body, infer_shapes(spec), strict=True)):
        x = block(x)
        assert tuple(x.shape) == (batch, *expected), f"layer {index} ({spec.layers[index].type})"


def test_softmax_head_is_lifted_for_the_loss_and_kept_for_export() -> None:
    spec = ModelSpec.model_validate({"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]})
    network = build_network(spec, fuse_output_activation=True).eval()
    assert isinstance(network.head, nn.Softmax) and network.outputs_logits
    x = torch.randn(5, 4)
    torch.testing.assert_close(network(x), torch.softmax(network.body(x)[0], dim=-1))
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
