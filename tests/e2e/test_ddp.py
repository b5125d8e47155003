"""A two-process job through the real Celery worker (PostgreSQL, Redis): its pool child starts torchrun with 2 gloo
ranks, rank 0 records the epochs the event stream shows and registers the one version that is then served."""

from __future__ import annotations

import httpx
import numpy as np

from services.data.builtins import load_builtin
from tests.e2e.helpers import check_event_stream, job_events, one_version_each, wait_for_job
from tests.factories import job_body


def test_a_two_process_job_trains_registers_one_version_and_serves_it(kiln: dict) -> None:
    body = job_body(model_name="digits-ddp-e2e", training={"epochs": 6}, distributed={"processes": 2})
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        check_event_stream(job_events(kiln["url"], response.json()["id"], kiln["headers"]), epochs=6)
        job = wait_for_job(client, response.headers["location"])
        assert (job["state"], job["attempt"], job["error"]) == ("succeeded", 1, None), job
        assert [e["epoch"] for e in job["history"]] == [1, 2, 3, 4, 5, 6]
        one_version_each(client, [job])
        version = client.get(f"/v1/models/digits-ddp-e2e/versions/{job['version']}").json()
        assert version["metrics"]["onnx_parity_max_abs_diff"] <= 1e-4 and version["metrics"]["test_accuracy"] >= 0.95
        test = load_builtin("digits")
        predicted = client.post(f"/v1/models/digits-ddp-e2e/versions/{job['version']}/predict", json={"inputs": test.x_test.tolist()})
        accuracy = float((np.asarray(predicted.json()["outputs"]).argmax(axis=1) == test.y_test).mean())
        assert accuracy == version["metrics"]["test_accuracy"]  # served = what rank 0 tested
    assert "torchrun (pid" in kiln["logs"][1].read_text()
