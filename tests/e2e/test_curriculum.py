"""Every example job in examples/ trains through the API on a real worker, exports, and serves."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import numpy as np
import pytest

from services.data.builtins import load_builtin
from services.spec import ModelSpec, has_dynamic_time_axis
from tests.conftest import ROOT
from tests.e2e.helpers import wait_for_job

# GANs serve `generate`, not predict (tests/e2e/test_gans.py trains them); a transfer example needs its base first
# (tests/e2e/test_transfer.py trains it after the base); a study is not a job (tests/integration/test_studies_api.py).
EXAMPLES = {
    path.stem: body
    for path in sorted((ROOT / "examples").glob("*.json"))
    if "study_name" not in (body := json.loads(path.read_text())) and body.get("kind") != "gan" and "base" not in body["model"]
}


def _small(body: dict[str, Any]) -> dict[str, Any]:
    """The same job on less data and fewer epochs, so the whole catalogue trains in seconds."""
    body = copy.deepcopy(body)
    body["training"]["epochs"] = min(body["training"]["epochs"], 2)
    if body["data"]["dataset"] in ("shapes", "sine", "tokens"):
        body["data"]["samples"] = 120
    return body


@pytest.fixture(scope="module")
def trained(kiln: dict) -> dict[str, dict]:
    """Submit every example at once, then wait for them all."""
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        locations = {}
        for name, body in EXAMPLES.items():
            response = client.post("/v1/jobs", json=_small(body))
            assert response.status_code == 202, (name, response.text)
            locations[name] = response.headers["location"]
        return {name: wait_for_job(client, location, timeout=300) for name, location in locations.items()}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_trains_exports_and_serves(kiln: dict, trained: dict[str, dict], name: str) -> None:
    job, body = trained[name], EXAMPLES[name]
    assert job["state"] == "succeeded", job["error"]
    assert len(job["history"]) == job["epoch"] >= 1
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        version = client.get(f"/v1/models/{body['model_name']}/versions/{job['version']}").json()
        assert version["metrics"]["onnx_parity_max_abs_diff"] <= 1e-4
        model = ModelSpec.model_validate(body["model"])  # Kiln's form or Keras' own JSON
        small = _small(body)["data"]
        data = load_builtin(small["dataset"], samples=small.get("samples"))
        flat, start, feeds = data.x_test[:5].reshape(5, -1), 0, {}
        assert [s["name"] for s in version["signature"]["inputs"]] == model.export_names[0]
        for signature, shape in zip(version["signature"]["inputs"], model.input_shapes, strict=True):
            size = int(np.prod(shape))
            feeds[signature["name"]] = flat[:, start : start + size].reshape(5, *shape).tolist()
            start += size
            wanted = [-1, *shape]
            if has_dynamic_time_axis(model):
                wanted[1] = -1  # sequence models take any length
            assert signature["shape"] == wanted and signature["dtype"] == str(data.x_test.dtype)
        inputs = next(iter(feeds.values())) if len(feeds) == 1 else feeds
        response = client.post(f"/v1/models/{body['model_name']}/versions/{job['version']}/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
    outputs = np.asarray(response.json()["outputs"])
    assert len(outputs) == 5 and np.isfinite(outputs).all()
    if body["training"]["loss"].endswith("categorical_crossentropy"):
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)  # probabilities from the lifted softmax
    if body["training"]["loss"] == "binary_crossentropy":
        assert ((outputs >= 0) & (outputs <= 1)).all()


def test_cnn_on_digits_reaches_98_percent_through_the_api(kiln: dict) -> None:
    body = EXAMPLES["cnn_digits"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        response = client.post("/v1/jobs", json=body)
        job = wait_for_job(client, response.headers["location"])
        assert job["state"] == "succeeded", job["error"]
        test = load_builtin("digits")
        rows = test.x_test.reshape(-1, 8, 8, 1).tolist()
        outputs = np.asarray(
            client.post(f"/v1/models/cnn-digits/versions/{job['version']}/predict", json={"inputs": rows}).json()["outputs"]
        )
    accuracy = float((outputs.argmax(axis=1) == test.y_test).mean())
    print(f"\n[e2e cnn-digits] test accuracy {accuracy:.4f}, {job['epoch']} epochs")
    assert accuracy >= 0.98
