"""The S3 artifact store end to end: a real API and Celery worker on PostgreSQL and Redis, keeping everything in a real
S3 server (SeaweedFS), each with local folders of its own, so whatever one hands the other goes through S3; and the S3
server killed while a job trains, which the job survives."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.data.builtins import load_builtin
from tests.datasets_factory import iris_csv
from tests.e2e.helpers import DIGITS_MLP, job_now, wait_for_job
from tests.s3_server import WeedServer


def s3_stack(stack_on: Any, redis_url: str, server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             **settings: str) -> tuple[Any, str]:  # fmt: skip
    """A stack whose worker runs on folders of its own: the API's and the worker's hosts share only S3 and SQL."""
    for name, value in server.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    bucket = server.new_bucket()
    stack = stack_on(redis_url, artifact_url=f"s3://{bucket}/e2e", s3_endpoint_url=server.endpoint, **settings)
    stack.kill_worker()
    elsewhere = tmp_path / "worker-host"
    stack.env = stack.env | {f"KILN_{name}_DIR": str(elsewhere / name.lower()) for name in ("ARTIFACT", "DATASET", "CHECKPOINT")}
    stack.start_worker()
    return stack, bucket


def test_a_job_on_an_uploaded_dataset_trains_registers_and_serves_through_s3(
    stack_on: Any, redis_url: str, s3_server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, bucket = s3_stack(stack_on, redis_url, s3_server, tmp_path, monkeypatch)
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=60) as client:
        uploaded = client.post("/v1/datasets", files={"file": ("iris.csv", iris_csv())}, data={"target": "species"})
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()
        iris = {"model_name": "iris-s3", "data": {"dataset": dataset["id"], "validation_split": 0.2},
                "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 16, "activation": "relu"},
                                                         {"type": "Dense", "units": 3, "activation": "softmax"}]},
                "training": {"epochs": 60, "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.02},
                             "loss": "sparse_categorical_crossentropy"}}  # fmt: skip
        posted = [client.post("/v1/jobs", json=body) for body in (DIGITS_MLP, iris)]
        assert [p.status_code for p in posted] == [202, 202], [p.text for p in posted]
        jobs = [p.headers["location"] for p in posted]
        digits_job, iris_job = (wait_for_job(client, location) for location in jobs)
        assert digits_job["state"] == iris_job["state"] == "succeeded", (digits_job["error"], iris_job["error"])

        test = load_builtin("digits")
        predicted = client.post("/v1/models/digits-mlp/predict", json={"inputs": test.x_test.tolist()})
        assert predicted.status_code == 200, predicted.text
        assert (np.asarray(predicted.json()["outputs"]).argmax(axis=1) == test.y_test).mean() >= 0.95
        setosa = client.post("/v1/models/iris-s3/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
        assert setosa.status_code == 200 and setosa.json()["labels"] == ["setosa"], setosa.text

        version = client.get("/v1/models/digits-mlp/versions/1").json()
        onnx = client.get("/v1/models/digits-mlp/versions/1/artifact")
        assert hashlib.sha256(onnx.content).hexdigest() == version["artifact"]["sha256"]

    keys = set(s3_server.keys(bucket, "e2e/"))
    for sha256 in (version["artifact"]["sha256"], version["weights"]["sha256"]):
        assert f"e2e/artifacts/{sha256[:2]}/{sha256}.onnx" in keys
    assert f"e2e/datasets/{dataset['id']}/manifest.json" in keys
    assert not any(key.startswith("e2e/checkpoints/") for key in keys)  # removed when the jobs ended
    worker_host = tmp_path / "worker-host"
    assert (worker_host / "dataset" / dataset["id"]).is_dir()  # fetched from S3: the upload went to the API's host
    assert list((worker_host / "artifact" / "s3-cache").glob(f"??/{version['artifact']['sha256']}"))  # the worker's own cache
    assert list((stack.tmp / "artifacts" / "s3-cache").glob(f"??/{version['artifact']['sha256']}"))  # the API's, fetched to serve


def test_an_s3_server_killed_while_a_job_trains_costs_an_attempt_and_nothing_else(stack_on: Any, redis_url: str, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    server = WeedServer(tmp_path / "s3")
    server.start()
    try:
        stack, bucket = s3_stack(stack_on, redis_url, server, tmp_path, monkeypatch, max_attempts="5")
        body = DIGITS_MLP | {"model_name": "s3-fault", "training": DIGITS_MLP["training"] | {"epochs": 12}}
        with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=60) as client:
            location = client.post("/v1/jobs", json=body).headers["location"]
            job_id = location.rsplit("/", 1)[-1]
            deadline = time.monotonic() + 120
            while job_now(client, job_id)["epoch"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            server.kill()  # the next checkpoint copy, or the artifact, cannot be stored
            time.sleep(1.5)
            server.start()
            job = wait_for_job(client, location)
            assert job["state"] == "succeeded", (job["error"], stack.logs())
            assert job["attempt"] >= 2 and [e["epoch"] for e in job["history"]] == list(range(1, 13))
            versions = client.get("/v1/models/s3-fault/versions").json()
        assert "the artifact store cannot be reached" in stack.logs(tail=10**7)
        assert [v["version"] for v in versions["data"]] == [1]
        sha256s = {versions["data"][0]["artifact"]["sha256"], versions["data"][0]["weights"]["sha256"]}
        artifacts = {key for key in server.keys(bucket, "e2e/") if key.startswith("e2e/artifacts/")}
        assert artifacts == {f"e2e/artifacts/{s[:2]}/{s}.onnx" for s in sha256s}  # nothing half-written, nothing orphaned
    finally:
        server.stop()
