"""Turns a ModelSpec into a torch module with Keras semantics: layouts, defaults and initialisers."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from services.spec import Graph, ModelSpec, Node, Shape, output_activation, resolve
from services.training import modules as m
from services.training.network import GraphBody, InputLayout, Merge, Network, Normalize, Step
from services.training.weights_spec import activity_penalty, initialize, kernel_constraint, weight_penalties

__all__ = ["Network", "Normalize", "activation_module", "build_network", "parameter_count"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # keras.activations.leaky_relu's default slope
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,  # exact, as Keras' default
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=-1),
    "linear": nn.Identity,
}


def activation_module(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def _initialized(module: nn.Module, spec: Any) -> nn.Module:
    """The layer's kernel and bias filled as its spec says (Keras' defaults: glorot_uniform kernels, zero biases)."""
    initialize(module.weight, spec.kernel_initializer)  # type: ignore[arg-type]
    if getattr(module, "bias", None) is not None:
        initialize(module.bias, spec.bias_initializer)  # type: ignore[arg-type]
    return module


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': the output is ceil(size / stride) long; any odd pixel is padded at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(layer: Any, shape: Shape) -> nn.Module:
    rank = len(shape) - 1
    kernel = m_pair(layer.kernel_size, rank)
    stride = m_pair(layer.strides, rank)
    conv_cls = nn.Conv1d if rank == 1 else nn.Conv2d
    conv = _initialized(conv_cls(shape[-1], layer.filters, kernel, stride=stride, bias=layer.use_bias), layer)  # type: ignore[arg-type]
    if layer.padding == "valid":
        return m.ChannelsFirst(conv, len(shape) + 1)
    pads = [_same_padding(size, k, s) for size, k, s in zip(shape[:-1], kernel, stride, strict=True)]
    amounts = tuple(p for before_after in reversed(pads) for p in before_after)  # F.pad: last axis first
    return m.ChannelsFirst(nn.Sequential(m.Pad(amounts), conv), len(shape) + 1)


def _conv_transpose(layer: Any, shape: Shape) -> nn.Module:
    (kh, kw), (sh, sw) = m_pair(layer.kernel_size, 2), m_pair(layer.strides, 2)
    conv = _initialized(nn.ConvTranspose2d(shape[-1], layer.filters, (kh, kw), stride=(sh, sw), bias=layer.use_bias), layer)
    if layer.padding == "valid":
        return m.ChannelsFirst(conv, len(shape) + 1)
    # Full output is (n - 1) * s + k; 'same' wants n * s: crop k - s (or pad s - k), extra at the end.
    extra_h, extra_w = kh - sh, kw - sw
    steps: list[nn.Module] = [conv]
    if extra_h < 0 or extra_w < 0:
        steps.append(m.Pad((0, max(-extra_w, 0), 0, max(-extra_h, 0))))
    crop_h, crop_w = max(extra_h, 0), max(extra_w, 0)
    steps.append(m.Crop2d(crop_h // 2, crop_h - crop_h // 2, crop_w // 2, crop_w - crop_w // 2))
    return m.ChannelsFirst(nn.Sequential(*steps), 4)


def _pool(layer: Any, shape: Shape) -> nn.Module:
    rank = len(shape) - 1
    pool, stride = m_pair(layer.pool_size, rank), m_pair(layer.stride, rank)
    ceil = layer.padding == "same"
    if layer.type.startswith("Max"):
        cls: Any = nn.MaxPool1d if rank == 1 else nn.MaxPool2d
        return m.ChannelsFirst(cls(pool, stride, ceil_mode=ceil), len(shape) + 1)
    cls = nn.AvgPool1d if rank == 1 else nn.AvgPool2d
    return m.ChannelsFirst(cls(pool, stride, ceil_mode=ceil, count_include_pad=False), len(shape) + 1)


def _batch_norm(layer: Any, shape: Shape) -> nn.Module:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}[len(shape)]
    norm = cls(shape[-1], eps=layer.epsilon, momentum=1 - layer.momentum)  # Keras keeps `momentum` of the old value
    return norm if len(shape) == 1 else m.ChannelsFirst(norm, len(shape) + 1)


def _recurrent(layer: Any, shape: Shape, *, bidirectional: bool = False, merge_mode: str = "concat") -> nn.Module:
    kind = layer.type
    common = {"input_size": shape[-1], "hidden_size": layer.units, "batch_first": True, "bidirectional": bidirectional}
    rnn: nn.RNNBase
    if kind == "SimpleRNN":
        rnn = nn.RNN(nonlinearity=layer.activation, **common)
    else:
        rnn = (nn.LSTM if kind == "LSTM" else nn.GRU)(**common)
    # Keras initializes each kernel whole, all gates at once: (in, gates * units) and (units, gates * units).
    for name, param in rnn.named_parameters():
        if name.startswith("weight_ih"):
            initialize(param, layer.kernel_initializer)
        elif name.startswith("weight_hh"):
            initialize(param, layer.recurrent_initializer)  # torch's (gates * units, units) has Keras' fans, transposed
        elif name.startswith("bias_ih"):
            initialize(param, layer.bias_initializer)
            if kind == "LSTM":
                with torch.no_grad():
                    param[layer.units : 2 * layer.units].fill_(1.0)  # Keras' unit_forget_bias
        elif kind == "GRU":
            initialize(param, layer.bias_initializer)  # reset_after: Keras keeps both biases and initializes both
        else:
            nn.init.zeros_(param)  # torch's second bias, which Keras does not have
    return m.Recurrent(rnn, dropout=layer.dropout, return_sequences=layer.return_sequences, merge_mode=merge_mode)


def _transformer(layer: Any, shape: Shape) -> nn.Module:
    activation = layer.activation if layer.activation in ("relu", "gelu") else activation_module(layer.activation)
    return nn.TransformerEncoderLayer(
        d_model=shape[-1], nhead=layer.num_heads, dim_feedforward=layer.ff_dim, dropout=layer.dropout,
        activation=activation, batch_first=True, norm_first=False, layer_norm_eps=1e-5,
    )  # fmt: skip


def _embedding(layer: Any, shape: Shape) -> nn.Module:
    embedding = nn.Embedding(layer.input_dim, layer.output_dim)
    initialize(embedding.weight, layer.embeddings_initializer, keras_in_first=True)
    return embedding


_BUILDERS: dict[str, Callable[[Any, Shape, Shape], nn.Module]] = {
    "Dense": lambda layer, shape, out: _initialized(nn.Linear(shape[0], layer.units, bias=layer.use_bias), layer),
    "Dropout": lambda layer, shape, out: nn.Dropout(layer.rate),
    "Activation": lambda layer, shape, out: nn.Identity(),
    "Flatten": lambda layer, shape, out: nn.Flatten(),
    "Reshape": lambda layer, shape, out: m.Reshape(out),
    "BatchNormalization": lambda layer, shape, out: _batch_norm(layer, shape),
    "LayerNormalization": lambda layer, shape, out: nn.LayerNorm(shape[-1], eps=layer.epsilon),
    "Conv1D": lambda layer, shape, out: _conv(layer, shape),
    "Conv2D": lambda layer, shape, out: _conv(layer, shape),
    "Conv2DTranspose": lambda layer, shape, out: _conv_transpose(layer, shape),
    "MaxPooling1D": lambda layer, shape, out: _pool(layer, shape),
    "MaxPooling2D": lambda layer, shape, out: _pool(layer, shape),
    "AveragePooling1D": lambda layer, shape, out: _pool(layer, shape),
    "AveragePooling2D": lambda layer, shape, out: _pool(layer, shape),
    "GlobalAveragePooling1D": lambda layer, shape, out: m.GlobalPool("avg", (1,)),
    "GlobalMaxPooling1D": lambda layer, shape, out: m.GlobalPool("max", (1,)),
    "GlobalAveragePooling2D": lambda layer, shape, out: m.GlobalPool("avg", (1, 2)),
    "GlobalMaxPooling2D": lambda layer, shape, out: m.GlobalPool("max", (1, 2)),
    "UpSampling2D": lambda layer, shape, out: m.ChannelsFirst(
        nn.Upsample(scale_factor=tuple(float(s) for s in m_pair(layer.size, 2)), mode=layer.interpolation), 4
    ),
    "Embedding": lambda layer, shape, out: _embedding(layer, shape),
    "SimpleRNN": lambda layer, shape, out: _recurrent(layer, shape),
    "LSTM": lambda layer, shape, out: _recurrent(layer, shape),
    "GRU": lambda layer, shape, out: _recurrent(layer, shape),
    "Bidirectional": lambda layer, shape, out: _recurrent(layer.layer, shape, bidirectional=True, merge_mode=layer.merge_mode),
    "TransformerEncoder": lambda layer, shape, out: _transformer(layer, shape),
    "PositionalEmbedding": lambda layer, shape, out: m.AddPositions(shape[0], shape[1]),
    "PatchEmbedding": lambda layer, shape, out: m.PatchEmbedding(shape[-1], layer.patch_size, layer.dim, out[0]),
    **{kind: lambda layer, shape, out: Merge(layer.type) for kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    "Concatenate": lambda layer, shape, out: Merge("Concatenate", layer.axis),
}


def m_pair(value: int | tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if value is None:  # shape inference fills every size in before a module is built
        raise ValueError("a layer size reached the builder unset: run shape inference on the spec first")
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _lift_head(graph: Graph, node: Node, fuse_output_activation: bool) -> bool:
    """Whether the trained output's softmax/sigmoid moves into the head: nothing else may read it before it is applied."""
    others = graph.readers(node.name) or node.name in graph.outputs[1:]
    penalized = node.layer.activity_regularizer is not None  # Keras' activity penalty reads the activated output
    return fuse_output_activation and not others and not penalized and output_activation(node.layer) in ("softmax", "sigmoid")


def build_network(model: ModelSpec, *, fuse_output_activation: bool) -> Network:
    """The torch module for `model`: one named block per spec layer, run in the graph's order."""
    graph = resolve(model)
    shapes = {i.name: i.shape for i in graph.inputs} | {n.name: n.shape for n in graph.nodes}
    last_read = {source: position for position, node in enumerate(graph.nodes) for source in node.sources}
    keep = set(graph.outputs)
    blocks: dict[str, nn.Module] = {}
    steps, penalties, constraints = [], [], []
    head: nn.Module = nn.Identity()
    for position, node in enumerate(graph.nodes):
        layer = node.layer
        core = _BUILDERS[layer.type](layer, shapes[node.sources[0]], node.shape)
        weights = getattr(layer, "layer", layer)  # a Bidirectional's weights are its wrapped RNN's, with its arguments
        if layer.trainable and weights.trainable:  # Keras regularizes and constrains only what trains
            penalties += weight_penalties(weights, core)
            if (constraint := kernel_constraint(layer, core)) is not None:
                constraints.append(constraint)
        else:
            _freeze(core)
        activation = activation_module(output_activation(layer))
        if node.name == graph.outputs[0] and _lift_head(graph, node, fuse_output_activation):
            head, activation = activation, nn.Identity()
        blocks[node.name] = core if isinstance(activation, nn.Identity) else nn.Sequential(core, activation)
        release = tuple(s for s in dict.fromkeys(node.sources) if last_read[s] == position and s not in keep)
        steps.append(Step(node.name, node.sources, node.is_merge, release, activity_penalty(layer.activity_regularizer)))
    body = GraphBody([i.name for i in graph.inputs], steps, list(graph.outputs), blocks)
    layout = [InputLayout(i.name, i.shape, torch.int64 if i.dtype == "int64" else torch.float32) for i in graph.inputs]
    return Network(body, head, layout, penalties=penalties, constraints=constraints)


def _freeze(module: nn.Module) -> None:
    """A layer with `trainable: false` gets no gradient; its BatchNormalization runs on its moving statistics, as in Keras."""
    for param in module.parameters():
        param.requires_grad_(False)
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.train = partial(_stay_in_eval, norm)  # type: ignore[method-assign,assignment]
            norm.eval()


def thaw(module: nn.Module) -> list[nn.Parameter]:
    """Undo `trainable: false` for fine-tuning: gradients again. BatchNormalization stays on its moving statistics, as
    Keras' fine-tuning recipe keeps it (`training=False`): only its scale and offset learn."""
    params = list(module.parameters())
    for param in params:
        param.requires_grad_(True)
    return params


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def parameter_count(network: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in network.parameters())
