"""Keras JSON that Kiln would not compute the same way, or that no Keras writes: a 422 naming the layer, the key and the field."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

from services.errors import InvalidSpec  # noqa: E402
from services.spec.keras import from_keras  # noqa: E402
from services.spec.model import ModelSpec  # noqa: E402
from tests.keras_models import (  # noqa: E402
    functional_sequence_model,
    keras2_functional,
    keras2_sequential,
    keras_json,
)


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
