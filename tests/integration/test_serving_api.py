"""Serving on the embedded defaults: bring-your-own ONNX, aliases, artifacts, batching options, OIP v2 JSON."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import embedded_settings, kiln_client
from tests.onnx_factory import linear_softmax, malformed, scale, with_external_data

WEIGHTS = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]], np.float32)  # 3 features -> 2 classes


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with kiln_client(embedded_settings(tmp_path, max_model_mb=1)) as c:
        yield c


def _upload(client: TestClient, name: str, model: bytes, **fields: str):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/models/{name}/versions", files={"file": ("model.onnx", model)}, data=fields)


def test_uploaded_onnx_is_checked_registered_and_served(client: TestClient) -> None:
    response = _upload(client, "byo", linear_softmax(WEIGHTS), labels='["left", "right"]')
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1 and version["labels"] == ["left", "right"] and version["job_id"] is None
    assert version["signature"] == {"inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 3]}],
                                    "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]}  # fmt: skip
    predicted = client.post("/v1/models/byo/predict", json={"inputs": [[2, 0, 0], [0, 2, 0]]}).json()
    assert predicted["labels"] == ["left", "right"] and predicted["version"] == 1
    expected = np.exp([[2, -2], [-2, 2]]) / np.exp([[2, -2], [-2, 2]]).sum(1, keepdims=True)
    np.testing.assert_allclose(predicted["outputs"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (b"definitely not protobuf", "not an ONNX model"),
        (malformed(), "the ONNX graph is malformed"),
        (with_external_data(linear_softmax(WEIGHTS)), "refers to external data"),
    ],
)
def test_bad_onnx_is_refused_before_any_session_and_leaves_nothing(client: TestClient, model: bytes, message: str) -> None:
    response = _upload(client, "bad", model)
    assert response.status_code == 422 and message in response.json()["error"]["message"]
    settings = client.app.state.kiln.settings
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []
    assert client.get("/v1/models").json()["count"] == 0


def test_oversized_onnx_is_a_413(client: TestClient) -> None:
    response = _upload(client, "big", b"\0" * (2 * 2**20))
    assert response.status_code == 413


def test_aliases_route_predictions_and_the_default_is_production_else_latest(client: TestClient) -> None:
    for factor in (2.0, 3.0, 4.0):
        assert _upload(client, "scale", scale(factor, 2)).status_code == 201

    def default() -> float:
        return client.post("/v1/models/scale/predict", json={"inputs": [[1, 1]]}).json()["outputs"][0][0]

    assert default() == 4.0  # no production alias: the latest
    moved = client.put("/v1/models/scale/aliases/production", json={"version": 1})
    assert moved.status_code == 200 and moved.json()["aliases"] == ["production"]
    assert default() == 2.0
    client.put("/v1/models/scale/aliases/staging", json={"version": 2})
    assert client.post("/v1/models/scale/aliases/staging/predict", json={"inputs": [[1, 1]]}).json()["outputs"] == [[3.0, 3.0]]
    assert client.get("/v1/models/scale").json()["aliases"] == {"production": 1, "staging": 2}
    client.put("/v1/models/scale/aliases/production", json={"version": 2})
    assert default() == 3.0
    assert client.delete("/v1/models/scale/aliases/production").status_code == 204
    assert default() == 4.0
    assert client.delete("/v1/models/scale/aliases/production").status_code == 404
    assert client.post("/v1/models/scale/aliases/nope/predict", json={"inputs": [[1, 1]]}).json()["error"]["message"] == (
        "model 'scale' has no alias 'nope'"
    )
    assert client.put("/v1/models/scale/aliases/production", json={"version": 9}).status_code == 404


def test_artifact_download_uses_the_sha256_as_etag(client: TestClient) -> None:
    model = scale(2.0, 2)
    _upload(client, "scale", model)
    response = client.get("/v1/models/scale/versions/1/artifact")
    assert response.status_code == 200 and response.content == model
    assert response.headers["etag"] == f'"{hashlib.sha256(model).hexdigest()}"'
    cached = client.get("/v1/models/scale/versions/1/artifact", headers={"If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304


def _runs(client: TestClient, name: str) -> tuple[float, float]:
    """(predictions served, rows summed over the runs they rode in) for `name`, from the batch-size histogram."""
    found = {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
             if s.name.startswith("kiln_inference_batch_size_") and s.labels.get("model") == name}  # fmt: skip
    return found.get("kiln_inference_batch_size_count", 0.0), found.get("kiln_inference_batch_size_sum", 0.0)


def _concurrent_predicts(client: TestClient, name: str, n: int) -> None:
    """`n` one-row predictions sent at once over ASGI to the client's app, so the batcher can merge them."""

    async def main() -> None:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln", headers=client.headers) as http:
            answers = await asyncio.gather(*(http.post(f"/v1/models/{name}/versions/1/predict", json={"inputs": [[1, 2]]})
                                             for _ in range(n)))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * n

    asyncio.run(main())


def test_a_version_patched_to_max_batch_size_1_stops_merging_predictions(client: TestClient) -> None:
    _upload(client, "scale", scale(2.0, 2))
    client.patch("/v1/models/scale/versions/1", json={"max_queue_delay_ms": 50})  # time for a batch to fill
    for _ in range(20):  # merged runs show as observations over 1 row
        _concurrent_predicts(client, "scale", 16)
        served, rows = _runs(client, "scale")
        if rows > served:
            break
    assert rows > served, "16 concurrent predictions never shared an onnxruntime run"
    patched = client.patch("/v1/models/scale/versions/1", json={"max_batch_size": 1})
    assert patched.json()["serving"] == {"max_batch_size": 1, "max_queue_delay_ms": 50.0}
    _concurrent_predicts(client, "scale", 16)
    served_after, rows_after = _runs(client, "scale")
    assert served_after == served + 16 and rows_after == rows + 16  # each ran alone: 16 runs of 1 row


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[1, 2]], "expected (N, 3) float32, got (N, 2) float32"),
        ([[1, "x", 3]], "rectangular array of numbers"),
        ([[1, float("nan"), 3]], "finite"),
    ],
)
def test_bad_predict_input_is_a_422_naming_the_signature(client: TestClient, inputs: list, message: str) -> None:
    _upload(client, "byo", linear_softmax(WEIGHTS))
    response = client.post("/v1/models/byo/versions/1/predict", content=json.dumps({"inputs": inputs}),
                           headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 422 and message in response.json()["error"]["message"]


def test_v2_json_infer_with_flat_and_nested_data(client: TestClient) -> None:
    _upload(client, "byo", linear_softmax(WEIGHTS))
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    metadata = client.get("/v2/models/byo").json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}] and metadata["versions"] == ["1"]
    v1 = client.post("/v1/models/byo/versions/1/predict", json={"inputs": [[2, 0, 0], [0, 2, 0]]}).json()["outputs"]
    for data in ([2, 0, 0, 0, 2, 0], [[2, 0, 0], [0, 2, 0]]):
        body = {"id": "r1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": data}]}
        reply = client.post("/v2/models/byo/versions/1/infer", json=body).json()
        assert reply["id"] == "r1" and reply["model_version"] == "1"
        (output,) = reply["outputs"]
        assert output["name"] == "probabilities" and output["shape"] == [2, 2]
        np.testing.assert_allclose(np.reshape(output["data"], (2, 2)), v1, rtol=1e-6)  # v2 and v1 give the same figures


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "no model named 'nope'"),
        ("/v2/models/byo/versions/7/infer", {"inputs": []}, 404, "no version 7"),
        ("/v2/models/byo/infer", {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, 400,
         "expected (N, 3) float32"),
        ("/v2/models/byo/infer", {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}, 400,
         "do not fill shape"),
        ("/v2/models/byo/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400,
         "no input 'x'; its inputs are 'features'"),
        ("/v2/models/byo/infer", {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP128", "data": [1, 2, 3]}]}, 400,
         "datatype"),
    ],
)  # fmt: skip
def test_v2_errors_are_json_with_an_error_field(client: TestClient, path: str, body: dict, status: int, message: str) -> None:
    _upload(client, "byo", linear_softmax(WEIGHTS))
    response = client.post(path, json=body)
    assert response.status_code == status and message in response.json()["error"]


@pytest.mark.parametrize(
    ("header_length", "size", "message"),
    [
        ("-5", 12, "must be a byte count"),
        ("99999", 12, "must be a byte count"),
        (None, 8, "binary_data_size: expected 12 bytes"),
        (None, "12", "binary_data_size: expected 12 bytes"),
    ],
)
def test_v2_binary_sizes_are_checked(client: TestClient, header_length: str | None, size: object, message: str) -> None:
    _upload(client, "byo", linear_softmax(WEIGHTS))
    header = json.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                                                   "parameters": {"binary_data_size": size}}]}).encode()  # fmt: skip
    body = header + np.ones((1, 3), np.float32).tobytes()
    headers = {"Inference-Header-Content-Length": header_length or str(len(header)), "content-type": "application/octet-stream"}
    response = client.post("/v2/models/byo/infer", content=body, headers=headers)
    assert response.status_code == 400 and message in response.json()["error"]
