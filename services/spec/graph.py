"""A model as a graph of named layers, resolved and shape-checked in pure Python.

A Sequential model is the graph whose every layer reads the one before it. A functional model names
what each layer reads; its layers may be listed in any order. Resolution finds each layer's sources,
orders the layers so every one comes after what it reads (refusing cycles), infers every output shape,
and checks that everything listed is used. Every refusal is an InvalidSpec naming the layer, its field,
and the shapes it received.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from services.errors import InvalidSpec
from services.spec.base import Shape, ShapeError, show
from services.spec.layers_merge import ConcatenateLayer, MergeLayer
from services.spec.layers_sequence import EmbeddingLayer
from services.spec.model import Layer, ModelSpec


@dataclass(frozen=True)
class Node:
    """One layer in the resolved graph."""

    index: int  # its position in `model.layers`, for error fields
    layer: Layer
    sources: tuple[str, ...]  # the names it reads: model inputs or layers
    shape: Shape  # one sample's output, without the batch axis
    parameters: int  # as torch counts them
    activations: int  # values per sample kept for the backward pass

    @property
    def name(self) -> str:
        return str(self.layer.name)

    @property
    def field(self) -> str:
        return f"model.layers[{self.index}]"

    @property
    def is_merge(self) -> bool:
        return isinstance(self.layer, MergeLayer | ConcatenateLayer)


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: Shape
    dtype: str  # int64 when Embedding reads it (token ids), else float32


@dataclass(frozen=True)
class Graph:
    inputs: tuple[GraphInput, ...]
    nodes: tuple[Node, ...]  # every layer after what it reads
    outputs: tuple[str, ...]  # layer names, the first one trained on

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def output(self) -> Node:
        """The output training reads."""
        return self.node(self.outputs[0])

    def readers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.sources]

    @property
    def input_values(self) -> int:
        """Values per sample across every input."""
        return sum(math.prod(i.shape) for i in self.inputs)

    def by_index(self) -> list[Node]:
        """The nodes in the order of `model.layers`."""
        return sorted(self.nodes, key=lambda n: n.index)


def describe(index: int, layer: Layer) -> str:
    """How an error names a layer: `layer 3 'dense_1' (Dense)`."""
    return f"layer {index} '{layer.name}' ({layer.type})"


def resolve(model: ModelSpec) -> Graph:
    """The model's graph, shape-checked; cached on the (immutable) spec."""
    cached = model._graph
    if cached is None:
        cached = model._graph = _resolve(model)
    assert isinstance(cached, Graph)
    return cached


def _resolve(model: ModelSpec) -> Graph:
    names = list(model.input_names) + [str(layer.name) for layer in model.layers]
    duplicated = [name for name, count in Counter(names).items() if count > 1]
    if duplicated:
        index = max((i for i, layer in enumerate(model.layers) if layer.name == duplicated[0]), default=None)
        field = f"model.layers[{index}].name" if index is not None else "model.inputs"
        why = "layer and input names must be unique"
        if model.inputs is None and duplicated[0] == model.input_names[0]:
            why = f"'{duplicated[0]}' names a Sequential model's input (the one its layers read first): name the layer otherwise"
        raise InvalidSpec(f"the name '{duplicated[0]}' is used more than once: {why}", field=field)
    sources = _sources(model)
    order = _order(model, sources)
    shapes: dict[str, Shape] = dict(zip(model.input_names, model.input_shapes, strict=True))
    nodes = []
    for index in order:
        layer = model.layers[index]
        received = [shapes[source] for source in sources[index]]
        try:
            if isinstance(layer, MergeLayer | ConcatenateLayer):
                output = layer.merge_shape(received)
            elif len(received) != 1:
                got = ", ".join(map(show, received))
                raise ShapeError(f"reads one input, got {len(received)} ({got}): merge them first, with Add or Concatenate")
            else:
                output = layer.output_shape(received[0])
        except ShapeError as err:
            raise InvalidSpec(f"{describe(index, layer)} {err}", field=f"model.layers[{index}]") from None
        shapes[str(layer.name)] = output
        cost = layer.parameter_count(received[0]), layer.activation_count(received[0], output)
        nodes.append(Node(index, layer, sources[index], output, *cost))
    graph = Graph(_inputs(model, nodes), tuple(nodes), tuple(model.output_names))
    _check_used(model, graph)
    return graph


def _sources(model: ModelSpec) -> list[tuple[str, ...]]:
    """What each layer reads: its `inputs`, else the previous layer (the one model input, for the first)."""
    known = set(model.input_names) | {str(layer.name) for layer in model.layers}
    sources = []
    for index, layer in enumerate(model.layers):
        if layer.inputs is not None:
            for name in layer.inputs:
                if name not in known:
                    listed = ", ".join(sorted(known))
                    raise InvalidSpec(f"{describe(index, layer)} reads '{name}', which is neither a model input nor a layer: "
                                      f"known names are {listed}", field=f"model.layers[{index}].inputs")  # fmt: skip
            sources.append(tuple(layer.inputs))
        elif index > 0:
            sources.append((str(model.layers[index - 1].name),))
        elif len(model.input_names) == 1:
            sources.append((model.input_names[0],))
        else:
            raise InvalidSpec(f"{describe(index, layer)} does not say which input it reads: the model has "
                              f"{len(model.input_names)}; list them in 'inputs'", field=f"model.layers[{index}].inputs")  # fmt: skip
    return sources


def _order(model: ModelSpec, sources: list[tuple[str, ...]]) -> list[int]:
    """The layer indices, each after every layer it reads, as listed where possible; a cycle is refused."""
    position = {str(layer.name): index for index, layer in enumerate(model.layers)}
    waiting = {index: {position[s] for s in sources[index] if s in position} for index in range(len(model.layers))}
    order: list[int] = []
    done: set[int] = set()
    while waiting:
        ready = [index for index, needs in waiting.items() if needs <= done]
        if not ready:
            stuck = sorted(waiting)
            cycle = ", ".join(f"'{model.layers[i].name}'" for i in stuck)
            first = model.layers[stuck[0]]
            raise InvalidSpec(f"{describe(stuck[0], first)} is in a cycle: layers {cycle} read each other, so none can go first",
                              field=f"model.layers[{stuck[0]}].inputs")  # fmt: skip
        index = min(ready)
        order.append(index)
        done.add(index)
        del waiting[index]
    return order


def _inputs(model: ModelSpec, nodes: list[Node]) -> tuple[GraphInput, ...]:
    """The model inputs, with the dtype their readers need: token ids for Embedding, float32 otherwise."""
    inputs = []
    for name, shape in zip(model.input_names, model.input_shapes, strict=True):
        readers = [n for n in nodes if name in n.sources]
        tokens = [n for n in readers if isinstance(n.layer, EmbeddingLayer)]
        if tokens and len(tokens) != len(readers):
            other = next(n for n in readers if not isinstance(n.layer, EmbeddingLayer))
            raise InvalidSpec(f"{describe(other.index, other.layer)} reads input '{name}', which holds token ids for "
                              f"Embedding '{tokens[0].name}': only Embedding layers can read token ids", field=other.field)  # fmt: skip
        inputs.append(GraphInput(name, shape, "int64" if tokens else "float32"))
    for node in nodes:
        if isinstance(node.layer, EmbeddingLayer) and node.sources[0] not in model.input_names:
            raise InvalidSpec(f"{describe(node.index, node.layer)} must read a model input: it reads integer token ids, "
                              f"not the output of '{node.sources[0]}'", field=node.field)  # fmt: skip
    return tuple(inputs)


def _check_used(model: ModelSpec, graph: Graph) -> None:
    """Every output is a layer, and every input and layer leads to an output."""
    layer_names = {n.name for n in graph.nodes}
    for position, name in enumerate(graph.outputs):
        if name not in layer_names:
            raise InvalidSpec(f"output '{name}' is not a layer: expected one of {', '.join(sorted(layer_names))}",
                              field=f"model.outputs[{position}]")  # fmt: skip
    if len(set(graph.outputs)) != len(graph.outputs):
        raise InvalidSpec("model.outputs lists a layer twice", field="model.outputs")
    reached, stack = set(), list(graph.outputs)
    sources = {n.name: n.sources for n in graph.nodes}
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(sources.get(name, ()))
    for name in model.input_names:
        if name not in reached:
            raise InvalidSpec(f"input '{name}' is read by no layer that leads to an output", field="model.inputs")
    for node in graph.by_index():
        if node.name not in reached:
            raise InvalidSpec(f"{describe(node.index, node.layer)} leads to no output: list it in model.outputs, or remove it",
                              field=node.field)  # fmt: skip
