"""Every route but the uploads caps its request body: a 413 in Kiln's error shape, before the body is used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import embedded_settings, kiln_client
from tests.factories import job_body
from tests.onnx_factory import scale

BIG = json.dumps(job_body() | {"padding": "x" * (2 * 2**20)}).encode()  # 2 MB against a 1 MB limit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with kiln_client(embedded_settings(tmp_path, max_body_mb=1)) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models/m/versions/1/predict", "/v2/models/m/infer", "/v1/models/m/aliases/a"])
def test_large_bodies_are_refused_with_a_413(client: TestClient, path: str) -> None:
    method = client.put if path.endswith("/aliases/a") else client.post
    response = method(path, content=BIG, headers={"content-type": "application/json"})
    assert response.status_code == 413
    if path.startswith("/v2"):  # the protocol's error shape, even before routing
        assert "larger than 1048576 bytes" in response.json()["error"]
    else:
        assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models/m/versions/1/predict", "/v1/models/m/predict", "/v2/models/m/infer"])
def test_chunked_bodies_are_counted_too(client: TestClient, path: str) -> None:
    assert client.post("/v1/models/m/versions", files={"file": ("m.onnx", scale(2.0, 4))}).status_code == 201
    chunks = iter([BIG[i : i + 65536] for i in range(0, len(BIG), 65536)])
    response = client.post(path, content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    if path.startswith("/v2"):  # the protocol's error shape
        assert "larger than 1048576 bytes" in response.json()["error"]
    else:
        assert response.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v1/jobs").json()["count"] == 0


def test_small_bodies_pass(client: TestClient) -> None:
    assert client.post("/v1/jobs", json=job_body()).status_code == 202
