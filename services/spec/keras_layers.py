"""Keras' layer vocabulary as Kiln reads and writes it: per class, the config keys that become Kiln fields, the keys
Kiln does not model (they must keep Keras' default), and the keys that change nothing Kiln computes; and the value
forms (initializers, regularizers, constraints, window sizes) in both directions. Plain dicts, no keras import."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from services.errors import InvalidSpec

REQUIRED: Any = ...  # a Kiln field without a default
ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh", "softmax", "linear")
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
KILN_ONLY = ("TransformerEncoder", "PositionalEmbedding", "PatchEmbedding")
WINDOWS = ("kernel_size", "strides", "pool_size", "size", "dilation_rate", "output_padding")


@dataclass(frozen=True)
class KerasClass:
    """How one Keras layer class maps onto the Kiln layer type of the same name."""

    kiln: Mapping[str, Any]  # Kiln's fields, spelt as Keras spells them, with Kiln's default (REQUIRED: none)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # keys Kiln does not model: they must hold this (Kiln-form) value
    ignored: frozenset[str] = frozenset()  # keys that change nothing Kiln computes
    window: int = 0  # kernel_size, strides, pool_size ... are this many numbers
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # narrower than CHOICES


def _initializer(name: str, **arguments: float) -> dict[str, Any]:
    return {"name": name, **arguments}


GLOROT, ZEROS, ONES, ORTHOGONAL = (
    _initializer("glorot_uniform"),
    _initializer("zeros"),
    _initializer("ones"),
    _initializer("orthogonal", gain=1.0),
)
COMMON = {"trainable": True, "activity_regularizer": None}  # every Kiln layer has these
COMMON_IGNORED = frozenset({"name", "dtype", "batch_input_shape", "batch_size", "autocast"})  # named, checked or read elsewhere
CHOICES = {
    "activation": ACTIVATIONS,
    "padding": ("valid", "same"),
    "interpolation": ("nearest", "bilinear"),
    "merge_mode": ("concat", "sum"),
}

KERNEL = {
    "kernel_initializer": GLOROT,
    "bias_initializer": ZEROS,
    "kernel_regularizer": None,
    "bias_regularizer": None,
    "kernel_constraint": None,
}
KERNEL_FIXED = {"bias_constraint": None, "quantization_config": None, "lora_rank": None}
CONV = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": 1, "padding": "valid", "activation": "linear", "use_bias": True, **KERNEL}
CONV_FIXED = {**KERNEL_FIXED, "data_format": "channels_last", "dilation_rate": 1, "groups": 1}
RNN = {
    "units": REQUIRED, "return_sequences": False, "dropout": 0.0, "kernel_initializer": GLOROT, "recurrent_initializer": ORTHOGONAL,
    "bias_initializer": ZEROS, "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
}  # fmt: skip
RNN_FIXED = {
    "use_bias": True, "recurrent_dropout": 0.0, "return_state": False, "go_backwards": False, "stateful": False, "time_major": False,
    "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None,
}  # fmt: skip
GATED_FIXED = {**RNN_FIXED, "activation": "tanh", "recurrent_activation": "sigmoid"}
# unroll and implementation choose how the same recurrence is computed; masks (zero_output_for_mask) never reach Kiln.
RNN_IGNORED = frozenset({"seed", "unroll", "implementation", "use_cudnn", "zero_output_for_mask"})
NORM_FIXED = {
    "axis": -1, "center": True, "scale": True, "beta_initializer": ZEROS, "gamma_initializer": ONES,
    "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None,
}  # fmt: skip
POOLING = {"pool_size": 2, "strides": None, "padding": "valid"}
CHANNELS_LAST = {"data_format": "channels_last"}

KERAS_CLASSES: dict[str, KerasClass] = {
    "Dense": KerasClass({"units": REQUIRED, "activation": "linear", "use_bias": True, **KERNEL}, KERNEL_FIXED, frozenset({"lora_alpha"})),
    "Dropout": KerasClass({"rate": REQUIRED}, {"noise_shape": None}, frozenset({"seed"})),
    "Activation": KerasClass({"activation": REQUIRED}),
    "Flatten": KerasClass({}, CHANNELS_LAST),
    "Reshape": KerasClass({"target_shape": REQUIRED}),
    "BatchNormalization": KerasClass(
        {"momentum": 0.99, "epsilon": 1e-3},
        {
            **NORM_FIXED,
            "moving_mean_initializer": ZEROS,
            "moving_variance_initializer": ONES,
            "renorm": False,
            "virtual_batch_size": None,
            "adjustment": None,
        },
        frozenset({"synchronized", "fused", "renorm_clipping", "renorm_momentum"}),  # the renorm ones are read only with renorm
    ),  # fmt: skip
    "LayerNormalization": KerasClass({"epsilon": 1e-3}, {**NORM_FIXED, "rms_scaling": False}),
    "Conv1D": KerasClass(CONV, CONV_FIXED, frozenset({"lora_alpha"}), window=1),
    "Conv2D": KerasClass(CONV, CONV_FIXED, frozenset({"lora_alpha"}), window=2),
    "Conv2DTranspose": KerasClass(CONV, {**CONV_FIXED, "output_padding": None}, frozenset({"lora_alpha"}), window=2),
    **{name: KerasClass(POOLING, CHANNELS_LAST, window=1) for name in ("MaxPooling1D", "AveragePooling1D")},
    **{name: KerasClass(POOLING, CHANNELS_LAST, window=2) for name in ("MaxPooling2D", "AveragePooling2D")},
    **{
        f"Global{kind}Pooling{rank}D": KerasClass({}, {**CHANNELS_LAST, "keepdims": False})
        for kind in ("Average", "Max")
        for rank in (1, 2)
    },
    "UpSampling2D": KerasClass({"size": 2, "interpolation": "nearest"}, CHANNELS_LAST, window=2),
    "Embedding": KerasClass(
        {
            "input_dim": REQUIRED,
            "output_dim": REQUIRED,
            "embeddings_initializer": _initializer("random_uniform", minval=-0.05, maxval=0.05),
            "embeddings_regularizer": None,
            "embeddings_constraint": None,
        },
        {"mask_zero": False, "sparse": False, "quantization_config": None, "lora_rank": None},
        frozenset({"input_length", "lora_alpha"}),  # Keras 2's input_length only checks the shape the input already has
    ),  # fmt: skip
    "SimpleRNN": KerasClass({**RNN, "activation": "tanh"}, RNN_FIXED, RNN_IGNORED, choices={"activation": ("tanh", "relu")}),
    "LSTM": KerasClass(RNN, {**GATED_FIXED, "unit_forget_bias": True}, RNN_IGNORED),
    "GRU": KerasClass(RNN, {**GATED_FIXED, "reset_after": True}, RNN_IGNORED),  # torch's GRU is Keras' reset_after=True
    # backward_layer is Keras' own mirror of `layer`; keras.py checks that it is no more than that.
    "Bidirectional": KerasClass({"layer": REQUIRED, "merge_mode": "concat"}, {"num_constants": None}, frozenset({"backward_layer"})),
    **{name: KerasClass({}) for name in MERGES[:-1]},
    "Concatenate": KerasClass({"axis": -1}),
}
RECURRENT = ("SimpleRNN", "LSTM", "GRU")

# Kiln's initializer names: Keras' class and the arguments it takes (Kiln's defaults in INITIALIZER_DEFAULTS).
INITIALIZERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "glorot_uniform": ("GlorotUniform", ()), "glorot_normal": ("GlorotNormal", ()), "he_uniform": ("HeUniform", ()),
    "he_normal": ("HeNormal", ()), "lecun_uniform": ("LecunUniform", ()), "lecun_normal": ("LecunNormal", ()),
    "zeros": ("Zeros", ()), "ones": ("Ones", ()), "constant": ("Constant", ("value",)),
    "random_normal": ("RandomNormal", ("mean", "stddev")), "random_uniform": ("RandomUniform", ("minval", "maxval")),
    "truncated_normal": ("TruncatedNormal", ("mean", "stddev")), "orthogonal": ("Orthogonal", ("gain",)),
}  # fmt: skip
INITIALIZER_DEFAULTS = {"value": 0.0, "mean": 0.0, "stddev": 0.05, "minval": -0.05, "maxval": 0.05, "gain": 1.0}
# Older Keras writes the fan-scaled initializers as VarianceScaling(scale, mode, distribution).
VARIANCE_SCALING = {
    (1.0, "fan_avg", "uniform"): "glorot_uniform", (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
    (2.0, "fan_in", "uniform"): "he_uniform", (2.0, "fan_in", "truncated_normal"): "he_normal",
    (1.0, "fan_in", "uniform"): "lecun_uniform", (1.0, "fan_in", "truncated_normal"): "lecun_normal",
}  # fmt: skip
REGULARIZERS = {"L1": ("l1",), "L2": ("l2",), "L1L2": ("l1", "l2")}
CONSTRAINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "max_norm": ("MaxNorm", ("max_value", "axis")), "non_neg": ("NonNeg", ()), "unit_norm": ("UnitNorm", ("axis",))
}  # fmt: skip
CONSTRAINT_DEFAULTS: dict[str, Any] = {"max_value": 2.0, "axis": 0}


def refuse(message: str, field: str) -> NoReturn:
    raise InvalidSpec(message, field=field)


def shown(value: Any) -> str:
    return json.dumps(value)


def keras_object(value: Any, what: str, *, who: str, field: str) -> tuple[str, dict[str, Any]]:
    """The class name and config of a serialized Keras object (`{"class_name", "config"}`), refusing custom classes."""
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str) or not isinstance(value.get("config", {}), dict):
        refuse(f"{who}: {what} {shown(value)} is not a Keras object with class_name and config", field)
    class_name, module = value["class_name"], value.get("module")
    if value.get("registered_name") not in (None, class_name) or (module is not None and not str(module).startswith("keras")):
        refuse(f"{who}: {what} is the custom class '{value.get('registered_name') or class_name}', which Kiln cannot build", field)
    return class_name, dict(value.get("config") or {})


def _number(value: Any, *, who: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        refuse(f"{who}: expected a number, got {shown(value)}", field)
    return float(value)


def _float32_decimal(value: float) -> float:
    """The shortest decimal with the same float32: Keras keeps some factors as float32 (0.01 -> 0.009999999776482582)."""
    try:
        single = struct.pack("f", value)
        return next(c for c in (float(f"{value:.{d}g}") for d in range(1, 10)) if struct.pack("f", c) == single)
    except (OverflowError, StopIteration):
        return value


def kiln_initializer(value: Any, *, key: str, who: str, field: str) -> dict[str, Any]:
    """`{"class_name": "RandomNormal", "config": {"mean": 0, "stddev": 0.02, "seed": null}}` -> `{"name": "random_normal", ...}`."""
    if isinstance(value, str) and value in INITIALIZERS:
        value = {"class_name": INITIALIZERS[value][0], "config": {}}
    class_name, config = keras_object(value, key, who=who, field=field)
    config.pop("seed", None)  # Kiln seeds every weight from training.seed
    if class_name == "VarianceScaling":
        distribution = config.pop("distribution", "truncated_normal")
        scaling = (
            float(config.pop("scale", 1.0)),
            config.pop("mode", "fan_in"),
            "truncated_normal" if distribution == "normal" else distribution,
        )
        if scaling not in VARIANCE_SCALING:
            refuse(f"{who}: {key} VarianceScaling{scaling} is not supported: use a Glorot, He or LeCun initializer", field)
        class_name = INITIALIZERS[VARIANCE_SCALING[scaling]][0]
    names = {keras: name for name, (keras, _) in INITIALIZERS.items()}
    if class_name not in names:
        refuse(f"{who}: {key} {class_name} is not supported: use one of {', '.join(sorted(names))}", field)
    name = names[class_name]
    arguments = INITIALIZERS[name][1]
    for argument, given in config.items():
        if argument not in arguments and not (argument in ("input_axes", "output_axes") and given is None):
            refuse(f"{who}: {key} {class_name}({argument}={shown(given)}) is not supported: Kiln reads {list(arguments)}", field)
    return {"name": name} | {a: _number(config.get(a, INITIALIZER_DEFAULTS[a]), who=who, field=field) for a in arguments}


def kiln_regularizer(value: Any, *, key: str, who: str, field: str) -> dict[str, float] | None:
    """`{"class_name": "L2", "config": {"l2": 0.01}}` -> `{"l1": 0.0, "l2": 0.01}`."""
    if value is None:
        return None
    class_name, config = keras_object(value, key, who=who, field=field)
    factors = REGULARIZERS.get(class_name)
    if factors is None or set(config) - set(factors):
        refuse(f"{who}: {key} {class_name} {shown(config)} is not supported: use L1, L2 or L1L2", field)
    return {f: _float32_decimal(_number(config.get(f, 0.0), who=who, field=field)) if f in factors else 0.0 for f in ("l1", "l2")}


def kiln_constraint(value: Any, *, key: str, who: str, field: str) -> dict[str, Any] | None:
    """`{"class_name": "MaxNorm", "config": {"max_value": 2, "axis": 0}}` -> `{"name": "max_norm", "max_value": 2.0, "axis": 0}`."""
    if value is None:
        return None
    class_name, config = keras_object(value, key, who=who, field=field)
    names = {keras: name for name, (keras, _) in CONSTRAINTS.items()}
    name = names.get(class_name)
    if name is None or set(config) - set(CONSTRAINTS[name][1]):
        refuse(f"{who}: {key} {class_name} {shown(config)} is not supported: use MaxNorm, NonNeg or UnitNorm", field)
    constraint = {"name": name} | {a: config.get(a, CONSTRAINT_DEFAULTS[a]) for a in CONSTRAINTS[name][1]}
    if "max_value" in constraint:
        constraint["max_value"] = _number(constraint["max_value"], who=who, field=field)
    return constraint


def kiln_window(value: Any, rank: int, *, key: str, who: str, field: str) -> int | list[int] | None:
    """`[3, 3]` -> `3`, `[3, 5]` -> `[3, 5]`, `[2]` -> `2`: Kiln's form of a kernel, stride, pool or upsampling size."""
    if value is None:
        return None
    numbers = [value] * rank if isinstance(value, int) else value
    if (
        not isinstance(numbers, list | tuple)
        or len(numbers) != rank
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
    ):
        refuse(f"{who}: {key} must be {rank} whole number(s), got {shown(value)}", field)
    return numbers[0] if len(set(numbers)) == 1 else list(numbers)


def kiln_value(key: str, value: Any, kind: KerasClass, *, rank: int, who: str, field: str, choose: bool = True) -> Any:
    """One Keras config value in Kiln's form; `rank` is the layer input's rank without the batch axis.
    `choose`: refuse a value outside Kiln's choices (a key Kiln does not model is compared with its default instead)."""
    if key.endswith("_initializer"):
        return kiln_initializer(value, key=key, who=who, field=field)
    if key.endswith("_regularizer"):
        return kiln_regularizer(value, key=key, who=who, field=field)
    if key.endswith("_constraint"):
        return kiln_constraint(value, key=key, who=who, field=field)
    if key in WINDOWS and kind.window:
        return kiln_window(value, kind.window, key=key, who=who, field=field)
    if key == "target_shape" and isinstance(value, list | tuple):
        return list(value)
    if key == "data_format" and value is None:
        return "channels_last"  # Keras' image_data_format() unless configured otherwise
    if key == "axis" and "center" in kind.fixed:
        return -1 if value in (rank, [rank], [-1]) else value  # normalisations: Keras 2 writes the last axis as [rank]
    choices = kind.choices.get(key, CHOICES.get(key))
    if choose and choices is not None and value not in choices:
        refuse(f"{who}: {key} {shown(value)} is not supported: use one of {', '.join(choices)}", field)
    return value


def check_float32(policy: Any, *, who: str, field: str) -> None:
    """Kiln trains in float32: a mixed, half or double precision policy would change what the layer computes."""
    name = (policy.get("config") or {}).get("name") if isinstance(policy, dict) else policy
    if policy is not None and name != "float32":
        refuse(f"{who}: dtype policy {shown(name if isinstance(name, str) else policy)} is not supported: Kiln trains in float32", field)


def keras_value(key: str, value: Any) -> Any:
    """One Kiln field value in Keras' form (the inverse of `kiln_value`)."""
    if value is None:
        return None
    if key.endswith("_regularizer"):
        l1, l2 = float(value.get("l1", 0.0)), float(value.get("l2", 0.0))
        class_name = "L1" if l1 and not l2 else "L2" if l2 and not l1 else "L1L2"
        return _serialized("keras.regularizers", class_name, {k: v for k, v in (("l1", l1), ("l2", l2)) if k in REGULARIZERS[class_name]})
    if key.endswith(("_initializer", "_constraint")):  # by name, with the arguments that name takes
        initializer = key.endswith("_initializer")
        table, defaults = (INITIALIZERS, INITIALIZER_DEFAULTS) if initializer else (CONSTRAINTS, CONSTRAINT_DEFAULTS)
        given = {"name": value} if isinstance(value, str) else value
        class_name, arguments = table[given["name"]]
        config = {a: given.get(a, defaults[a]) for a in arguments}
        return _serialized("keras.initializers" if initializer else "keras.constraints", class_name, config)
    return list(value) if isinstance(value, list | tuple) else value


def _serialized(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}
