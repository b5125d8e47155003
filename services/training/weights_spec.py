"""What a spec says about a layer's weights, applied to its torch module: Keras' initializers, the
regularizers' penalty and the kernel constraints.

Keras and torch lay kernels out differently (a Dense kernel is `(in, out)` in Keras, `(out, in)` in
torch). Initializers read fans as Keras does, and constraint axes are given in Keras' layout and
mapped to torch's here, so a spec means in Kiln what it means in Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from services.spec.base import LayerSpec, Regularizer
from services.spec.weights import Constraint, Initializer

TRUNCATED_STDDEV = 0.87962566103423978  # the stddev of a unit normal truncated at two stddevs, as Keras corrects for
EPSILON = 1e-7  # keras.config.epsilon()

# Keras kernel axis -> torch weight axis, by the layer's torch module.
_KERAS_AXES: dict[type[nn.Module], dict[int, int]] = {
    nn.Linear: {0: 1, 1: 0},  # (in, out) -> (out, in)
    nn.Conv1d: {0: 2, 1: 1, 2: 0},  # (k, in, out) -> (out, in, k)
    nn.Conv2d: {0: 2, 1: 3, 2: 1, 3: 0},  # (kh, kw, in, out) -> (out, in, kh, kw)
    nn.ConvTranspose2d: {0: 2, 1: 3, 2: 1, 3: 0},  # (kh, kw, out, in) -> (in, out, kh, kw)
    nn.Embedding: {0: 0, 1: 1},
}
_VARIANCE_SCALING = {  # name: (scale, fan mode, distribution)
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated"),
}


def fans(weight: torch.Tensor, *, keras_in_first: bool = False) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them for the kernel this torch weight holds.

    torch weights put the output axis first (`(out, in, *window)`), which gives Keras' fans for Dense and the
    convolutions; an Embedding's table is `(input_dim, output_dim)` in both (`keras_in_first`).
    """
    shape = weight.shape
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    first, second = shape[0] * receptive, shape[1] * receptive
    return (first, second) if keras_in_first else (second, first)


@torch.no_grad()
def initialize(weight: torch.Tensor, spec: Initializer, *, keras_in_first: bool = False) -> None:
    """Fill `weight` as Keras' initializer of that name would."""
    name = spec.name
    if name in _VARIANCE_SCALING:
        scale, mode, distribution = _VARIANCE_SCALING[name]
        fan_in, fan_out = fans(weight, keras_in_first=keras_in_first)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, fan)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            weight.uniform_(-limit, limit)
        else:
            stddev = math.sqrt(variance) / TRUNCATED_STDDEV
            nn.init.trunc_normal_(weight, 0.0, stddev, -2 * stddev, 2 * stddev)
    elif name in ("zeros", "ones", "constant"):
        weight.fill_({"zeros": 0.0, "ones": 1.0}.get(name, spec.value))
    elif name == "random_normal":
        weight.normal_(spec.mean, spec.stddev)
    elif name == "random_uniform":
        weight.uniform_(spec.minval, spec.maxval)
    elif name == "truncated_normal":
        nn.init.trunc_normal_(weight, spec.mean, spec.stddev, spec.mean - 2 * spec.stddev, spec.mean + 2 * spec.stddev)
    else:  # orthogonal
        nn.init.orthogonal_(weight, gain=spec.gain)


def kernel_module(module: nn.Module) -> nn.Module | None:
    """The torch module holding a layer's kernel (inside padding and layout wrappers), if it has one."""
    return next((m for m in module.modules() if type(m) in _KERAS_AXES), None)


def _size(tensor: torch.Tensor, regularizer: Regularizer) -> torch.Tensor:
    penalty = tensor.new_zeros(())
    if regularizer.l1:
        penalty = penalty + regularizer.l1 * tensor.abs().sum()
    if regularizer.l2:
        penalty = penalty + regularizer.l2 * tensor.square().sum()
    return penalty


Penalty = Callable[[], torch.Tensor]


def weight_penalties(layer: LayerSpec, module: nn.Module) -> list[Penalty]:
    """The layer's kernel, recurrent and bias regularizers, each a function of the current weights (of a trainable layer:
    Keras regularizes trainable weights only, and the builder asks only for those)."""
    wanted: list[tuple[Regularizer | None, Callable[[], list[torch.Tensor]]]] = []
    rnn = next((m for m in module.modules() if isinstance(m, nn.RNNBase)), None)
    kernel = kernel_module(module)
    if rnn is not None:
        named = dict(rnn.named_parameters())
        kernels: list[torch.Tensor] = [p for n, p in named.items() if n.startswith("weight_ih")]
        recurrent: list[torch.Tensor] = [p for n, p in named.items() if n.startswith("weight_hh")]
        wanted += [(getattr(layer, "kernel_regularizer", None), lambda: kernels),
                   (getattr(layer, "recurrent_regularizer", None), lambda: recurrent),
                   (getattr(layer, "bias_regularizer", None), lambda: _rnn_biases(rnn))]  # fmt: skip
    elif kernel is not None:
        weight, bias = kernel.weight, getattr(kernel, "bias", None)
        regularizer = getattr(layer, "embeddings_regularizer", None) or getattr(layer, "kernel_regularizer", None)
        wanted.append((regularizer, lambda: [weight]))  # type: ignore[list-item]
        if bias is not None:
            wanted.append((getattr(layer, "bias_regularizer", None), lambda: [bias]))
    return [_penalty(r, get) for r, get in wanted if r is not None and r.active]


def _penalty(regularizer: Regularizer, tensors: Callable[[], list[torch.Tensor]]) -> Penalty:
    def penalty() -> torch.Tensor:
        terms = [_size(t, regularizer) for t in tensors()]
        return torch.stack(terms).sum()

    return penalty


def _rnn_biases(rnn: nn.RNNBase) -> list[torch.Tensor]:
    """Keras' bias of an RNN: one vector per direction (torch's two, summed), two for a GRU (reset_after keeps both)."""
    named = dict(rnn.named_parameters())
    pairs = [(named[n], named[n.replace("bias_ih", "bias_hh")]) for n in named if n.startswith("bias_ih")]
    if isinstance(rnn, nn.GRU):
        return [t for pair in pairs for t in pair]
    return [ih + hh for ih, hh in pairs]


def kernel_constraint(layer: LayerSpec, module: nn.Module) -> Callable[[], None] | None:
    """The layer's kernel constraint, applied in place after each optimizer step."""
    constraint: Constraint | None = getattr(layer, "kernel_constraint", None) or getattr(layer, "embeddings_constraint", None)
    kernel = kernel_module(module)
    if constraint is None or kernel is None:
        return None
    axes_map = _KERAS_AXES[type(kernel)]
    weight: torch.Tensor = kernel.weight  # type: ignore[assignment]
    dims = [axes_map[a % weight.ndim] for a in constraint.axes()]

    @torch.no_grad()
    def apply() -> None:
        if constraint.name == "non_neg":
            weight.mul_((weight >= 0).to(weight.dtype))
            return
        norms = weight.square().sum(dim=dims, keepdim=True).sqrt()
        if constraint.name == "unit_norm":
            weight.div_(norms + EPSILON)
        else:
            weight.mul_(norms.clamp(max=constraint.max_value) / (norms + EPSILON))

    return apply


def activity_penalty(regularizer: Regularizer | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Keras 3's activity regularizer: the penalty on a layer's output, divided by the batch size."""
    if regularizer is None or not regularizer.active:
        return None
    return lambda output: _size(output.float(), regularizer) / output.shape[0]
