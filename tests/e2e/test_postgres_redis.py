"""End to end on the production shape: PostgreSQL registry, Redis broker, a real Celery worker process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import (
    check_event_stream,
    job_events,
    rss_mib,
    train_digits_and_predict,
    wait_for_job,
)
from tests.factories import tiny_job


def test_digits_job_trains_registers_and_serves_above_95_percent(kiln: dict) -> None:
    result = train_digits_and_predict(kiln["url"], kiln["headers"])
    version = result["version"]
    print(
        f"\n[e2e postgres+redis] wall {result['wall_s']:.2f}s, test accuracy {result['accuracy']:.4f}, "
        f"parity {version['metrics']['onnx_parity_max_abs_diff']:.2e}, API RSS {rss_mib(kiln['api'].pid):.0f} MiB"
    )
    assert result["accuracy"] >= 0.95
    assert result["accuracy"] == pytest.approx(version["metrics"]["test_accuracy"], abs=1e-9)  # served = trained
    assert version["metrics"]["onnx_parity_max_abs_diff"] <= 1e-4
    assert version["job_id"] == result["job"]["id"] and version["dataset"]["name"] == "digits"
    artifact = kiln["data_dir"] / "artifacts" / version["artifact"]["sha256"][:2] / f"{version['artifact']['sha256']}.onnx"
    assert artifact.stat().st_size == version["artifact"]["size"]


def test_the_api_process_never_loads_torch(kiln: dict) -> None:
    train_digits_and_predict(kiln["url"], kiln["headers"])  # after serving a trained model too
    maps = Path(f"/proc/{kiln['api'].pid}/maps").read_text()
    assert "libtorch" not in maps and "onnxruntime" in maps


def test_versions_increase_and_metrics_report_jobs_by_state(kiln: dict) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        before = client.get("/v1/models/digits-mlp/versions").json()["count"]  # earlier tests registered some
        locations = [client.post("/v1/jobs", json=tiny_job()).headers["location"] for _ in range(2)]
        jobs = [wait_for_job(client, loc) for loc in locations]
        assert [j["state"] for j in jobs] == ["succeeded", "succeeded"]
        assert sorted(j["version"] for j in jobs) == [before + 1, before + 2]
        metrics = client.get("/metrics").text
        succeeded = client.get("/v1/jobs", params={"state": "succeeded"}).json()["count"]
        assert f'kiln_training_jobs{{state="succeeded"}} {float(succeeded)}' in metrics


def test_job_events_stream_each_epoch_then_the_end(kiln: dict) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        job = client.post("/v1/jobs", json=tiny_job(training={"epochs": 5})).json()
        assert client.get(f"/v1/jobs/{uuid.uuid4()}/events").status_code == 404
    check_event_stream(job_events(kiln["url"], job["id"], kiln["headers"]), epochs=5)


def test_cancel_stops_a_running_job_on_the_worker(kiln: dict) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        job = client.post("/v1/jobs", json=tiny_job(model_name="to-cancel", training={"epochs": 400})).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job['id']}").json()["epoch"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
        ended = wait_for_job(client, f"/v1/jobs/{job['id']}")
        assert ended["state"] == "cancelled" and ended["version"] is None and ended["epoch"] < 400
        assert client.get("/v1/models/to-cancel/versions").status_code == 404
