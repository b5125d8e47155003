"""Keras' `model.to_json()` translated into Kiln's model spec (Keras 3 and Keras 2), checked against the real keras package."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402

from services.spec.keras import from_keras, to_keras  # noqa: E402
from services.spec.model import ModelSpec  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.keras_models import (  # noqa: E402
    cnn,
    functional_sequence_model,
    keras2_functional,
    keras2_sequential,
    keras_json,
    seeds_mlp,
    skip_connection,
    token_bigru,
    token_lstm,
    two_in_two_out,
)


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


def test_keras2_sequential_with_the_input_shape_on_its_first_layer() -> None:
    assert from_keras(keras2_sequential()) == {
        "input_shape": [20],
        "layers": [
            {"name": "embedding", "type": "Embedding", "input_dim": 100, "output_dim": 16},
            {"name": "gru", "type": "GRU", "units": 32, "kernel_regularizer": {"l1": 0.0, "l2": 0.01}},
            {"name": "dense", "type": "Dense", "units": 2, "activation": "softmax", "kernel_initializer": {"name": "he_normal"}},
        ],
    }


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


def test_a_functional_model_with_the_call_arguments_keras_records_translates_and_loads_back() -> None:
    original = functional_sequence_model()
    data = keras_json(original)
    assert any(node.get("kwargs") for layer in data["config"]["layers"] for node in layer.get("inbound_nodes", []))  # the case
    model = ModelSpec.model_validate(from_keras(data))
    assert [layer.name for layer in model.layers] == ["vectors", "both_ways", "gru", "pooled", "dropped", "normed", "label"]
    loaded = keras.models.model_from_json(json.dumps(to_keras(model.model_dump(mode="json"))))
    assert loaded.count_params() == original.count_params()
