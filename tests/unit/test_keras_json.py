"""Keras' `model.to_json()` in and out of Kiln's model spec, checked against the real keras package (torch backend)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

from services.errors import InvalidSpec  # noqa: E402
from services.spec.keras import from_keras, model_to_keras, to_keras  # noqa: E402
from services.spec.model import ModelSpec  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


def keras_json(model: keras.Model) -> dict[str, Any]:
    return json.loads(model.to_json())


# Every layer is named: Keras' automatic names depend on what else the process has built.
def seeds_mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((784,), name="pixels"),
            layers.Dense(64, activation="relu", name="dense"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(32, activation="relu", name="dense_1"),
            layers.Dense(10, activation="softmax", name="dense_2"),
        ]
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer="l2", kernel_constraint="max_norm", name="conv"),
            layers.BatchNormalization(name="norm"),
            layers.MaxPooling2D(name="pool"),
            layers.Conv2D(16, (3, 5), strides=2, kernel_initializer="he_normal", name="conv_1"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ]
    )


def token_lstm() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            layers.Embedding(100, 16, name="embedding"),
            layers.LSTM(32, dropout=0.1, name="lstm"),
            layers.Dense(2, activation="softmax", name="probabilities"),
        ]
    )


def token_bigru() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((12,), dtype="int32"),
            layers.Embedding(50, 8, name="embedding"),
            layers.Bidirectional(layers.GRU(6, return_sequences=True), merge_mode="sum", name="both_ways"),
            layers.GlobalAveragePooling1D(name="mean"),
            layers.Dense(1, activation="sigmoid", name="probability"),
        ]
    )


def skip_connection() -> keras.Model:
    x = keras.Input((64,), name="x")
    h1 = layers.Dense(64, activation="relu", name="h1")(x)
    h2 = layers.Dense(64, activation="relu", name="h2")(h1)
    joined = layers.Concatenate(name="joined")([layers.Add(name="skip")([h1, h2]), x])
    return keras.Model(x, layers.Dense(10, activation="softmax", name="out")(joined))


def two_in_two_out() -> keras.Model:
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    both = layers.Concatenate(name="both")([a, b])
    return keras.Model([a, b], [layers.Dense(2, name="score")(both), layers.Dense(5, name="emb")(a)])


def test_seeds_mlp_is_the_digits_example_with_keras_names() -> None:
    example = json.loads((ROOT / "examples" / "mlp_digits28.json").read_text())["model"]
    names = ["dense", "dropout", "dense_1", "dense_2"]
    expected = {"input_shape": [784], "layers": [{"name": name, **layer} for name, layer in zip(names, example["layers"], strict=True)]}
    assert from_keras(keras_json(seeds_mlp())) == expected


def test_cnn_keeps_regularizer_constraint_initializer_and_window_sizes() -> None:
    assert from_keras(keras_json(cnn())) == {
        "input_shape": [28, 28, 1],
        "layers": [
            {"name": "conv", "type": "Conv2D", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu",
             "kernel_regularizer": {"l1": 0.0, "l2": 0.01}, "kernel_constraint": {"name": "max_norm", "max_value": 2.0, "axis": 0}},
            {"name": "norm", "type": "BatchNormalization"},
            {"name": "pool", "type": "MaxPooling2D"},
            {"name": "conv_1", "type": "Conv2D", "filters": 16, "kernel_size": [3, 5], "strides": 2,
             "kernel_initializer": {"name": "he_normal"}},
            {"name": "flatten", "type": "Flatten"},
            {"name": "probabilities", "type": "Dense", "units": 10, "activation": "softmax"},
        ],
    }  # fmt: skip


def test_lstm_over_token_ids() -> None:
    assert from_keras(keras_json(token_lstm())) == {
        "input_shape": [20],
        "layers": [
            {"name": "embedding", "type": "Embedding", "input_dim": 100, "output_dim": 16},
            {"name": "lstm", "type": "LSTM", "units": 32, "dropout": 0.1},
            {"name": "probabilities", "type": "Dense", "units": 2, "activation": "softmax"},
        ],
    }


def test_bidirectional_keeps_the_wrapped_layer_and_merge_mode() -> None:
    layer = from_keras(keras_json(token_bigru()))["layers"][1]
    assert layer == {
        "name": "both_ways",
        "type": "Bidirectional",
        "merge_mode": "sum",
        "layer": {"type": "GRU", "units": 6, "return_sequences": True},
    }


def test_functional_skip_connection_names_what_each_layer_reads() -> None:
    assert from_keras(keras_json(skip_connection())) == {
        "inputs": [{"name": "x", "shape": [64]}],
        "layers": [
            {"name": "h1", "type": "Dense", "inputs": ["x"], "units": 64, "activation": "relu"},
            {"name": "h2", "type": "Dense", "inputs": ["h1"], "units": 64, "activation": "relu"},
            {"name": "skip", "type": "Add", "inputs": ["h1", "h2"]},
            {"name": "joined", "type": "Concatenate", "inputs": ["skip", "x"]},
            {"name": "out", "type": "Dense", "inputs": ["joined"], "units": 10, "activation": "softmax"},
        ],
        "outputs": ["out"],
    }


def test_two_inputs_and_two_outputs_keep_their_order() -> None:
    assert from_keras(keras_json(two_in_two_out())) == {
        "inputs": [{"name": "a", "shape": [4]}, {"name": "b", "shape": [3]}],
        "layers": [
            {"name": "both", "type": "Concatenate", "inputs": ["a", "b"]},
            {"name": "score", "type": "Dense", "inputs": ["both"], "units": 2},
            {"name": "emb", "type": "Dense", "inputs": ["a"], "units": 5},
        ],
        "outputs": ["score", "emb"],
    }


def test_a_frozen_layer_stays_frozen_both_ways() -> None:
    model = seeds_mlp()
    model.get_layer("dense").trainable = False
    kiln = from_keras(keras_json(model))
    assert kiln["layers"][0]["trainable"] is False
    loaded = keras.models.model_from_json(json.dumps(to_keras(kiln)))
    assert [layer.trainable for layer in loaded.layers] == [False, True, True, True]


def test_keras_json_is_accepted_as_a_job_model() -> None:
    spec = ModelSpec.model_validate(keras_json(skip_connection()))
    assert [layer.name for layer in spec.layers] == ["h1", "h2", "skip", "joined", "out"]
    assert spec.output_names == ["out"]


def k2_layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    """A layer as tf.keras 2 writes it: no module, dtype a plain string."""
    return {"class_name": class_name, "config": {"name": name, "trainable": True, "dtype": "float32", **config}}


def k2(class_name: str, **config: Any) -> dict[str, Any]:
    return {"class_name": class_name, "config": config}


K2_KERNEL = {
    "kernel_initializer": k2("GlorotUniform", seed=None), "bias_initializer": k2("Zeros"), "kernel_regularizer": None,
    "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
}  # fmt: skip
K2_RNN = {
    "return_sequences": False, "return_state": False, "go_backwards": False, "stateful": False, "unroll": False, "time_major": False,
    "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, **K2_KERNEL,
    "recurrent_initializer": k2("Orthogonal", gain=1.0, seed=None), "recurrent_regularizer": None, "recurrent_constraint": None,
    "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 2,
}  # fmt: skip


def keras2_sequential(gru_reset_after: bool = True) -> dict[str, Any]:
    embedding = k2_layer(
        "Embedding", "embedding", batch_input_shape=[None, 20], input_dim=100, output_dim=16, input_length=20, mask_zero=False,
        embeddings_initializer=k2("RandomUniform", minval=-0.05, maxval=0.05, seed=None), embeddings_regularizer=None,
        activity_regularizer=None, embeddings_constraint=None,
    )  # fmt: skip
    gru = k2_layer(
        "GRU", "gru", units=32, reset_after=gru_reset_after, **K2_RNN | {"kernel_regularizer": k2("L2", l2=0.009999999776482582)}
    )
    he_normal = k2("VarianceScaling", scale=2.0, mode="fan_in", distribution="truncated_normal", seed=None)
    dense = k2_layer("Dense", "dense", units=2, activation="softmax", use_bias=True, **K2_KERNEL | {"kernel_initializer": he_normal})
    return {
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": [embedding, gru, dense]},
        "keras_version": "2.13.1",
        "backend": "tensorflow",
    }


def test_keras2_sequential_with_the_input_shape_on_its_first_layer() -> None:
    assert from_keras(keras2_sequential()) == {
        "input_shape": [20],
        "layers": [
            {"name": "embedding", "type": "Embedding", "input_dim": 100, "output_dim": 16},
            {"name": "gru", "type": "GRU", "units": 32, "kernel_regularizer": {"l1": 0.0, "l2": 0.01}},
            {"name": "dense", "type": "Dense", "units": 2, "activation": "softmax", "kernel_initializer": {"name": "he_normal"}},
        ],
    }


def keras2_functional(norm_axis: list[int]) -> dict[str, Any]:
    def node(*names: str) -> list[list[list[Any]]]:
        return [[[name, 0, 0, {}] for name in names]]

    image_config = {"batch_input_shape": [None, 8, 8, 3], "dtype": "float32", "sparse": False, "ragged": False, "name": "image"}
    image = {"class_name": "InputLayer", "config": image_config, "name": "image", "inbound_nodes": []}
    conv = k2_layer(
        "Conv2D", "conv", filters=3, kernel_size=[3, 3], strides=[1, 1], padding="same", data_format="channels_last", dilation_rate=[1, 1],
        groups=1, activation="relu", use_bias=True, **K2_KERNEL,
    )  # fmt: skip
    norm = k2_layer(
        "BatchNormalization", "norm", axis=norm_axis, momentum=0.9, epsilon=0.001, center=True, scale=True, beta_initializer=k2("Zeros"),
        gamma_initializer=k2("Ones"), moving_mean_initializer=k2("Zeros"), moving_variance_initializer=k2("Ones"), beta_regularizer=None,
        gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
    )  # fmt: skip
    entries = [
        image,
        conv | {"name": "conv", "inbound_nodes": node("image")},
        norm | {"name": "norm", "inbound_nodes": node("conv")},
        k2_layer("Add", "skip") | {"name": "skip", "inbound_nodes": node("norm", "image")},
        k2_layer("GlobalAveragePooling2D", "pool", data_format="channels_last", keepdims=False)
        | {"name": "pool", "inbound_nodes": node("skip")},
    ]
    config = {"name": "model", "layers": entries, "input_layers": [["image", 0, 0]], "output_layers": [["pool", 0, 0]]}
    return {"class_name": "Functional", "config": config, "keras_version": "2.13.1", "backend": "tensorflow"}


def test_keras2_functional_with_list_nodes_and_the_last_axis_written_as_its_index() -> None:
    assert from_keras(keras2_functional(norm_axis=[3])) == {
        "inputs": [{"name": "image", "shape": [8, 8, 3]}],
        "layers": [
            {
                "name": "conv",
                "type": "Conv2D",
                "inputs": ["image"],
                "filters": 3,
                "kernel_size": 3,
                "padding": "same",
                "activation": "relu",
            },
            {"name": "norm", "type": "BatchNormalization", "inputs": ["conv"], "momentum": 0.9},
            {"name": "skip", "type": "Add", "inputs": ["norm", "image"]},
            {"name": "pool", "type": "GlobalAveragePooling2D", "inputs": ["skip"]},
        ],
        "outputs": ["pool"],
    }


def refused(data: dict[str, Any]) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        from_keras(data)
    return caught.value


def with_layer(*hidden: keras.layers.Layer, shape: tuple[int, ...] = (8, 8, 3)) -> dict[str, Any]:
    """A Sequential model's JSON: the input, then `hidden` (so the first of them is layers[1])."""
    return keras_json(keras.Sequential([keras.Input(shape), *hidden]))


def test_lambda_layer_is_refused_naming_it_and_the_supported_classes() -> None:
    error = refused(with_layer(layers.Flatten(name="flat"), layers.Lambda(lambda x: x * 2, name="double")))
    assert error.field == "model.config.layers[2]"
    assert "'double' (Lambda)" in error.message and "Conv2D, Conv2DTranspose, Dense" in error.message


def test_unknown_class_is_refused_naming_it() -> None:
    data = with_layer(layers.Flatten(name="flat"))
    data["config"]["layers"][1]["class_name"] = "Capsule"
    error = refused(data)
    assert error.field == "model.config.layers[1]"
    assert "layer 1 'flat' (Capsule)" in error.message and "Dense" in error.message


def test_custom_registered_class_is_refused() -> None:
    data = with_layer(layers.Flatten(name="flat"))
    data["config"]["layers"][1] |= {"module": None, "registered_name": "my_package>Flatten"}
    error = refused(data)
    assert error.field == "model.config.layers[1]"
    assert "custom class 'my_package>Flatten'" in error.message and "'flat'" in error.message


def test_dilation_rate_2_is_refused_naming_layer_key_and_what_kiln_supports() -> None:
    error = refused(with_layer(layers.Conv2D(4, 3, dilation_rate=2, name="dilated")))
    assert error.field == "model.config.layers[1].config.dilation_rate"
    assert error.message == "layer 1 'dilated' (Conv2D): dilation_rate=[2, 2] is not supported: Kiln supports only dilation_rate=1"


def test_mixed_float16_policy_is_refused() -> None:
    error = refused(with_layer(layers.Flatten(name="flat"), layers.Dense(4, dtype="mixed_float16", name="half")))
    assert error.field == "model.config.layers[2].config.dtype"
    assert "'half' (Dense)" in error.message and "mixed_float16" in error.message and "float32" in error.message


def test_unknown_config_key_is_refused_not_dropped() -> None:
    data = with_layer(layers.Flatten(name="flat"), layers.Dense(4, name="head"))
    data["config"]["layers"][2]["config"]["kernel_sparsity"] = 0.5
    error = refused(data)
    assert error.field == "model.config.layers[2].config.kernel_sparsity"
    assert "'head' (Dense): unknown argument 'kernel_sparsity'" in error.message and "units" in error.message


@pytest.mark.parametrize(
    ("build", "shape", "key"),
    [
        (lambda: [layers.Conv2D(6, 3, groups=3)], (8, 8, 3), "groups"),
        (lambda: [layers.Conv2D(4, 3, data_format="channels_first")], (3, 8, 8), "data_format"),
        (lambda: [layers.Conv2DTranspose(4, 3, strides=2, output_padding=1)], (8, 8, 3), "output_padding"),
        (lambda: [layers.MaxPooling2D(data_format="channels_first")], (3, 8, 8), "data_format"),
        (lambda: [layers.GlobalMaxPooling2D(keepdims=True)], (8, 8, 3), "keepdims"),
        (lambda: [layers.UpSampling2D(data_format="channels_first")], (3, 8, 8), "data_format"),
        (lambda: [layers.BatchNormalization(axis=1)], (8, 8, 3), "axis"),
        (lambda: [layers.BatchNormalization(center=False)], (8, 8, 3), "center"),
        (lambda: [layers.BatchNormalization(gamma_initializer="zeros")], (8, 8, 3), "gamma_initializer"),
        (lambda: [layers.Flatten(), layers.Dense(4, bias_constraint="non_neg")], (8, 8, 3), "bias_constraint"),
        (lambda: [layers.Dropout(0.5, noise_shape=(None, 1, 1, 3))], (8, 8, 3), "noise_shape"),
        (lambda: [layers.Embedding(10, 4, mask_zero=True)], (5,), "mask_zero"),
        (lambda: [layers.LSTM(4, recurrent_dropout=0.2)], (5, 3), "recurrent_dropout"),
        (lambda: [layers.LSTM(4, go_backwards=True)], (5, 3), "go_backwards"),
        (lambda: [layers.LSTM(4, return_state=True)], (5, 3), "return_state"),
        (lambda: [layers.GRU(4, recurrent_activation="hard_sigmoid")], (5, 3), "recurrent_activation"),
        (lambda: [layers.GRU(4, reset_after=False)], (5, 3), "reset_after"),
        (lambda: [layers.Conv1D(4, 3, padding="causal")], (5, 3), "padding"),
        (lambda: [layers.Dense(4, kernel_initializer=keras.initializers.VarianceScaling(scale=3.0))], (3,), "kernel_initializer"),
        (lambda: [layers.Dense(4, activation="softplus")], (3,), "activation"),
    ],
)
def test_a_setting_kiln_would_not_compute_the_same_is_refused(
    build: Callable[[], list[keras.layers.Layer]], shape: tuple[int, ...], key: str
) -> None:
    hidden = build()
    error = refused(with_layer(*hidden, shape=shape))
    assert error.field == f"model.config.layers[{len(hidden)}].config.{key}"
    assert f"'{hidden[-1].name}'" in error.message and key in error.message


def test_keras2_gru_without_reset_after_is_refused() -> None:
    error = refused(keras2_sequential(gru_reset_after=False))
    assert error.field == "model.config.layers[1].config.reset_after"
    assert "reset_after=true" in error.message


def test_keras2_normalisation_over_another_axis_is_refused() -> None:
    assert refused(keras2_functional(norm_axis=[1])).field == "model.config.layers[2].config.axis"


def test_a_shared_layer_is_refused() -> None:
    x = keras.Input((4,), name="x")
    shared = layers.Dense(4, name="shared")
    error = refused(keras_json(keras.Model(x, shared(shared(x)))))
    assert error.field == "model.config.layers[1].inbound_nodes"
    assert "'shared' (Dense) is called on 2 inbound nodes" in error.message


def test_variable_length_input_is_refused() -> None:
    error = refused(keras_json(keras.Sequential([keras.Input((None, 3)), layers.LSTM(4, name="lstm")])))
    assert error.field == "model.config.layers[0].config.batch_shape"
    assert "fixed size" in error.message


def summary(model: keras.Model) -> list[tuple[str, str]]:
    return [(layer.name, type(layer).__name__) for layer in model.layers]


BUILDERS = [seeds_mlp, cnn, token_lstm, token_bigru, skip_connection, two_in_two_out]


@pytest.mark.parametrize("build", BUILDERS, ids=[build.__name__ for build in BUILDERS])
@pytest.mark.parametrize("form", ["translated", "model_dump"])
def test_to_keras_loads_back_as_the_same_keras_model(build: Callable[[], keras.Model], form: str) -> None:
    original = build()
    model = from_keras(keras_json(original))
    if form == "model_dump":
        model = ModelSpec.model_validate(model).model_dump(mode="json")
    loaded = keras.models.model_from_json(json.dumps(to_keras(copy.deepcopy(model))))
    assert summary(loaded) == summary(original)
    assert loaded.count_params() == original.count_params()
    assert from_keras(keras_json(loaded)) == from_keras(keras_json(original))


def test_a_graph_on_input_shape_is_written_as_a_functional_model() -> None:
    model = {
        "input_shape": [6],
        "layers": [{"name": "h", "type": "Dense", "units": 6}, {"name": "sum", "type": "Add", "inputs": ["input", "h"]}],
    }
    loaded = keras.models.model_from_json(json.dumps(to_keras(model)))
    assert [layer.name for layer in loaded.layers] == ["input", "h", "sum"]
    assert loaded.count_params() == 42


def test_kiln_only_layer_has_no_keras_class() -> None:
    model = {"input_shape": [16, 8], "layers": [{"name": "encoder", "type": "TransformerEncoder", "num_heads": 2, "ff_dim": 16}]}
    with pytest.raises(InvalidSpec, match="'encoder' \\(TransformerEncoder\\) has no Keras class") as caught:
        to_keras(model)
    assert caught.value.field == "model.layers[0]"


def functional_sequence_model() -> keras.Model:
    """Keras records `{"training": false}` and `{"mask": null}` on these calls in a functional model."""
    ids = keras.Input((20,), dtype="int32", name="ids")
    vectors = layers.Embedding(100, 8, name="vectors")(ids)
    both = layers.Bidirectional(layers.LSTM(8, return_sequences=True, name="lstm"), name="both_ways")(vectors)
    pooled = layers.GlobalAveragePooling1D(name="pooled")(layers.GRU(8, return_sequences=True, name="gru")(both))
    normed = layers.BatchNormalization(name="normed")(layers.Dropout(0.2, name="dropped")(pooled))
    return keras.Model(ids, layers.Dense(2, activation="softmax", name="label")(normed))


def test_a_functional_model_with_the_call_arguments_keras_records_translates_and_loads_back() -> None:
    original = functional_sequence_model()
    data = keras_json(original)
    assert any(node.get("kwargs") for layer in data["config"]["layers"] for node in layer.get("inbound_nodes", []))  # the case
    model = ModelSpec.model_validate(from_keras(data))
    assert [layer.name for layer in model.layers] == ["vectors", "both_ways", "gru", "pooled", "dropped", "normed", "label"]
    loaded = keras.models.model_from_json(json.dumps(to_keras(model.model_dump(mode="json"))))
    assert loaded.count_params() == original.count_params()


def test_a_call_with_a_real_mask_or_training_argument_is_refused() -> None:
    data = keras_json(functional_sequence_model())
    dropped = next(layer for layer in data["config"]["layers"] if layer["name"] == "dropped")
    dropped["inbound_nodes"][0]["kwargs"] = {"training": True}
    with pytest.raises(InvalidSpec, match="'dropped'") as refused:
        from_keras(data)
    assert refused.value.field is not None and refused.value.field.startswith("model.config.layers[")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["config"]["layers"][1].update(inbound_nodes=[{"args": [[]], "kwargs": {}}]),
        lambda d: d["config"]["layers"][1].update(inbound_nodes=[[]]),
        lambda d: d["config"]["layers"][1]["inbound_nodes"][0]["args"][0].update(config=None),
        lambda d: d["config"]["layers"][1]["config"].update(name=["a"]),
        lambda d: d["config"]["layers"].insert(2, {"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}}),
        lambda d: d["config"].update(layers="not a list"),
    ],
)
def test_json_no_keras_writes_is_a_clear_refusal_not_a_crash(damage: Callable[[dict[str, Any]], None]) -> None:
    data = keras_json(functional_sequence_model())
    damage(data)
    with pytest.raises(InvalidSpec) as refused:
        ModelSpec.model_validate({"class_name": "Functional", **data} if "class_name" not in data else data)
    assert refused.value.field is not None and refused.value.field.startswith("model")


def test_a_functional_spec_listed_out_of_order_is_written_in_the_order_keras_needs() -> None:
    model = ModelSpec.model_validate({"inputs": [{"name": "x", "shape": [4]}], "layers": [
        {"name": "out", "type": "Dense", "units": 2, "inputs": ["h"]},
        {"name": "h", "type": "Dense", "units": 3, "inputs": ["x"]}], "outputs": ["out"]})  # fmt: skip
    loaded = keras.models.model_from_json(json.dumps(model_to_keras(model)))
    assert [layer.name for layer in loaded.layers] == ["x", "h", "out"] and loaded.count_params() == 4 * 3 + 3 + 3 * 2 + 2
