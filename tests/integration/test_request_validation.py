"""Malformed predict and infer bodies are 4xx JSON errors naming the field; an unexpected failure is a JSON 500 with its request id."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import embedded_settings, kiln_client
from tests.onnx_factory import add_two, scale

GOOD_INPUT = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with kiln_client(embedded_settings(tmp_path_factory.mktemp("validation"))) as c:
        assert c.post("/v1/models/m/versions", files={"file": ("m.onnx", scale(2.0, 4))}).status_code == 201
        assert c.post("/v1/models/two/versions", files={"file": ("two.onnx", add_two(3))}).status_code == 201
        yield c


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [1, 2]}, "inputs[0]"),
        ({"inputs": [GOOD_INPUT | {"datatype": ["FP32"]}]}, "inputs[0].datatype"),
        ({"inputs": [GOOD_INPUT | {"datatype": "FP128"}]}, "inputs[0].datatype"),
        ({"inputs": [GOOD_INPUT], "parameters": "binary"}, "parameters"),
        ({"inputs": [GOOD_INPUT | {"parameters": 3}]}, "inputs[0].parameters"),
        ({"inputs": [GOOD_INPUT], "outputs": ["output"]}, "outputs[0]"),
        ({"inputs": [GOOD_INPUT], "outputs": {"name": "output"}}, "outputs"),
        ({"inputs": [GOOD_INPUT | {"shape": [1, -4]}]}, "inputs[0].shape"),
        ({"inputs": [GOOD_INPUT | {"shape": [True, 4]}]}, "inputs[0].shape"),
        ({"inputs": [GOOD_INPUT | {"shape": [100000, 100000, 100000]}]}, "inputs[0].shape"),
        ({"inputs": [GOOD_INPUT | {"name": 7}]}, "inputs[0].name"),
        ({"inputs": [GOOD_INPUT | {"data": [True, False, True, True]}]}, "inputs[0].data"),
        ({"inputs": [GOOD_INPUT | {"data": "1234"}]}, "inputs[0].data"),
        ({"inputs": [GOOD_INPUT | {"data": ["1", "2", "3", "4"]}]}, "inputs[0].data"),
        ({"inputs": [GOOD_INPUT | {"data": [1, 2, 3, None]}]}, "inputs[0].data"),
        ({"inputs": [GOOD_INPUT], "outputs": [{"name": "not-an-output"}]}, "outputs[0].name"),
        ({"inputs": [GOOD_INPUT, GOOD_INPUT | {"name": "extra"}]}, "inputs[1].name"),
        (
            {"inputs": [GOOD_INPUT], "outputs": [{"name": "output", "parameters": {"binary_data": "false"}}]},
            "outputs[0].parameters.binary_data",
        ),
        ({"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": 1}}, "parameters.binary_data_output"),
        ({"inputs": []}, "inputs"),
        ([GOOD_INPUT], "body"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_malformed_v2_infer_bodies_are_400s_naming_the_field(client: TestClient, body: Any, field: str) -> None:
    response = client.post("/v2/models/m/versions/1/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(field)


def test_v1_refuses_booleans_where_numbers_are_expected(client: TestClient) -> None:
    response = client.post("/v1/models/m/predict", json={"inputs": [[True, True, False, True]]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "inputs" and "boolean" in response.json()["error"]["message"]


@pytest.mark.parametrize(("row", "found"), [([1, 2, 3, "4"], "strings"), ([1, 2, 3, None], "nulls")])
def test_v1_refuses_strings_and_nulls_numpy_would_read_as_numbers(client: TestClient, row: list[Any], found: str) -> None:
    response = client.post("/v1/models/m/predict", json={"inputs": [row]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "inputs" and found in response.json()["error"]["message"]


def test_v1_names_each_input_of_a_two_input_model(client: TestClient) -> None:
    response = client.post("/v1/models/two/predict", json={"inputs": {"a": [[1, 2, 3]], "b": [[10, 20, 30]]}})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [[11.0, 22.0, 33.0]]


@pytest.mark.parametrize("inputs", [[[1, 2, 3]], {"a": [[1, 2, 3]]}, {"a": [[1, 2, 3]], "b": [[1, 2, 3]], "c": [[1, 2, 3]]}])
def test_v1_inputs_that_do_not_match_a_two_input_model_are_422s_naming_its_inputs(client: TestClient, inputs: Any) -> None:
    response = client.post("/v1/models/two/predict", json={"inputs": inputs})
    assert response.status_code == 422
    assert "'a', 'b'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [("POST", "/v1/models/m/predict", "v1"), ("POST", "/v2/models/m/infer", "v2"), ("GET", "/v1/models", "v1"),
     ("GET", "/v2/models/m", "v2")],
)  # fmt: skip
def test_an_unexpected_failure_is_a_json_500_with_the_request_id_logged_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, method: str, path: str, shape: str
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug")

    async def broken_async(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.kiln.predictor, "resolve", broken)  # type: ignore[attr-defined]
    monkeypatch.setattr(client.app.state.kiln.predictor, "resolve_async", broken_async)  # type: ignore[attr-defined]
    monkeypatch.setattr(client.app.state.kiln.predictor, "target_async", broken_async)  # type: ignore[attr-defined]
    monkeypatch.setattr("api.routers.models.list_models", broken)
    body: Any = {"inputs": [[1, 2, 3, 4]]} if shape == "v1" else {"inputs": [GOOD_INPUT]}
    with caplog.at_level(logging.ERROR):
        response = client.request(method, path, json=body if method == "POST" else None, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    if shape == "v1":
        assert error["code"] == "internal" and error["request_id"] == "req-123"
    else:
        assert isinstance(error, str) and response.json()["request_id"] == "req-123"
    logged = [r for r in caplog.records if r.exc_info and "req-123" in r.getMessage()]
    assert len(logged) == 1 and "a bug" in str(logged[0].exc_info[1])  # type: ignore[index]
