"""tritonclient's HTTP client, with its default settings, against Kiln's Open Inference Protocol v2."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient._plugin import InferenceServerClientPlugin
from tritonclient.utils import InferenceServerException

from tests.onnx_factory import linear_softmax

WEIGHTS = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]], np.float32)


class BearerKey(InferenceServerClientPlugin):
    """tritonclient's plugin hook, as its BasicAuth uses it: one header on every request."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def __call__(self, request: Any) -> None:
        request.headers.update(self.headers)


@pytest.fixture(scope="module")
def client(kiln: dict) -> triton.InferenceServerClient:
    response = httpx.post(f"{kiln['url']}/v1/models/triton-byo/versions", files={"file": ("m.onnx", linear_softmax(WEIGHTS))},
                          headers=kiln["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    client = triton.InferenceServerClient(url=kiln["url"].removeprefix("http://"))
    client.register_plugin(BearerKey(kiln["headers"]))
    return client


def _expected(x: np.ndarray) -> np.ndarray:
    logits = x @ WEIGHTS
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("triton-byo", "1") and client.is_model_ready("triton-byo")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata("triton-byo", "1")
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer_returns_the_models_probabilities_and_echoes_the_id(client: triton.InferenceServerClient, binary: bool) -> None:
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    features = triton.InferInput("features", list(x.shape), "FP32")
    features.set_data_from_numpy(x, binary_data=binary)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer("triton-byo", [features], model_version="1", outputs=[output], request_id="42")
    np.testing.assert_allclose(result.as_numpy("probabilities"), _expected(x), rtol=1e-5)
    assert result.get_response()["id"] == "42"


def test_infer_with_every_default(client: triton.InferenceServerClient) -> None:
    x = np.ones((1, 3), np.float32)
    features = triton.InferInput("features", [1, 3], "FP32")
    features.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("triton-byo", [features]).as_numpy("probabilities"), _expected(x), rtol=1e-5)


def test_errors_reach_the_client_with_their_message(client: triton.InferenceServerClient) -> None:
    features = triton.InferInput("features", [1, 2], "FP32")
    features.set_data_from_numpy(np.ones((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected \(N, 3\) float32"):
        client.infer("triton-byo", [features])
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.infer("nope", [features])
