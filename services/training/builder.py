"""Turns a ModelSpec into a torch module with Keras semantics (initialisers, softmax on the last axis)."""

from __future__ import annotations

import math

import torch
from torch import nn

from services.spec import DenseLayer, DropoutLayer, FlattenLayer, ModelSpec, infer_shapes

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "linear": nn.Identity,
}


def activation_module(name: str) -> nn.Module:
    return nn.Softmax(dim=-1) if name == "softmax" else _ACTIVATIONS[name]()


def _dense(in_features: int, layer: DenseLayer) -> nn.Linear:
    linear = nn.Linear(in_features, layer.units, bias=layer.use_bias)
    nn.init.xavier_uniform_(linear.weight)  # Keras' glorot_uniform default
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class Network(nn.Module):
    """`body` produces what the loss reads; `head` is the output activation the exported model adds.

    Cross-entropy is computed on logits for stability, so a final softmax or sigmoid is lifted
    out of the body into the head: training sees logits, ONNX outputs probabilities.
    """

    def __init__(self, body: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @property
    def outputs_logits(self) -> bool:
        return not isinstance(self.head, nn.Identity)


def build_network(model: ModelSpec, *, fuse_output_activation: bool) -> Network:
    """The torch module for `model`; shapes were checked by `infer_shapes` first."""
    modules: list[nn.Module] = []
    shape = tuple(model.input_shape)
    for layer, out_shape in zip(model.layers, infer_shapes(model), strict=True):
        if isinstance(layer, DenseLayer):
            modules += [_dense(shape[0], layer), activation_module(layer.activation)]
        elif isinstance(layer, DropoutLayer):
            modules.append(nn.Dropout(layer.rate))
        elif isinstance(layer, FlattenLayer):
            modules.append(nn.Flatten(start_dim=1))  # (B, *shape) -> (B, prod(shape))
        else:
            modules.append(activation_module(layer.activation))
        shape = out_shape
    modules = [m for m in modules if not isinstance(m, nn.Identity)]
    head: nn.Module = nn.Identity()
    if fuse_output_activation and modules and isinstance(modules[-1], (nn.Softmax, nn.Sigmoid)):
        head = modules.pop()
    return Network(nn.Sequential(*modules), head)


def parameter_count(network: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in network.parameters())
