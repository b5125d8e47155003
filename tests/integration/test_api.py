"""The HTTP API on the embedded defaults (a real SQLite registry and kombu's SQLite broker), no worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from services.config import Settings
from services.registry.artifacts import LocalArtifactStore
from services.registry.entities import NewVersion
from tests.conftest import embedded_settings, kiln_client
from tests.factories import job_body


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return embedded_settings(tmp_path, **overrides)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with kiln_client(_settings(tmp_path)) as c:
        yield c


def _queued_task_args(client: TestClient, queue: str) -> list[list[str]]:
    celery = client.app.state.kiln.celery
    found = []
    with celery.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                break
            found.append(message.payload[0] if isinstance(message.payload, list) else message.payload)
            assert message.headers["task"] == "kiln.run_job"
            message.ack()
        simple.close()
    return found


def test_submitted_job_is_queued_and_sent_after_commit(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=job_body())
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["state"], job["epoch"], job["history"], job["version"], job["queue"]) == ("queued", 0, [], None, "cpu")
    assert client.get(response.headers["location"]).json()["id"] == job["id"]
    assert _queued_task_args(client, "cpu") == [[job["id"]]]


def test_device_gpu_goes_to_the_gpu_queue(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=job_body(device="gpu")).json()
    assert job["queue"] == "gpu"
    assert _queued_task_args(client, "gpu") == [[job["id"]]]


def test_jobs_are_listed_newest_first_with_pagination(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", json=job_body(model_name=f"m{i}")).json()["id"] for i in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["count"] == 3
    assert [j["id"] for j in page["data"]] == ids[::-1][1:3]
    assert client.get("/v1/jobs", params={"state": "succeeded"}).json() == {"data": [], "count": 0}


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda b: b["model"]["layers"].append({"type": "Conv9"}), "model.layers[3]", "'Conv9'"),
        (lambda b: b["model"]["layers"][0].update(activation="rleu"), "model.layers[0].activation", "'relu'"),
        (lambda b: b["model"]["layers"][0].pop("units"), "model.layers[0].units", "is required"),
        (lambda b: b.pop("training"), "training", "is required"),
        (lambda b: b["training"].update(loss="hinge"), "training.loss", "'mse'"),
        (
            lambda b: b["model"].update(input_shape=[8, 8]),
            "model.layers[0]",
            "layer 0 'dense' (Dense) needs a flat input, got (None, 8, 8): add Flatten before it",
        ),
        (lambda b: b["model"].update(input_shape=[63]), "model.input_shape", "has 64 features per sample"),
        (lambda b: b["data"].update(dataset="mnist"), "data.dataset", "unknown dataset 'mnist'"),
        (lambda b: b.update(model_name="bad name/with slash"), "model_name", "pattern"),
        (lambda b: b["training"].update(epochs=0), "training.epochs", "greater than or equal to 1"),
    ],
)
def test_bad_spec_is_a_422_naming_the_field(client: TestClient, mutate, field: str, message: str) -> None:
    body = job_body()
    mutate(body)
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert message in error["message"]
    assert client.get("/v1/jobs").json()["count"] == 0  # nothing half-written


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]["message"]


def test_unknown_job_model_and_version_are_404(client: TestClient) -> None:
    assert client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/jobs/not-a-uuid").status_code == 422
    assert client.get("/v1/models/nope/versions").json()["error"]["message"] == "no model named 'nope'"
    assert client.post("/v1/models/nope/versions/1/predict", json={"inputs": [[0.0]]}).status_code == 404
    assert client.get("/v1/unknown").json()["error"]["code"] == "not_found"


def _register_scaling_model(client: TestClient, width: int = 4) -> None:
    """A real ONNX file (y = 2x) registered the way a worker registers one."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["input", "two"], ["output"])], "double", [x], [y], [two])
    context = client.app.state.kiln
    store = LocalArtifactStore(context.settings.artifacts)
    temp = store.temp_path()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), temp)
    stored = store.put(temp)
    signature = {
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, width]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, width]}],
    }
    with context.uow_factory() as uow:
        uow.models.add_version(NewVersion("double", None, stored.sha256, stored.size, signature, {}, {}, {}, {}))
        uow.commit()


def test_predict_runs_the_registered_onnx_file(client: TestClient) -> None:
    _register_scaling_model(client)
    response = client.post("/v1/models/double/versions/1/predict", json={"inputs": [[1, 2, 3, 4], [0.5, 0, 0, -1]]})
    assert response.status_code == 200
    assert response.json() == {"model": "double", "version": 1, "outputs": [[2, 4, 6, 8], [1, 0, 0, -2]], "labels": None}
    listed = client.get("/v1/models").json()
    assert listed["data"][0] | {"created_at": None} == {
        "name": "double",
        "latest_version": 1,
        "version_count": 1,
        "created_at": None,
        "aliases": None,
        "rollouts": None,
    }
    version = client.get("/v1/models/double/versions/1").json()
    assert version["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert client.get("/v1/models/double/versions/2").json()["error"]["message"] == "model 'double' has no version 2"


def test_predict_with_wrong_width_names_the_signature(client: TestClient) -> None:
    _register_scaling_model(client)
    response = client.post("/v1/models/double/versions/1/predict", json={"inputs": [[1, 2, 3]]})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "expected (N, 4) float32, got (N, 3) float32"


def test_metrics_count_requests_by_route_template_and_jobs_by_state(client: TestClient) -> None:
    client.post("/v1/jobs", json=job_body())
    for _ in range(3):
        client.get(f"/v1/jobs/{uuid.uuid4()}")
    text = client.get("/metrics").text
    assert 'kiln_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 3.0' in text
    assert 'kiln_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert 'kiln_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}"} 3.0' in text
    assert 'kiln_training_jobs{state="queued"} 1.0' in text
    assert 'kiln_training_jobs{state="succeeded"} 0.0' in text


def test_readyz_checks_database_and_broker(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    broken = _settings(tmp_path / "other", broker_url="redis://127.0.0.1:1/0", readiness_timeout_s=0.5)
    with kiln_client(broken) as other:
        response = other.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok" and response.json()["checks"]["broker"].startswith("error")


def test_unreachable_broker_fails_the_job_instead_of_losing_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    with kiln_client(settings) as client:
        client.app.state.kiln.celery.conf.broker_connection_max_retries = 0
        response = client.post("/v1/jobs", json=job_body())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        (job,) = client.get("/v1/jobs").json()["data"]
        assert job["state"] == "failed" and job["error"].startswith("could not enqueue")


def test_idempotency_key_returns_the_same_job_and_sends_it_once(client: TestClient) -> None:
    first = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "order-7"})
    again = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "order-7"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert _queued_task_args(client, "cpu") == [[first.json()["id"]]]  # sent once
    other = client.post("/v1/jobs", json=job_body(training={"epochs": 3}), headers={"Idempotency-Key": "order-7"})
    assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
    assert client.get("/v1/jobs").json()["count"] == 1


def test_cancelling_a_queued_job_ends_it_at_once(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=job_body()).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    assert client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


@pytest.mark.parametrize("source", ["/etc/passwd", "../../kiln.db", "file:///etc/passwd", "http://169.254.169.254/latest/meta-data"])
def test_a_dataset_named_by_path_or_url_is_refused_not_opened(client: TestClient, source: str) -> None:
    response = client.post("/v1/jobs", json=job_body(data={"dataset": source}))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "data.dataset" and "expected a built-in" in error["message"] and "uploaded dataset" in error["message"]
