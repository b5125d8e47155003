"""The worker's use case on a real registry (both backends), real torch and onnxruntime, in-process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import services.usecases.training as training_usecase
from services.data.ingest_common import UploadOptions, ZipLimits
from services.registry.entities import JobState
from services.usecases.datasets import ReceivedFile, upload_dataset
from services.usecases.jobs import cancel_job, get_job
from services.usecases.training import WorkerContext, run_job
from tests.datasets_factory import npz_bytes
from tests.factories import tiny_job
from tests.integration.conftest import queue_job


def _artifact_files(ctx: WorkerContext) -> list[Path]:
    return [p for p in ctx.store.root.rglob("*") if p.is_file()]


def _rebuilt_from_weights_matches_onnx(ctx: WorkerContext, version: Any) -> None:
    """The stored spec and the safetensors state dict rebuild the network exactly: it answers as the ONNX file does."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from services.spec import ModelSpec
    from services.training.builder import build_network
    from services.training.pipeline import load_weights

    assert version.weights_sha256 is not None
    network = build_network(ModelSpec.model_validate(version.spec), fuse_output_activation=True)
    network.load_state_dict(load_weights(ctx.store.path_for(version.weights_sha256)))
    rows = np.random.default_rng(0).uniform(0, 16, (8, 64)).astype(np.float32)
    with torch.no_grad():
        rebuilt = network.eval()(torch.from_numpy(rows)).numpy()
    (served,) = ort.InferenceSession(str(ctx.store.path_for(version.artifact_sha256))).run(None, {"input": rows})
    np.testing.assert_allclose(rebuilt, served, atol=1e-5)


def test_successful_job_registers_a_version_with_its_artifact(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job(data={"validation_split": 0.2}))
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.version, job.error, job.attempt) == (JobState.SUCCEEDED, 1, None, 1)
    assert [e.epoch for e in job.history] == [1, 2] and all(e.val_loss is not None for e in job.history)
    with ctx.uow_factory() as uow:
        version = uow.models.get_version("digits-mlp", 1)
    assert version is not None and version.job_id == job_id
    assert ctx.store.exists(version.artifact_sha256)
    assert ctx.store.path_for(version.artifact_sha256).stat().st_size == version.artifact_size
    assert version.signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
    assert 0 < version.metrics["test_accuracy"] <= 1 and version.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    assert version.dataset["name"] == "digits" and len(version.dataset["sha256"]) == 64
    assert version.weights_sha256 is not None
    assert ctx.store.path_for(version.weights_sha256).stat().st_size == version.weights_size
    stored = [ctx.store.path_for(version.artifact_sha256), ctx.store.path_for(version.weights_sha256)]
    assert sorted(_artifact_files(ctx)) == sorted(stored)  # the ONNX file and the weights; no temp file left
    _rebuilt_from_weights_matches_onnx(ctx, version)


def test_duplicate_delivery_does_nothing(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job())
    run_job(job_id, ctx)
    run_job(job_id, ctx)
    assert get_job(job_id, uow_factory=ctx.uow_factory).attempt == 1
    with ctx.uow_factory() as uow:
        assert len(uow.models.versions("digits-mlp")) == 1


def test_training_failure_leaves_a_readable_error_and_nothing_else(ctx: WorkerContext) -> None:
    exploding = tiny_job(
        model={"input_shape": [10], "layers": [{"type": "Dense", "units": 1}]},
        data={"dataset": "diabetes"},
        training={"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 10.0}, "epochs": 50},
    )
    job_id = queue_job(ctx, exploding)
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.FAILED and job.error is not None and job.error.startswith("diverged at epoch")
    (warning,) = job.warnings  # a non-finite loss is one of the warnings a job gives
    assert warning["message"] == job.error and warning["epoch"] == int(job.error.split()[3].rstrip(","))
    with ctx.uow_factory() as uow:
        assert uow.models.summaries() == []
    assert _artifact_files(ctx) == []


def test_failed_registration_removes_the_artifact(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(training_usecase, "_register", refuse)
    job_id = queue_job(ctx, tiny_job())
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.error) == (JobState.FAILED, "RuntimeError: database went away")
    assert _artifact_files(ctx) == []


def _upload_npz(ctx: WorkerContext, tmp_path: Path, x: np.ndarray, y: np.ndarray) -> uuid.UUID:
    source = tmp_path / "upload.npz"
    source.write_bytes(npz_bytes(x=x, y=y))
    received = ReceivedFile(source, "upload.npz", hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_size)
    record, created = upload_dataset(received, UploadOptions(format="npz"), name=None, uow_factory=ctx.uow_factory,
                                     store=ctx.datasets, limits=ZipLimits(10, 2**30))  # fmt: skip
    assert created
    return record.id


def test_upload_larger_than_memory_budget_is_streamed_and_normalised_in_the_graph(ctx: WorkerContext, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 10.0, size=(400, 6)).astype(np.float32)  # far from zero-mean: normalisation matters
    y = (x[:, 0] > 50).astype(np.int64)
    dataset_id = _upload_npz(ctx, tmp_path, x, y)
    streamed = dataclasses.replace(ctx, max_in_memory_bytes=0)  # every array counts as too large: rows are read in batches
    body = tiny_job(
        model={"input_shape": [6], "layers": [{"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 2}]},
        data={"dataset": str(dataset_id), "validation_split": 0.2, "normalization": "standard"},
        training={"epochs": 30, "optimizer": {"name": "adam", "learning_rate": 0.02}},
    )
    job_id = queue_job(streamed, body)
    run_job(job_id, streamed)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.SUCCEEDED, job.error
    with ctx.uow_factory() as uow:
        version = uow.models.get_version("digits-mlp", 1)
        assert uow.datasets.versions_using(dataset_id) == 1
    assert version is not None and version.dataset_id == dataset_id and version.labels == ["0", "1"]
    assert version.metrics["test_accuracy"] >= 0.9
    session = ort.InferenceSession(str(ctx.store.path_for(version.artifact_sha256)), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": np.array([[70, 50, 50, 50, 50, 50], [30, 50, 50, 50, 50, 50]], np.float32)})
    assert probabilities.argmax(axis=1).tolist() == [1, 0]  # raw values in: the graph normalises them


def test_job_events_are_logged_with_the_job_id(ctx: WorkerContext, capsys: pytest.CaptureFixture[str]) -> None:
    from services.logs import configure_logging

    configure_logging(level="info", json_lines=True)
    job_id = queue_job(ctx, tiny_job())
    run_job(job_id, ctx)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == str(job_id)]
    assert [line["epoch"] for line in mine if "epoch" in line] == [1, 2]
    assert [line["state"] for line in mine if "state" in line] == ["running", "succeeded"]
    assert all(line["loss"] > 0 for line in mine if "epoch" in line)


def test_cancelled_job_stops_at_a_batch_and_registers_no_version(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job(training={"epochs": 400}))
    runner = threading.Thread(target=run_job, args=(job_id, ctx))
    runner.start()
    deadline = time.monotonic() + 60
    while not get_job(job_id, uow_factory=ctx.uow_factory).history:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cancel_job(job_id, uow_factory=ctx.uow_factory).cancel_requested
    runner.join(timeout=60)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.CANCELLED and job.error is not None and job.error.startswith("cancelled at epoch")
    assert 1 <= job.epoch < 400 and job.version is None
    with ctx.uow_factory() as uow:
        assert uow.models.summaries() == []
    assert _artifact_files(ctx) == []
    run_job(job_id, ctx)  # a late re-delivery claims nothing
    assert get_job(job_id, uow_factory=ctx.uow_factory).attempt == 1


def test_a_job_past_its_max_duration_fails_and_registers_nothing(ctx: WorkerContext) -> None:
    job_id = queue_job(ctx, tiny_job(training={"epochs": 2000, "max_duration_s": 0.5}))
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.FAILED and job.error is not None
    assert job.error.startswith("stopped at epoch") and job.error.endswith("training.max_duration_s of 0.5 s reached")
    assert job.epoch < 2000 and job.version is None and _artifact_files(ctx) == []
