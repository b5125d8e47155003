"""Autoencoders through the API and a real worker: anomaly detection with the threshold training stored, the
bottleneck as a second output, and detect refused (409) for a model that is not an autoencoder."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from services.data.builtins import load_builtin
from tests.conftest import ROOT
from tests.e2e.helpers import wait_for_job
from tests.factories import tiny_job

ANOMALY = json.loads((ROOT / "examples" / "anomaly_autoencoder_digits.json").read_text())


@pytest.fixture(scope="module")
def trained(kiln: dict) -> dict[str, Any]:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        locations = {name: client.post("/v1/jobs", json=body).headers["location"]
                     for name, body in (("anomaly", ANOMALY), ("classifier", tiny_job(model_name="not-an-autoencoder")))}  # fmt: skip
        return {name: wait_for_job(client, location, timeout=300) for name, location in locations.items()}


def test_an_anomaly_autoencoder_flags_few_digits_and_nearly_all_noise(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["anomaly"]
    assert job["state"] == "succeeded", job["error"]
    digits = load_builtin("digits")
    noise = np.random.default_rng(0).uniform(0, 16, (200, 64)).round()
    url = f"/v1/models/anomaly-digits/versions/{job['version']}"
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        version = client.get(url).json()
        held_out = client.post(f"{url}/detect", json={"inputs": digits.x_test.tolist()}).json()
        random = client.post("/v1/models/anomaly-digits/detect", json={"inputs": noise.tolist()}).json()
        strict = client.post(f"{url}/detect", json={"inputs": digits.x_test[:20].tolist(), "threshold": 0}).json()
        code = client.post(f"{url}/predict", json={"inputs": digits.x_test[:3].tolist(), "output": "code"}).json()
        huge = client.post(f"{url}/detect", json={"inputs": [[3.4e38] * 32 + [-3.4e38] * 32]})  # overflows the float32 graph
    assert version["task"] == "autoencoder" and version["labels"] is None
    anomaly = version["anomaly"]
    assert anomaly["percentile"] == 99 and anomaly["threshold"] == held_out["threshold"] > 0
    assert anomaly["percentiles"]["50"] < anomaly["percentiles"]["99"] <= anomaly["percentiles"]["99.9"]
    flagged = np.mean(held_out["anomalies"])
    assert flagged < 0.1, flagged  # about 1 - 0.99 of rows like the validation split
    assert np.mean(random["anomalies"]) > 0.95  # uniform noise is nothing like a digit
    assert len(held_out["scores"]) == len(digits.x_test) and min(held_out["scores"]) >= 0
    assert strict["threshold"] == 0 and all(strict["anomalies"])  # the request's threshold overrides the stored one
    assert np.asarray(code["outputs"]).shape == (3, 12)  # the bottleneck, served by name
    assert huge.status_code == 200 and huge.json()["anomalies"] == [True] and huge.json()["scores"][0] > 1e300


def test_detect_on_a_model_that_is_not_an_autoencoder_is_a_409_saying_what_it_is(kiln: dict, trained: dict[str, Any]) -> None:
    job = trained["classifier"]
    assert job["state"] == "succeeded", job["error"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        response = client.post(f"/v1/models/not-an-autoencoder/versions/{job['version']}/detect", json={"inputs": [[0] * 64]})
        bad = client.post("/v1/models/anomaly-digits/detect", json={"inputs": [[0] * 64], "threshold": "high"})
    assert response.status_code == 409 and "is a classifier" in response.json()["error"]["message"]
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "threshold"
