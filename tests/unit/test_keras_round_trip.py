"""Kiln's model spec written back as Keras 3 JSON, loaded by the real `keras.models.model_from_json`."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import pytest  # noqa: E402

from services.errors import InvalidSpec  # noqa: E402
from services.spec.keras import from_keras, model_to_keras, to_keras  # noqa: E402
from services.spec.model import ModelSpec  # noqa: E402
from tests.keras_models import (  # noqa: E402
    BUILDERS,
    keras_json,
)


def summary(model: keras.Model) -> list[tuple[str, str]]:
    return [(layer.name, type(layer).__name__) for layer in model.layers]


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


def test_a_functional_spec_listed_out_of_order_is_written_in_the_order_keras_needs() -> None:
    model = ModelSpec.model_validate({"inputs": [{"name": "x", "shape": [4]}], "layers": [
        {"name": "out", "type": "Dense", "units": 2, "inputs": ["h"]},
        {"name": "h", "type": "Dense", "units": 3, "inputs": ["x"]}], "outputs": ["out"]})  # fmt: skip
    loaded = keras.models.model_from_json(json.dumps(model_to_keras(model)))
    assert [layer.name for layer in loaded.layers] == ["x", "h", "out"] and loaded.count_params() == 4 * 3 + 3 + 3 * 2 + 2
