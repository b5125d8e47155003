"""Transfer learning at submission: a job whose model names a `base` gets the base version's layers (up to `until`)
before its own, pinned to a version, so the worker rebuilds exactly what was checked, and copies the base's weights."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from services.errors import Conflict, InvalidSpec, NotFound
from services.registry.entities import ModelVersion
from services.registry.protocols import UnitOfWork, UowFactory
from services.spec import JobSpec, ModelSpec, TextSpec, resolve
from services.spec.graph import Graph
from services.spec.model import keras_name
from services.usecases.versions import resolve as resolve_version
from services.usecases.versions import resolve_in


def with_base(spec: JobSpec, *, uow_factory: UowFactory, uow: UnitOfWork | None = None) -> JobSpec:
    """`spec` with its base's layers in front of its own, or `spec` itself when it names no base (or is resolved). The base
    is read in `uow`'s transaction when given (SQLite has one writer: a second transaction would wait on the first)."""
    if spec.kind == "gan":
        if spec.gan.generator.base is not None or spec.gan.discriminator.base is not None:
            raise InvalidSpec("a GAN's networks take no base: transfer learning applies to supervised and autoencoder jobs",
                              field="model")  # fmt: skip
        return spec
    model = spec.network
    base = model.base
    if base is None:
        return spec
    if base.resolved:
        raise InvalidSpec("model.base.layers is set by Kiln when the job is submitted: drop it", field="model.base.layers")
    try:
        if uow is not None:
            parent = resolve_in(uow, base.model, version=base.version, alias=base.alias)
        else:
            parent = resolve_version(base.model, version=base.version, alias=base.alias, uow_factory=uow_factory)
    except NotFound as err:
        raise NotFound(err.message, field=f"model.base.{'model' if err.field == 'name' else err.field}") from None
    parent_model = _parent_model(parent)
    data = spec.data
    vocabulary = bool(parent.preprocessing and parent.preprocessing.get("kind") == "text" and data.text is None)
    if vocabulary:  # a text base's ids mean its vocabulary's words: the child tokenises as it did, unless it names its own
        assert parent.preprocessing is not None
        words = len(parent.preprocessing["vocabulary"])
        data = data.model_copy(update={"text": TextSpec(max_tokens=max(words, 3), sequence_length=parent.preprocessing["sequence_length"])})
    graph = resolve(parent_model)
    until = base.until or _default_until(graph, parent)
    names = [n.name for n in graph.nodes]
    if until not in names:
        raise InvalidSpec(f"version {parent.version} of '{parent.model_name}' has no layer '{until}'; its layers are {names}",
                          field="model.base.until")  # fmt: skip
    kept = _ancestors(graph, until)
    copied = [layer for layer in parent_model.layers if layer.name in kept]
    frozen = [layer.model_copy(update={"trainable": base.trainable and layer.trainable}) for layer in copied]
    head, renamed = _head(model, taken={str(layer.name) for layer in copied} | set(parent_model.input_names), until=until)
    expanded: dict[str, Any] = {
        "layers": [layer.model_dump(mode="json") for layer in frozen] + head,
        "outputs": [renamed.get(name, name) for name in model.outputs] if model.outputs else None,
        "base": base.model_dump(mode="json")
        | {"version": parent.version, "until": until, "layers": [str(x.name) for x in copied], "vocabulary": vocabulary},
    }
    if parent_model.inputs is None:
        expanded["input_shape"] = parent_model.input_shape
    else:
        expanded["inputs"] = [i.model_dump(mode="json") for i in parent_model.inputs if i.name in kept]
    try:
        resolved = ModelSpec.model_validate(expanded)
    except ValidationError as err:
        raise InvalidSpec(f"the model on its base does not validate: {err.errors()[0]['msg']}", field="model.layers") from None
    return spec.model_copy(update={"model": resolved, "data": data})


def _parent_model(parent: ModelVersion) -> ModelSpec:
    where = f"version {parent.version} of '{parent.model_name}'"
    if parent.task == "generator":
        raise Conflict(f"{where} is a GAN's generator: a base must be a supervised model or an autoencoder", field="model.base")
    if parent.weights_sha256 is None:
        why = (
            "was uploaded as ONNX, and converting ONNX to PyTorch weights is not available here"
            if parent.job_id is None
            else "was registered before Kiln kept PyTorch weights: train it again to use it as a base"
        )
        raise Conflict(f"{where} {why}", field="model.base")
    return ModelSpec.model_validate(parent.spec)


def _default_until(graph: Graph, parent: ModelVersion) -> str:
    """Keras' include_top=False: everything but the last layer (the one the base was trained on)."""
    source = graph.output.sources[0]
    if source in [i.name for i in graph.inputs]:
        raise InvalidSpec(f"version {parent.version} of '{parent.model_name}' has one layer: there is nothing to keep "
                          "without its top; name model.base.until", field="model.base.until")  # fmt: skip
    return source


def _ancestors(graph: Graph, name: str) -> set[str]:
    """`name` and every layer and input it reads, directly or not."""
    inputs = {i.name for i in graph.inputs}
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current not in inputs:
            stack.extend(graph.node(current).sources)
    return seen


def _head(model: ModelSpec, *, taken: set[str], until: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The job's own layers, reading `until` first; one named like a base layer gets the next free Keras name."""
    renamed: dict[str, str] = {}
    names = set(taken) | {str(layer.name) for layer in model.layers}
    for layer in model.layers:
        if str(layer.name) in taken:
            if not re.fullmatch(rf"{keras_name(layer.type)}(_\d+)?", str(layer.name)):
                raise InvalidSpec(f"the head's layer '{layer.name}' has the name of a base layer: rename it",
                                  field="model.layers")  # fmt: skip
            base, count = keras_name(layer.type), 1
            while f"{base}_{count}" in names:
                count += 1
            renamed[str(layer.name)] = f"{base}_{count}"
            names.add(renamed[str(layer.name)])
    head = []
    for position, layer in enumerate(model.layers):
        body = layer.model_dump(mode="json")
        body["name"] = renamed.get(str(layer.name), body["name"])
        if body.get("inputs") is not None:
            body["inputs"] = [renamed.get(source, source) for source in body["inputs"]]
        elif position == 0:
            body["inputs"] = [until]
        head.append(body)
    return head, renamed


def parent_record(spec: JobSpec, unfrozen: list[str] | None) -> dict[str, Any] | None:
    """What a trained version keeps of its base: which version, which layers it copied, and which of them trained
    (`unfrozen`: the base layers training.fine_tune unfroze, if training reached its second phase)."""
    base = spec.network.base if spec.kind != "gan" else None
    if base is None or base.layers is None:
        return None
    trainable = {str(layer.name): layer.trainable for layer in spec.network.layers}
    thawed = set(unfrozen or [])
    frozen = [name for name in base.layers if not trainable.get(name, False) and name not in thawed]
    return {"model": base.model, "version": base.version, "alias": base.alias, "until": base.until, "layers": base.layers,
            "frozen": frozen, "unfrozen": [name for name in base.layers if name not in frozen]}  # fmt: skip
