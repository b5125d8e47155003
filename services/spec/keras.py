"""Keras' `model.to_json()` in and out of Kiln's model dict: Sequential and functional models, Keras 3 and Keras 2
(tf.keras) JSON. Plain dicts: the spec's pydantic models validate what comes out. The per-class vocabulary is in
services.spec.keras_layers; errors name a path into the posted body, `model.config.layers[3].config.dilation_rate`."""

from __future__ import annotations

import re
from typing import Any

from services.errors import InvalidSpec
from services.spec.keras_layers import (
    COMMON,
    COMMON_IGNORED,
    KERAS_CLASSES,
    KILN_ONLY,
    MERGES,
    RECURRENT,
    REQUIRED,
    check_float32,
    keras_value,
    kiln_value,
    refuse,
    shown,
)
from services.spec.model import SEQUENTIAL_INPUT, ModelSpec

MODEL = "model"  # where the model sits in a job's body
MODEL_KEYS = {"module", "class_name", "config", "registered_name", "build_config", "compile_config", "keras_version", "backend"}
LAYER_KEYS = {"module", "class_name", "config", "registered_name", "build_config", "name", "inbound_nodes"}
SEQUENTIAL_KEYS = {"name", "trainable", "dtype", "layers", "build_input_shape"}
FUNCTIONAL_KEYS = {"name", "trainable", "dtype", "layers", "input_layers", "output_layers"}
INPUT_KEYS = {"batch_shape", "batch_input_shape", "dtype", "sparse", "ragged", "optional", "name"}
INPUT_DTYPES = ("float32", "int32", "int64")  # integer inputs are token ids; Kiln picks the input dtype itself
LAYER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
FLOAT32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
SUPPORTED = ", ".join(sorted(KERAS_CLASSES))


def from_keras(data: dict[str, Any]) -> dict[str, Any]:
    """Kiln's model dict for what Keras' `model.to_json()` writes, parsed; raises InvalidSpec for anything Kiln would not
    compute the same way, naming the layer, the key and what Kiln supports."""
    try:
        return _from_keras(data)
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as err:  # JSON of a shape no Keras writes
        raise InvalidSpec(f"the model is not JSON that Keras' model.to_json() writes: {type(err).__name__}: {err}", field=MODEL) from None


def _from_keras(data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        refuse("expected Keras' model.to_json(): an object with class_name and config", MODEL)
    _known_keys(data, MODEL_KEYS, "the model", MODEL)
    class_name, config = data.get("class_name"), data["config"]
    if data.get("registered_name") not in (None, class_name):
        refuse(f"the model is the custom class '{data['registered_name']}': give a Sequential or functional model's to_json()", MODEL)
    if class_name == "Sequential":
        model = _from_sequential(config)
    elif class_name in ("Functional", "Model"):  # Keras 2 calls a functional model "Model"
        model = _from_functional(config)
    else:
        refuse(f"a {class_name} model cannot be translated: give a Sequential or functional model's to_json()", f"{MODEL}.class_name")
    if config.get("trainable", True) is False:  # a frozen model freezes every layer
        for layer in model["layers"]:
            layer["trainable"] = False
    return model


def _from_sequential(config: dict[str, Any]) -> dict[str, Any]:
    _known_keys(config, SEQUENTIAL_KEYS, "the Sequential model", f"{MODEL}.config")
    check_float32(config.get("dtype"), who="the model", field=f"{MODEL}.config.dtype")
    shape: list[int] | None = None
    layers: list[dict[str, Any]] = []
    rank = 0  # of the next layer's input, without the batch axis
    for index, entry in enumerate(_layer_list(config)):
        field = f"{MODEL}.config.layers[{index}]"
        class_name, layer_config, _, who = _parts(entry, index=index, field=field)
        if class_name == "InputLayer" and index == 0:
            shape = _input(layer_config, who=who, field=field)
            continue
        if shape is None:  # Keras 2 writes the input shape on the first layer, or on a model built without an Input
            where = f"{field}.config.batch_input_shape" if "batch_input_shape" in layer_config else f"{MODEL}.config.build_input_shape"
            given = layer_config.get("batch_input_shape", config.get("build_input_shape"))
            shape = _shape(given, who="the model's input", field=where)
        rank = _output_rank(layers[-1], [rank]) if layers else len(shape)
        layers.append(_kiln_layer(entry, index=index, rank=rank, field=field))
    return {"input_shape": shape, "layers": layers}


def _from_functional(config: dict[str, Any]) -> dict[str, Any]:
    _known_keys(config, FUNCTIONAL_KEYS, "the functional model", f"{MODEL}.config")
    check_float32(config.get("dtype"), who="the model", field=f"{MODEL}.config.dtype")
    shapes: dict[str, list[int]] = {}
    ranks: dict[str, int] = {}  # without the batch axis, of each input and layer output so far
    layers: list[dict[str, Any]] = []
    for index, entry in enumerate(_layer_list(config)):
        field = f"{MODEL}.config.layers[{index}]"
        class_name, layer_config, name, who = _parts(entry, index=index, field=field)
        if class_name == "InputLayer":
            shapes[name] = _input(layer_config, who=who, field=field)
            ranks[name] = len(shapes[name])
            continue
        sources = _sources(entry, who=who, field=f"{field}.inbound_nodes")
        unknown = [source for source in sources if source not in ranks]
        if unknown:
            refuse(f"{who} reads '{unknown[0]}', which is no input or earlier layer", f"{field}.inbound_nodes")
        layer = _kiln_layer(entry, index=index, rank=ranks[sources[0]], field=field)
        ranks[name] = _output_rank(layer, [ranks[source] for source in sources])
        layers.append({"name": layer.pop("name"), "type": layer.pop("type"), "inputs": sources, **layer})
    inputs = _endpoints(config.get("input_layers"), field=f"{MODEL}.config.input_layers")
    if sorted(inputs) != sorted(shapes):
        refuse(f"the model's inputs {inputs} are not its InputLayers {sorted(shapes)}", f"{MODEL}.config.input_layers")
    outputs = _endpoints(config.get("output_layers"), field=f"{MODEL}.config.output_layers")
    if any(output not in ranks or output in shapes for output in outputs):
        refuse(f"the model's outputs {outputs} must be layers of the model", f"{MODEL}.config.output_layers")
    return {"inputs": [{"name": name, "shape": shapes[name]} for name in inputs], "layers": layers, "outputs": outputs}


def _layer_list(config: dict[str, Any]) -> list[Any]:
    layers = config.get("layers")
    if not isinstance(layers, list):
        refuse("the model's config has no list of layers", f"{MODEL}.config.layers")
    return layers


def _parts(entry: Any, *, index: int, field: str) -> tuple[str, dict[str, Any], str, str]:
    """A layer's class, config, name and how messages call it; refuses classes Kiln cannot build."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not isinstance(entry.get("config"), dict):
        refuse(f"layer {index}: expected a Keras layer, an object with class_name and config", field)
    class_name, config = entry["class_name"], entry["config"]
    name = config.get("name", entry.get("name"))
    who = f"layer {index} '{name}' ({class_name})"
    _known_keys(entry, LAYER_KEYS, who, field)
    registered, module = entry.get("registered_name"), entry.get("module")
    if registered not in (None, class_name) or (module is not None and not str(module).startswith("keras")):
        refuse(f"{who} is the custom class '{registered or module}', which Kiln cannot build: use one of {SUPPORTED}", field)
    if class_name not in KERAS_CLASSES and class_name != "InputLayer":
        refuse(f"{who}: Kiln cannot build a {class_name} layer: use one of {SUPPORTED}", field)
    if not isinstance(name, str) or not LAYER_NAME.match(name):
        refuse(f"{who}: {shown(name)} is not a Kiln layer name: use letters, digits, '_' and '-' (at most 128)", f"{field}.config.name")
    return class_name, config, name, who


def _kiln_layer(entry: Any, *, index: int, rank: int, field: str, wrapped: bool = False) -> dict[str, Any]:
    """One Keras layer as a Kiln layer dict, leaving out what equals Kiln's default; `rank`: its input's, without the batch axis."""
    class_name, config, name, who = _parts(entry, index=index, field=field)
    if wrapped and class_name not in RECURRENT:
        refuse(f"{who}: Bidirectional wraps SimpleRNN, LSTM or GRU", field)
    kind, fields = KERAS_CLASSES[class_name], {**COMMON, **KERAS_CLASSES[class_name].kiln}
    layer: dict[str, Any] = {"type": class_name} if wrapped else {"name": name, "type": class_name}
    for key, value in config.items():
        where = f"{field}.config.{key}"
        if key == "dtype":
            check_float32(value, who=who, field=where)
        elif key == "layer" and class_name == "Bidirectional":
            layer[key] = _kiln_layer(value, index=index, rank=rank, field=where, wrapped=True)
        elif key == "backward_layer" and class_name == "Bidirectional":
            _check_mirror(config.get("layer"), value, who=who, field=where)
        elif key in fields:
            layer[key] = kiln_value(key, value, kind, rank=rank, who=who, field=where)
        elif key in kind.fixed:
            if kiln_value(key, value, kind, rank=rank, who=who, field=where, choose=False) != kind.fixed[key]:
                refuse(f"{who}: {key}={shown(value)} is not supported: Kiln supports only {key}={shown(kind.fixed[key])}", where)
        elif key not in kind.ignored | COMMON_IGNORED:
            refuse(f"{who}: unknown argument '{key}': Kiln reads {', '.join(fields)}", where)
    missing = [key for key, default in fields.items() if default is REQUIRED and key not in layer]
    if missing:
        refuse(f"{who} needs {missing[0]}", f"{field}.config")
    if "pool_size" in layer and layer.get("strides") == layer["pool_size"]:
        layer["strides"] = None  # Kiln's default: the pool size, as in Keras
    return {key: value for key, value in layer.items() if key in ("name", "type") or value != fields[key]}


def _check_mirror(forward: Any, backward: Any, *, who: str, field: str) -> None:
    """Keras 3 always writes Bidirectional's backward layer; Kiln builds only the forward layer run backwards."""

    def unnamed(entry: Any) -> Any:
        config = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(config, dict):
            return entry
        return entry | {"config": {key: value for key, value in config.items() if key not in ("name", "go_backwards")}}

    if backward is not None and (unnamed(forward) != unnamed(backward) or backward["config"].get("go_backwards") is not True):
        refuse(f"{who}: a backward_layer other than the wrapped layer run backwards is not supported: leave it out", field)


def _input(config: dict[str, Any], *, who: str, field: str) -> list[int]:
    _known_keys(config, INPUT_KEYS, who, f"{field}.config")
    for key in ("sparse", "ragged", "optional"):
        if config.get(key, False) is not False:
            refuse(f"{who}: {key}={shown(config[key])} is not supported: Kiln's inputs are dense and required", f"{field}.config.{key}")
    if config.get("dtype", "float32") not in INPUT_DTYPES:
        refuse(
            f"{who}: input dtype {shown(config['dtype'])} is not supported: use one of {', '.join(INPUT_DTYPES)}", f"{field}.config.dtype"
        )
    key = "batch_shape" if "batch_shape" in config else "batch_input_shape"  # Keras 3 / Keras 2
    return _shape(config.get(key), who=who, field=f"{field}.config.{key}")


def _shape(batch: Any, *, who: str, field: str) -> list[int]:
    """`[null, 28, 28, 1]` -> `[28, 28, 1]`: one sample's shape, every axis fixed."""
    if not isinstance(batch, list) or len(batch) < 2:
        refuse(f"{who}: expected a batch shape such as [null, 784], got {shown(batch)}: build the model on keras.Input(shape)", field)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in batch[1:]):
        refuse(f"{who}: Kiln needs a fixed size on every axis but the batch axis, got {shown(batch)}", field)
    return list(batch[1:])


def _sources(entry: dict[str, Any], *, who: str, field: str) -> list[str]:
    """The names of the layers or inputs a layer's one call reads (Keras 3 or Keras 2 inbound_nodes)."""
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or len(nodes) != 1:
        count = len(nodes) if isinstance(nodes, list) else 0
        refuse(f"{who} is called on {count} inbound nodes: Kiln calls each layer once, so give each call a layer of its own", field)
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [tensor or [tensors]], "kwargs": {}}
        args = node.get("args")
        if set(node) - {"args", "kwargs"} or not _plain_call(node.get("kwargs")) or not isinstance(args, list) or len(args) != 1:
            refuse(f"{who}: Kiln calls a layer on its inputs alone, got the call {shown(node)[:200]}", field)
        tensors = args[0] if isinstance(args[0], list) else [args[0]]
        history = [
            t.get("config", {}).get("keras_history") if isinstance(t, dict) and t.get("class_name") == "__keras_tensor__" else t
            for t in tensors
        ]
    elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        if any(isinstance(item, list) and len(item) == 4 and not _plain_call(item[3]) for item in node):
            refuse(f"{who}: Kiln calls a layer on its inputs alone, got the call {shown(node)[:200]}", field)
        history = [item[:3] if isinstance(item, list) else item for item in node]
    else:
        refuse(f"{who}: inbound node {shown(node)[:200]} is neither Keras 3's nor Keras 2's form", field)
    for item in history:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)) or item[1:] != [0, 0]:
            refuse(f"{who} reads {shown(item)[:200]}: Kiln reads the one output of a layer's one call, [name, 0, 0]", field)
    return [item[0] for item in history]


def _plain_call(kwargs: Any) -> bool:
    """Whether a call's keyword arguments are those Keras records on every call: no mask, and `training` left to the model
    (Keras 3 writes `{"training": false}` for Dropout and RNNs and `{"mask": null}` for BatchNormalization, pooling, RNNs)."""
    if kwargs is None:
        return True
    return isinstance(kwargs, dict) and all(
        (key == "mask" and value is None) or (key == "training" and value in (None, False)) for key, value in kwargs.items()
    )


def _endpoints(value: Any, *, field: str) -> list[str]:
    """`["x", 0, 0]` (Keras 3, one tensor) or `[["a", 0, 0], ["b", 0, 0]]` -> the layer names."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value or any(not isinstance(v, list) or len(v) != 3 or not isinstance(v[0], str) for v in value):
        refuse(f"expected [[layer name, 0, 0], ...], got {shown(value)[:200]}", field)
    if any(v[1:] != [0, 0] for v in value):
        refuse(f"Kiln reads the one output of a layer's one call, [name, 0, 0], got {shown(value)[:200]}", field)
    return [v[0] for v in value]


def _output_rank(layer: dict[str, Any], ranks: list[int]) -> int:
    """The rank, without the batch axis, of what a Kiln layer outputs given its inputs' ranks."""
    kind, rank = layer["type"], ranks[0]
    if kind == "Bidirectional":
        return _output_rank(layer["layer"], ranks)
    if kind in RECURRENT:
        return rank if layer.get("return_sequences") else rank - 1
    if kind.startswith("Global"):
        return rank - 1
    return {"Flatten": 1, "Reshape": len(layer.get("target_shape", ())), "Embedding": rank + 1}.get(kind, rank)


def _known_keys(data: dict[str, Any], known: set[str], who: str, field: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        refuse(f"{who}: unknown key '{unknown[0]}': Kiln reads {', '.join(sorted(known))}", f"{field}.{unknown[0]}")


def model_to_keras(model: ModelSpec) -> dict[str, Any]:
    """`to_keras` of a validated model, its layers listed as Keras lists them: each after what it reads."""
    from services.spec.graph import resolve  # the graph module imports the spec model, which imports this one lazily

    dumped = model.model_dump(mode="json")
    nodes = resolve(model).nodes
    if [n.index for n in nodes] != sorted(n.index for n in nodes):
        dumped["layers"] = [dumped["layers"][n.index] | {"inputs": list(n.sources)} for n in nodes]
    return to_keras(dumped)


def to_keras(model: dict[str, Any]) -> dict[str, Any]:
    """Keras 3's `model.to_json()`, parsed, for a Kiln model dict (as `ModelSpec.model_dump(mode="json")` gives it):
    Sequential for `input_shape` and a chain of layers, functional otherwise. `keras.models.model_from_json` loads it."""
    layers = model.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        refuse("expected a list of layers", f"{MODEL}.layers")
    branched = model.get("outputs") is not None or any(layer.get("inputs") for layer in layers)
    if model.get("input_shape") is not None and not branched:
        return _to_sequential(list(model["input_shape"]), layers)
    if model.get("input_shape") is not None:  # layers that name what they read: a graph on the one input
        return _to_functional([{"name": SEQUENTIAL_INPUT, "shape": model["input_shape"]}], layers, model.get("outputs"))
    if not model.get("inputs"):
        refuse("give input_shape (a Sequential model) or inputs (a functional one)", MODEL)
    return _to_functional(model["inputs"], layers, model.get("outputs"))


def _to_sequential(shape: list[int], layers: list[dict[str, Any]]) -> dict[str, Any]:
    taken = {layer.get("name") for layer in layers}
    input_name = next(name for name in ("input_layer", *(f"input_layer_{n}" for n in range(1, len(taken) + 2))) if name not in taken)
    dtype = "int32" if layers[0].get("type") == "Embedding" else "float32"
    entries = [_input_layer(input_name, shape, dtype)]
    entries += [_keras_layer(layer, index=index, field=f"{MODEL}.layers[{index}]") for index, layer in enumerate(layers)]
    config = {"name": "sequential", "trainable": True, "dtype": FLOAT32, "layers": entries}
    return {"module": "keras", "class_name": "Sequential", "config": config, "registered_name": None}


def _to_functional(inputs: list[dict[str, Any]], layers: list[dict[str, Any]], outputs: list[str] | None) -> dict[str, Any]:
    defined = [str(spec["name"]) for spec in inputs]
    previous = defined[0] if len(defined) == 1 else None
    entries: list[dict[str, Any]] = []
    token_inputs: set[str] = set()  # inputs an Embedding reads: integer ids
    for index, layer in enumerate(layers):
        field, name = f"{MODEL}.layers[{index}]", layer.get("name")
        who = f"layer {index} '{name}' ({layer.get('type')})"
        if not name:
            refuse(f"{who} needs a name in a functional model", f"{field}.name")
        sources = layer.get("inputs") or ([previous] if previous else [])
        unknown = [source for source in sources if source not in defined]
        if not sources or unknown:
            refuse(f"{who} reads {shown(unknown or None)}: name an input or an earlier layer in inputs", f"{field}.inputs")
        if layer.get("type") == "Embedding":
            token_inputs.update(sources)
        tensors = [_tensor(source) for source in sources]
        node: dict[str, Any] = {"args": [tensors] if layer.get("type") in MERGES or len(tensors) > 1 else tensors, "kwargs": {}}
        entries.append(_keras_layer(layer, index=index, field=field) | {"name": name, "inbound_nodes": [node]})
        defined.append(name)
        previous = name
    input_entries = [
        _input_layer(spec["name"], list(spec["shape"]), "int32" if spec["name"] in token_inputs else "float32")
        | {"name": spec["name"], "inbound_nodes": []}
        for spec in inputs
    ]
    config = {
        "name": "functional",
        "trainable": True,
        "layers": input_entries + entries,
        "input_layers": _keras_endpoints([spec["name"] for spec in inputs]),
        "output_layers": _keras_endpoints(list(outputs or defined[-1:])),
    }
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": config, "registered_name": "Functional"}


def _keras_layer(layer: dict[str, Any], *, index: int, field: str) -> dict[str, Any]:
    """One Kiln layer dict as Keras 3 serializes the layer (without its graph keys)."""
    kind_name, name = layer.get("type"), layer.get("name")
    who = f"layer {index} '{name}' ({kind_name})"
    if kind_name in KILN_ONLY:
        refuse(f"{who} has no Keras class: {kind_name} is Kiln's own layer, so the model cannot be written as Keras JSON", field)
    if kind_name not in KERAS_CLASSES:
        refuse(f"{who}: unknown layer type: use one of {SUPPORTED}", f"{field}.type")
    fields = {**COMMON, **KERAS_CLASSES[kind_name].kiln}
    config: dict[str, Any] = ({"name": name} if name else {}) | {"trainable": layer.get("trainable", True), "dtype": FLOAT32}
    for key, default in fields.items():
        value = layer.get(key, default)
        if value is REQUIRED:
            refuse(f"{who} needs {key}", f"{field}.{key}")
        if key == "layer":
            config[key] = _keras_layer(value, index=index, field=f"{field}.layer")
        elif key != "trainable":
            config[key] = keras_value(key, value)
    if "data_format" in KERAS_CLASSES[kind_name].fixed:
        config["data_format"] = "channels_last"  # not Keras' configurable default
    extra = [key for key, value in layer.items() if key not in fields and key not in ("type", "name", "inputs") and value is not None]
    if extra:
        refuse(f"{who}: {extra[0]} has no Keras equivalent", f"{field}.{extra[0]}")
    return {"module": "keras.layers", "class_name": kind_name, "config": config, "registered_name": None}


def _input_layer(name: str, shape: list[int], dtype: str) -> dict[str, Any]:
    config = {"batch_shape": [None, *shape], "dtype": dtype, "sparse": False, "ragged": False, "name": name}
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None}


def _tensor(name: str) -> dict[str, Any]:
    # Loading, Keras finds the tensor by keras_history; it needs a shape and dtype present, and these are placeholders.
    return {"class_name": "__keras_tensor__", "config": {"shape": [None], "dtype": "float32", "keras_history": [name, 0, 0]}}


def _keras_endpoints(names: list[str]) -> list[Any]:
    """Keras 3 writes one input or output as `["x", 0, 0]`, several as `[["a", 0, 0], ["b", 0, 0]]`."""
    return [names[0], 0, 0] if len(names) == 1 else [[name, 0, 0] for name in names]
