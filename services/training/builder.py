"""Turns a ModelSpec into a torch module with Keras semantics: layouts, defaults and initialisers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from services.spec import ModelSpec, Shape, infer_shapes, output_activation
from services.training import modules as m

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


def _glorot(layer: nn.Module) -> nn.Module:
    """Keras' defaults: glorot_uniform kernels, zero biases."""
    nn.init.xavier_uniform_(layer.weight)  # type: ignore[arg-type]
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
    return layer


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': the output is ceil(size / stride) long; any odd pixel is padded at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(layer: Any, shape: Shape) -> nn.Module:
    rank = len(shape) - 1
    kernel = m_pair(layer.kernel_size, rank)
    stride = m_pair(layer.strides, rank)
    conv_cls = nn.Conv1d if rank == 1 else nn.Conv2d
    conv = _glorot(conv_cls(shape[-1], layer.filters, kernel, stride=stride, bias=layer.use_bias))  # type: ignore[arg-type]
    if layer.padding == "valid":
        return m.ChannelsFirst(conv, len(shape) + 1)
    pads = [_same_padding(size, k, s) for size, k, s in zip(shape[:-1], kernel, stride, strict=True)]
    amounts = tuple(p for before_after in reversed(pads) for p in before_after)  # F.pad: last axis first
    return m.ChannelsFirst(nn.Sequential(m.Pad(amounts), conv), len(shape) + 1)


def _conv_transpose(layer: Any, shape: Shape) -> nn.Module:
    (kh, kw), (sh, sw) = m_pair(layer.kernel_size, 2), m_pair(layer.strides, 2)
    conv = _glorot(nn.ConvTranspose2d(shape[-1], layer.filters, (kh, kw), stride=(sh, sw), bias=layer.use_bias))
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
    for name, param in rnn.named_parameters():
        if name.startswith("weight_ih"):
            for gate in param.chunk(param.shape[0] // layer.units):
                nn.init.xavier_uniform_(gate)
        elif name.startswith("weight_hh"):
            for gate in param.chunk(param.shape[0] // layer.units):
                nn.init.orthogonal_(gate)
        else:
            nn.init.zeros_(param)
            if kind == "LSTM" and name.startswith("bias_ih"):
                nn.init.ones_(param[layer.units : 2 * layer.units])  # Keras' unit_forget_bias
    return m.Recurrent(rnn, dropout=layer.dropout, return_sequences=layer.return_sequences, merge_mode=merge_mode)


def _transformer(layer: Any, shape: Shape) -> nn.Module:
    activation = layer.activation if layer.activation in ("relu", "gelu") else activation_module(layer.activation)
    return nn.TransformerEncoderLayer(
        d_model=shape[-1], nhead=layer.num_heads, dim_feedforward=layer.ff_dim, dropout=layer.dropout,
        activation=activation, batch_first=True, norm_first=False, layer_norm_eps=1e-5,
    )  # fmt: skip


def _embedding(layer: Any, shape: Shape) -> nn.Module:
    embedding = nn.Embedding(layer.input_dim, layer.output_dim)
    nn.init.uniform_(embedding.weight, -0.05, 0.05)  # Keras' default initializer
    return embedding


_BUILDERS: dict[str, Callable[[Any, Shape, Shape], nn.Module]] = {
    "Dense": lambda layer, shape, out: _glorot(nn.Linear(shape[0], layer.units, bias=layer.use_bias)),
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
}


def m_pair(value: int | tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if value is None:  # shape inference fills every size in before a module is built
        raise ValueError("a layer size reached the builder unset: run shape inference on the spec first")
    return (value,) * rank if isinstance(value, int) else tuple(value)


class Normalize(nn.Module):
    """(x - shift) / scale with statistics of the training split, so clients send raw values."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class Network(nn.Module):
    """`normalize`, then `body`, which produces what the loss reads; `head` is the output activation export adds.

    Cross-entropy is computed on logits for stability, so a final softmax or sigmoid is lifted
    out of the body into the head: training sees logits, ONNX outputs probabilities.
    """

    def __init__(self, body: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.normalize: nn.Module = nn.Identity()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.normalize(x)))

    def trainable(self) -> nn.Module:
        """What the training loop runs: raw inputs in, the loss's inputs (logits) out."""
        return nn.Sequential(self.normalize, self.body)

    @property
    def outputs_logits(self) -> bool:
        return not isinstance(self.head, nn.Identity)


def build_network(model: ModelSpec, *, fuse_output_activation: bool) -> Network:
    """The torch module for `model`: one block per spec layer, so shapes can be checked layer by layer."""
    shape: Shape = tuple(model.input_shape)
    blocks: list[nn.Module] = []
    head: nn.Module = nn.Identity()
    for index, (layer, out_shape) in enumerate(zip(model.layers, infer_shapes(model), strict=True)):
        core = _BUILDERS[layer.type](layer, shape, out_shape)
        activation = activation_module(output_activation(layer))
        last = index == len(model.layers) - 1
        if last and fuse_output_activation and isinstance(activation, nn.Softmax | nn.Sigmoid):
            head, activation = activation, nn.Identity()
        blocks.append(core if isinstance(activation, nn.Identity) else nn.Sequential(core, activation))
        shape = out_shape
    return Network(nn.Sequential(*blocks), head)


def parameter_count(network: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in network.parameters())
