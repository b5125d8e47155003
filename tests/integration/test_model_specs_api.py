"""Functional and Keras model specs at `POST /v1/jobs` (both registries): what cannot be built is a 422 JSON error naming
the layer and field, and no job is recorded; `GET .../keras` of an uploaded ONNX file is a 409."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import admin_headers, embedded_settings, kiln_client
from tests.factories import job_body
from tests.onnx_factory import scale


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with kiln_client(embedded_settings(tmp_path, database_url=database_url)) as c:
        c.headers.update(admin_headers(database_url))
        yield c


def _functional(*layers: dict[str, Any], **model: Any) -> dict[str, Any]:
    return job_body() | {"model": {"inputs": [{"name": "x", "shape": [64]}], "layers": list(layers), **model}}


KERAS_DENSE = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
               "config": {"name": "dense", "units": 10, "activation": "softmax", "dtype": "float32"}}  # fmt: skip


def _keras(*layers: dict[str, Any]) -> dict[str, Any]:
    config = {"name": "sequential", "layers": [{"class_name": "InputLayer", "config": {"batch_shape": [None, 64], "name": "in"}},
                                               *layers]}  # fmt: skip
    return job_body() | {"model": {"module": "keras", "class_name": "Sequential", "config": config}}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (_functional({"type": "Dense", "units": 10, "name": "x"}), "model.layers[0].name", ["'x'", "more than once"]),
        (_functional({"type": "Dense", "units": 8, "name": "a", "inputs": ["b"]},
                     {"type": "Dense", "units": 10, "name": "b", "inputs": ["a"]}),
         "model.layers[0].inputs", ["cycle"]),
        (_functional({"type": "Dense", "units": 8, "name": "a"}, {"type": "Add", "inputs": ["a", "x"]}, {"type": "Dense", "units": 10}),
         "model.layers[1]", ["layer 1 'add' (Add)", "(None, 8), (None, 64)"]),
        (_functional({"type": "Dense", "units": 10, "inputs": ["nope"]}), "model.layers[0].inputs", ["'nope'"]),
        (_keras({"class_name": "Lambda", "config": {"name": "twice", "function": "lambda x: x * 2"}}, KERAS_DENSE),
         "model.config.layers[1]", ["'twice'", "Lambda", "Dense", "Conv2D"]),
        (_keras({"class_name": "Dense", "config": {"name": "d", "units": 10, "dilation": 3}}),
         "model.config.layers[1].config.dilation", ["'d'", "dilation"]),
        (_keras(KERAS_DENSE | {"config": KERAS_DENSE["config"] | {"dtype": "mixed_float16"}}),
         "model.config.layers[1].config.dtype", ["mixed_float16", "float32"]),
    ],
)  # fmt: skip
def test_a_model_that_cannot_be_built_is_a_422_naming_the_layer_and_records_nothing(
    client: TestClient, body: dict[str, Any], field: str, words: list[str]
) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    for word in words:
        assert word in error["message"], error["message"]
    assert client.get("/v1/jobs").json()["count"] == 0


def test_a_functional_spec_is_accepted_and_stored_with_every_name(client: TestClient, uow_factory: Any) -> None:
    body = _functional({"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dropout", "rate": 0.1},
                       {"type": "Dense", "units": 10, "activation": "softmax", "name": "digit"}, outputs=["digit", "dense"])  # fmt: skip
    response = client.post("/v1/jobs", json=copy.deepcopy(body))
    assert response.status_code == 202, response.text
    with uow_factory() as uow:
        job = uow.jobs.get(uuid.UUID(response.json()["id"]))
    assert job is not None
    stored = job.spec["model"]
    assert [layer["name"] for layer in stored["layers"]] == ["dense", "dropout", "digit"]
    assert stored["outputs"] == ["digit", "dense"] and stored["inputs"] == [{"name": "x", "shape": [64]}]


def test_an_uploaded_onnx_version_has_no_keras_architecture(client: TestClient) -> None:
    assert client.post("/v1/models/byo/versions", files={"file": ("m.onnx", scale(2.0, 4))}).status_code == 201
    response = client.get("/v1/models/byo/versions/1/keras")
    assert response.status_code == 409 and "uploaded as ONNX" in response.json()["error"]["message"]
    assert client.get("/v1/models/byo/versions/2/keras").status_code == 404
