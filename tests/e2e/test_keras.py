"""Keras' own `model.to_json()`, written by the real keras package, trains through `POST /v1/jobs` unchanged, serves,
and comes back from `GET .../keras` as JSON that `keras.models.model_from_json` loads (API and worker processes)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402
from keras import layers  # noqa: E402

from services.data.builtins import load_builtin  # noqa: E402
from tests.e2e.helpers import wait_for_job  # noqa: E402


def _mlp() -> keras.Model:  # the seeds' MLP: 784-64-32-10
    return keras.Sequential([keras.Input((784,)), layers.Dense(64, activation="relu"), layers.Dropout(0.2),
                             layers.Dense(32, activation="relu", kernel_regularizer="l2"),
                             layers.Dense(10, activation="softmax")])  # fmt: skip


def _cnn() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(8, 3, activation="relu", padding="same"), layers.MaxPooling2D(),
                             layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
                             layers.Dense(10, activation="softmax")])  # fmt: skip


def _lstm() -> keras.Model:  # token ids in, a sentiment-like label out
    return keras.Sequential([keras.Input((20,), dtype="int32"), layers.Embedding(100, 16), layers.LSTM(16),
                             layers.Dense(1, activation="sigmoid")])  # fmt: skip


def _skip() -> keras.Model:  # functional, with a skip connection and a second (embedding) output
    x = keras.Input((64,), name="pixels")
    hidden = layers.Dense(32, activation="relu", name="hidden")(x)
    deeper = layers.Dense(32, activation="relu")(hidden)
    joined = layers.Concatenate()([layers.Add()([hidden, deeper]), x])
    return keras.Model(x, [layers.Dense(10, activation="softmax", name="digit")(joined), hidden])


def _functional_rnn() -> keras.Model:  # Keras records training/mask call arguments on these layers
    ids = keras.Input((20,), dtype="int32", name="ids")
    both = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(layers.Embedding(100, 8)(ids))
    pooled = layers.Dropout(0.1)(layers.GlobalAveragePooling1D()(layers.GRU(8, return_sequences=True)(both)))
    return keras.Model(ids, layers.Dense(1, activation="sigmoid")(layers.BatchNormalization()(pooled)))


def _two_inputs() -> keras.Model:  # each digit's first 40 pixels, and its last 24 as a (3, 8) image strip
    top, bottom = keras.Input((40,), name="top"), keras.Input((3, 8), name="bottom")
    joined = layers.Concatenate()([layers.Dense(16, activation="relu")(top), layers.Flatten()(bottom)])
    return keras.Model([top, bottom], layers.Dense(10, activation="softmax")(joined))


CASES: dict[str, tuple[Callable[[], keras.Model], str, str]] = {  # name: (model, dataset, loss)
    "keras-mlp": (_mlp, "digits28", "sparse_categorical_crossentropy"),
    "keras-cnn": (_cnn, "digits28", "sparse_categorical_crossentropy"),
    "keras-lstm": (_lstm, "tokens", "binary_crossentropy"),
    "keras-skip": (_skip, "digits", "sparse_categorical_crossentropy"),
    "keras-two": (_two_inputs, "digits", "sparse_categorical_crossentropy"),
    "keras-rnn-functional": (_functional_rnn, "tokens", "binary_crossentropy"),
}


def _feeds(model: keras.Model, rows: np.ndarray) -> dict[str, list[Any]]:
    """Each row's values split among the model's inputs in order, as Kiln splits a dataset's rows for training."""
    flat, start, feeds = rows.reshape(len(rows), -1), 0, {}
    for tensor in model.inputs:
        shape = tuple(tensor.shape[1:])
        size = int(np.prod(shape))
        feeds[tensor.name] = flat[:, start : start + size].reshape(len(rows), *shape).tolist()
        start += size
    return feeds


@pytest.fixture(scope="module")
def originals() -> dict[str, keras.Model]:
    """Each model, built once: Keras numbers its automatic names across the process."""
    return {name: build() for name, (build, _, _) in CASES.items()}


@pytest.fixture(scope="module")
def trained(kiln: dict, originals: dict[str, keras.Model]) -> dict[str, dict[str, Any]]:
    """Each model's `to_json()`, posted as it is; all submitted at once, then waited for."""
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        locations = {}
        for name, (_, dataset, loss) in CASES.items():
            body = {"model_name": name, "model": json.loads(originals[name].to_json()), "data": {"dataset": dataset},
                    "training": {"loss": loss, "epochs": 3, "optimizer": {"name": "adam", "learning_rate": 0.003}}}  # fmt: skip
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, (name, response.text)
            locations[name] = response.headers["location"]
        return {name: wait_for_job(client, location, timeout=300) for name, location in locations.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_json_trains_serves_and_comes_back_as_keras(
    kiln: dict, trained: dict[str, dict[str, Any]], originals: dict[str, keras.Model], name: str
) -> None:
    job = trained[name]
    assert job["state"] == "succeeded", job["error"]
    _, dataset, _ = CASES[name]
    original = originals[name]
    data = load_builtin(dataset)
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        version = client.get(f"/v1/models/{name}/versions/{job['version']}").json()
        kept = [layer.name for layer in original.layers if type(layer).__name__ != "InputLayer"]
        assert [layer["name"] for layer in version["spec"]["layers"]] == kept  # the version's spec keeps Keras' names
        feeds = _feeds(original, data.x_test[:6])
        predicted = client.post(f"/v1/models/{name}/predict", json={"inputs": next(iter(feeds.values())) if len(feeds) == 1 else feeds})
        assert predicted.status_code == 200, predicted.text
        outputs = np.asarray(predicted.json()["outputs"])
        assert outputs.shape[0] == 6 and np.isfinite(outputs).all()
        if dataset != "tokens":
            assert predicted.json()["labels"] is not None and np.allclose(outputs.sum(axis=1), 1, atol=1e-5)
        architecture = client.get(f"/v1/models/{name}/versions/{job['version']}/keras")
        assert architecture.status_code == 200, architecture.text
    loaded = keras.models.model_from_json(json.dumps(architecture.json()))
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in original.layers]
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in original.layers]
    assert loaded.count_params() == original.count_params()
    if "rnn" not in name and "lstm" not in name:  # torch's RNNs keep two biases per gate where Keras' LSTM keeps one
        assert version["metrics"]["parameters"] == original.count_params()


def test_the_skip_models_second_output_is_served_by_name(kiln: dict, trained: dict[str, dict[str, Any]]) -> None:
    rows = load_builtin("digits").x_test[:4].tolist()
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        hidden = client.post("/v1/models/keras-skip/predict", json={"inputs": {"pixels": rows}, "output": "hidden"})
        assert hidden.status_code == 200, hidden.text
        assert np.asarray(hidden.json()["outputs"]).shape == (4, 32) and hidden.json()["labels"] is None
        wrong = client.post("/v1/models/keras-skip/predict", json={"inputs": rows, "output": "nope"})
        assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "output"
        assert "'digit', 'hidden'" in wrong.json()["error"]["message"]
        v2 = client.post("/v2/models/keras-skip/infer", json={"inputs": [
            {"name": "pixels", "shape": [4, 64], "datatype": "FP32", "data": np.asarray(rows).ravel().tolist()}]}).json()  # fmt: skip
        assert [o["name"] for o in v2["outputs"]] == ["digit", "hidden"] and v2["outputs"][1]["shape"] == [4, 32]


def test_a_two_input_model_takes_its_inputs_by_name_in_v1_and_as_two_tensors_in_v2(kiln: dict, trained: dict[str, dict[str, Any]],
                                                                                  originals: dict[str, keras.Model]) -> None:  # fmt: skip
    digits = load_builtin("digits")
    feeds = _feeds(originals["keras-two"], digits.x_test)
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        v1 = client.post("/v1/models/keras-two/predict", json={"inputs": feeds})
        assert v1.status_code == 200, v1.text
        tensors = [{"name": name, "shape": list(np.shape(rows)), "datatype": "FP32", "data": np.ravel(rows).tolist()}
                   for name, rows in feeds.items()]  # fmt: skip
        v2 = client.post("/v2/models/keras-two/infer", json={"inputs": tensors})
        assert v2.status_code == 200, v2.text
        one = client.post("/v1/models/keras-two/predict", json={"inputs": feeds["top"]})
    probabilities = np.asarray(v1.json()["outputs"])
    (output,) = v2.json()["outputs"]
    np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), probabilities, rtol=1e-5, atol=1e-6)
    assert (probabilities.argmax(axis=1) == digits.y_test).mean() > 0.8  # three epochs of a small network
    assert one.status_code == 422 and "'top', 'bottom'" in one.json()["error"]["message"]


def test_an_unsupported_keras_layer_is_a_422_naming_it_its_class_and_the_supported_ones(kiln: dict) -> None:
    model = keras.Sequential([keras.Input((64,)), layers.Dense(8), layers.Lambda(lambda t: t * 2, name="doubling"), layers.Dense(10)])
    body = {"model_name": "lambda", "model": json.loads(model.to_json()), "data": {"dataset": "digits"},
            "training": {"loss": "sparse_categorical_crossentropy"}}  # fmt: skip
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "doubling" in error["message"] and "Lambda" in error["message"] and "Dense" in error["message"]
    assert error["field"].startswith("model.config.layers[2]")
