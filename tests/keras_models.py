"""Keras models and the JSON they write, built with the real keras package (torch backend), for the Keras JSON tests.

Every layer is named: Keras' automatic names depend on what else the process has built."""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from keras import layers  # noqa: E402


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


def functional_sequence_model() -> keras.Model:
    """Keras records `{"training": false}` and `{"mask": null}` on these calls in a functional model."""
    ids = keras.Input((20,), dtype="int32", name="ids")
    vectors = layers.Embedding(100, 8, name="vectors")(ids)
    both = layers.Bidirectional(layers.LSTM(8, return_sequences=True, name="lstm"), name="both_ways")(vectors)
    pooled = layers.GlobalAveragePooling1D(name="pooled")(layers.GRU(8, return_sequences=True, name="gru")(both))
    normed = layers.BatchNormalization(name="normed")(layers.Dropout(0.2, name="dropped")(pooled))
    return keras.Model(ids, layers.Dense(2, activation="softmax", name="label")(normed))


BUILDERS = [seeds_mlp, cnn, token_lstm, token_bigru, skip_connection, two_in_two_out]


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
