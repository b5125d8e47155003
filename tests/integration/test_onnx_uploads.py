"""Uploaded ONNX is proven servable before it is registered: onnxruntime loads and runs it in a child, within a time limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.config import Settings
from tests.conftest import embedded_settings, kiln_client
from tests.onnx_factory import reshape_to, split_sum_and_difference, unknown_op


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with kiln_client(settings) as c:
        yield c


def _upload(client: TestClient, name: str, model: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/models/{name}/versions", files={"file": ("model.onnx", model)})


def _nothing_left(client: TestClient, settings: Settings) -> None:
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []
    assert [p for p in settings.datasets.rglob("*") if p.is_file()] == []  # the staged upload is gone too
    assert client.get("/v1/models").json()["count"] == 0


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("kiln.test", "onnxruntime cannot run op 'NoSuchOp' (domain 'kiln.test')"),
        ("com.microsoft", "onnxruntime cannot run op 'NoSuchOp' (domain 'com.microsoft')"),
        ("", "onnxruntime cannot run op 'NoSuchOp' (domain 'ai.onnx', opset 17)"),
    ],
)
def test_an_op_onnxruntime_cannot_run_is_a_422_naming_it_and_leaves_nothing(
    client: TestClient, settings: Settings, domain: str, message: str
) -> None:
    response = _upload(client, "custom", unknown_op(domain))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "file" and error["message"].startswith(message)
    _nothing_left(client, settings)
    assert client.get("/v1/models/custom").status_code == 404


def test_a_model_that_loads_but_cannot_run_is_refused(client: TestClient, settings: Settings) -> None:
    response = _upload(client, "reshape", reshape_to([3, 5], 4))  # a batch of one (4 values) never fits 15
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("onnxruntime loaded the model but could not run it on zeros")
    _nothing_left(client, settings)


def test_a_load_past_the_time_limit_is_refused(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, onnx_load_timeout_s=0.001)  # no child starts Python that fast
    with kiln_client(settings) as client:
        response = _upload(client, "slow", split_sum_and_difference(2))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"] == "onnxruntime did not load and run the model within KILN_ONNX_LOAD_TIMEOUT_S=0.001 s"
        _nothing_left(client, settings)


def test_a_model_with_several_inputs_and_outputs_is_registered(client: TestClient) -> None:
    response = _upload(client, "pair", split_sum_and_difference(3))
    assert response.status_code == 201, response.text
    signature = response.json()["signature"]
    assert [t["name"] for t in signature["inputs"]] == ["a", "b"]
    assert [t["name"] for t in signature["outputs"]] == ["sum", "difference"]
    assert all(t["shape"] == [-1, 3] and t["dtype"] == "float32" for t in signature["inputs"] + signature["outputs"])
