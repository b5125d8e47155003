"""GANs through the API and a real worker: the DCGAN and conditional GAN examples train, render every epoch, and serve
`generate` (JSON and one PNG grid, the same seed the same samples) and v2 infer on z; a collapsing GAN warns its job."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.e2e.helpers import wait_for_job
from tests.factories import gan_body, tiny_job

GAN = json.loads((ROOT / "examples" / "gan_digits28.json").read_text())
CGAN = json.loads((ROOT / "examples" / "cgan_digits28.json").read_text())


def _short(body: dict[str, Any], epochs: int = 2) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["training"]["epochs"] = epochs
    return body


def _collapsing() -> dict[str, Any]:
    """A generator whose every z gives the same sample (zero last kernel, no learning to speak of)."""
    body = gan_body(epochs=1, training={"optimizer": {"name": "adam", "learning_rate": 1e-7}})
    body["model_name"] = "collapsing-gan"
    body["model"]["generator"]["layers"][-1]["kernel_initializer"] = "zeros"
    return body


@pytest.fixture(scope="module")
def trained(kiln: dict) -> dict[str, Any]:
    jobs = {"gan": _short(GAN), "cgan": _short(CGAN), "collapsing": _collapsing(), "classifier": tiny_job(model_name="not-a-gan")}
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        locations = {}
        for name, body in jobs.items():
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, (name, response.text)
            locations[name] = response.headers["location"]
        return {name: wait_for_job(client, location, timeout=300) for name, location in locations.items()}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_dcgan_example_trains_renders_each_epoch_and_generates(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["gan"]
    assert job["state"] == "succeeded", job["error"]
    url = f"/v1/models/gan-digits28/versions/{job['version']}"
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        images = [client.get(epoch["image"]) for epoch in job["history"]]
        version = client.get(url).json()
        first = client.post(f"{url}/generate", json={"n": 4, "seed": 7}).json()
        again = client.post("/v1/models/gan-digits28/generate", json={"n": 4, "seed": 7}).json()
        other = client.post(f"{url}/generate", json={"n": 4, "seed": 8}).json()
        grid = client.post(f"{url}/generate", json={"n": 16, "seed": 0}, headers={"Accept": "image/png"})
        z = np.random.default_rng(7).standard_normal((4, 32)).astype(np.float32)
        v2 = client.post(f"/v2/models/gan-digits28/versions/{job['version']}/infer",
                         json={"inputs": [{"name": "z", "shape": [4, 32], "datatype": "FP32", "data": z.ravel().tolist()}]})  # fmt: skip
        keras = client.get(f"{url}/keras")
        refused = client.post(f"{url}/generate", json={"n": 2, "labels": [1, 2]})
        too_many = client.post(f"{url}/generate", json={"n": 100_000})
    for epoch in job["history"]:
        assert {"d_loss", "g_loss", "d_x", "d_g_z"} <= set(epoch["metrics"])
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in images)
    assert _png_size(images[0].content) == (4 * 30 - 2, 4 * 30 - 2)  # the 16 fixed samples, 4 by 4, 2 pixels apart
    assert version["task"] == "generator" and version["generation"]["latent_dim"] == 32 and version["labels"] is None
    samples = np.asarray(first["outputs"])
    assert samples.shape == (4, 28, 28, 1) and ((samples >= 0) & (samples <= 1)).all() and first["seed"] == 7
    assert again["outputs"] == first["outputs"] and other["outputs"] != first["outputs"]  # the same seed, the same samples
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png" and _png_size(grid.content) == (118, 118)
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert output["name"] == "samples" and output["shape"] == [4, 28, 28, 1]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(4, 28, 28, 1), samples, atol=1e-6)  # v2 takes z directly
    assert keras.status_code == 200 and keras.json()["class_name"] == "Sequential"  # the generator's architecture
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "labels"
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "n"


def test_the_conditional_example_draws_the_class_asked_for(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["cgan"]
    assert job["state"] == "succeeded", job["error"]
    url = f"/v1/models/cgan-digits28/versions/{job['version']}/generate"
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        threes = client.post(url, json={"n": 3, "seed": 1, "labels": [3, "3", 3]}).json()
        sevens = client.post(url, json={"n": 3, "seed": 1, "labels": [7, 7, 7]}).json()
        each = client.post(url, json={"n": 12, "seed": 1}).json()
        bad = client.post(url, json={"n": 2, "seed": 1, "labels": [3, 10]})
        short = client.post(url, json={"n": 2, "labels": [3]})
    assert threes["labels"] == [3, 3, 3] and each["labels"] == [i % 10 for i in range(12)]
    assert np.asarray(threes["outputs"]).shape == (3, 28, 28, 1)
    assert threes["outputs"] != sevens["outputs"]  # the same z, another class
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "labels[1]" and "0..9" in bad.json()["error"]["message"]
    assert short.status_code == 422 and "expected 2" in short.json()["error"]["message"]


def test_a_collapsing_generator_warns_its_job_over_get_and_sse(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["collapsing"]
    assert job["state"] == "succeeded", job["error"]
    (warning,) = job["warnings"]
    assert warning["epoch"] == 1 and "collapse" in warning["message"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        stream = client.get(f"/v1/jobs/{job['id']}/events").text
    assert "event: warning" in stream and "collapse" in stream


def test_generate_on_a_model_that_is_not_a_gan_is_a_409_saying_what_it_is(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["classifier"]
    assert job["state"] == "succeeded", job["error"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        response = client.post(f"/v1/models/not-a-gan/versions/{job['version']}/generate", json={"n": 2})
        image = client.get(f"/v1/jobs/{job['id']}/epochs/1/image")
    assert response.status_code == 409 and "is a classifier" in response.json()["error"]["message"]
    assert image.status_code == 404 and "not a GAN" in image.json()["error"]["message"]
