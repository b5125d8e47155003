"""The torch side of a model graph: named layers run in the graph's order, merges, and the whole network
with its normalisation, output head, weight penalties and constraints.

`Network.forward` takes one tensor per model input and returns every output (what ONNX exports).
Training reads rows as one tensor, so `Network.trainable()` takes the inputs packed side by side in
each row, splits them, and returns the first output as the loss reads it (logits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn


class Merge(nn.Module):
    """Keras' merge layers over tensors of one shape, and Concatenate along a Keras axis (0 is the batch)."""

    def __init__(self, kind: str, axis: int = -1) -> None:
        super().__init__()
        self.kind, self.axis = kind, axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        kind = self.kind
        if kind == "Concatenate":
            return torch.cat(xs, dim=self.axis)
        if kind == "Subtract":
            return xs[0] - xs[1]
        out = xs[0]
        for x in xs[1:]:
            if kind in ("Add", "Average"):
                out = out + x
            elif kind == "Multiply":
                out = out * x
            else:
                out = torch.maximum(out, x) if kind == "Maximum" else torch.minimum(out, x)
        return out / len(xs) if kind == "Average" else out


@dataclass(frozen=True)
class Step:
    """One layer's run: what it reads, and which values nothing after it reads (freed at once)."""

    name: str
    sources: tuple[str, ...]
    merge: bool
    release: tuple[str, ...]
    activity: Callable[[torch.Tensor], torch.Tensor] | None = None  # the layer's activity regularizer


class GraphBody(nn.Module):
    """Named layers (`layers[name]`, so weights, checkpoints and ONNX nodes carry the spec's names), run in order."""

    def __init__(self, inputs: list[str], steps: list[Step], outputs: list[str], layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.input_names, self.steps, self.output_names = inputs, steps, outputs
        self.layers = nn.ModuleDict(layers)
        self.activity_loss: torch.Tensor | None = None  # set by each training forward when a layer has an activity regularizer
        self.has_activity = any(step.activity is not None for step in steps)
        # A plain chain (each layer reads the one before, one input, the last layer the one output) runs as nn.Sequential
        # would: no name lookups on the hot path of small models.
        chain = len(inputs) == 1 and outputs == [steps[-1].name] and not self.has_activity and all(
            step.sources == ((steps[i - 1].name if i else inputs[0]),) for i, step in enumerate(steps))  # fmt: skip
        self.chain: list[nn.Module] | None = [self.layers[step.name] for step in steps] if chain else None

    def __iter__(self) -> Iterator[nn.Module]:
        """The layers' modules, in the order they run."""
        return (self.layers[step.name] for step in self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, position: int) -> nn.Module:
        return self.layers[self.steps[position].name]

    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        if self.chain is not None:
            (x,) = xs
            for module in self.chain:
                x = module(x)
            return [x]
        values = dict(zip(self.input_names, xs, strict=True))
        activity: torch.Tensor | None = None
        for step in self.steps:
            module = self.layers[step.name]
            out = module(*(values[s] for s in step.sources)) if step.merge else module(values[step.sources[0]])
            values[step.name] = out
            if step.activity is not None and self.training:
                term = step.activity(out)
                activity = term if activity is None else activity + term
            for name in step.release:
                del values[name]
        if self.has_activity:
            self.activity_loss = activity
        return [values[name] for name in self.output_names]


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


@dataclass(frozen=True)
class InputLayout:
    """One model input: its per-sample shape and dtype, and so its slice of a packed row."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Network(nn.Module):
    """Per-input `normalize`, then `body`; `head` is the output activation export adds to the first output.

    Cross-entropy is computed on logits for stability, so a final softmax or sigmoid is lifted out of the
    body into the head: training sees logits, ONNX outputs probabilities.
    """

    def __init__(self, body: GraphBody, head: nn.Module, inputs: list[InputLayout], *,
                 penalties: list[Callable[[], torch.Tensor]] | None = None,
                 constraints: list[Callable[[], None]] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.normalize = nn.ModuleList(nn.Identity() for _ in inputs)
        self.body = body
        self.head = head
        self.layout = inputs
        self._penalties = penalties or []
        self._constraints = constraints or []

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.body(*(normalize(x) for normalize, x in zip(self.normalize, xs, strict=True)))
        first = self.head(outputs[0])
        return first if len(outputs) == 1 else (first, *outputs[1:])

    def trainable(self) -> nn.Module:
        """What the training loop runs: raw (packed) inputs in, the loss's inputs (logits) out."""
        return Trainable(self)

    @property
    def outputs_logits(self) -> bool:
        return not isinstance(self.head, nn.Identity)

    def penalty(self) -> torch.Tensor | None:
        """The regularizers' share of the training loss after the last forward, or None without regularizers."""
        terms = [penalty() for penalty in self._penalties]
        if self.body.activity_loss is not None:
            terms.append(self.body.activity_loss)
        return torch.stack([t.to(terms[0].device) for t in terms]).sum() if terms else None

    @property
    def regularized(self) -> bool:
        return bool(self._penalties) or any(step.activity is not None for step in self.body.steps)

    def constrain(self) -> None:
        for constraint in self._constraints:
            constraint()

    @property
    def constrained(self) -> bool:
        return bool(self._constraints)


class Trainable(nn.Module):
    """A network as training runs it: one tensor of rows (the inputs side by side when there are several) in, logits out."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        network = self.network
        layout, chain = network.layout, network.body.chain
        if chain is not None:  # one input: normalise it and run the layers in turn
            normalize = network.normalize[0]
            x = x if isinstance(normalize, nn.Identity) else normalize(x)
            for module in chain:
                x = module(x)
            return x
        if len(layout) == 1:
            xs: list[torch.Tensor] = [x]
        else:
            parts = torch.split(x.reshape(len(x), -1), [i.size for i in layout], dim=1)
            xs = [part.reshape(len(x), *i.shape).to(i.dtype) for part, i in zip(parts, layout, strict=True)]
        normalized = [t if isinstance(n, nn.Identity) else n(t) for n, t in zip(network.normalize, xs, strict=True)]
        return network.body(*normalized)[0]

    def penalty(self) -> torch.Tensor | None:
        return self.network.penalty()

    def constrain(self) -> None:
        self.network.constrain()
