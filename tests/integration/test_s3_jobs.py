"""Jobs run in-process on the S3 stores, against a real S3 server and both registries: versions whose files live in S3
and load on a host that never saw them, uploads streamed from S3, resuming on another host, and an S3 server killed
mid-upload."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.data.ingest_common import UploadOptions, ZipLimits
from services.data.s3_store import S3DatasetStore
from services.registry.entities import JobState
from services.registry.s3 import S3Objects
from services.registry.s3_artifacts import S3ArtifactStore, S3Checkpoints
from services.spec import Budget
from services.training.pipeline import ParityCheck
from services.usecases.datasets import ReceivedFile, upload_dataset
from services.usecases.jobs import get_job
from services.usecases.training import WorkerContext, run_job
from tests.datasets_factory import npz_bytes
from tests.factories import tiny_job
from tests.integration.conftest import queue_job
from tests.integration.test_s3_store import MiB, kill_during, objects_on
from tests.integration.test_sweeper import Crash, Recorder, _crash_after_epoch, _sweep
from tests.s3_server import WeedServer

Hosts = Callable[[str], WorkerContext]


def hosts_on(objects: S3Objects, uow_factory, root: Path) -> Hosts:  # type: ignore[no-untyped-def]
    def host(name: str) -> WorkerContext:
        """A worker host sharing the bucket and the registry, with local folders of its own."""
        return WorkerContext(
            uow_factory=uow_factory, store=S3ArtifactStore(objects, root / name / "artifacts", cache_bytes=1 << 30),
            device=torch.device("cpu"), parity=ParityCheck(rows=64, atol=1e-4, rtol=0.0),
            datasets=S3DatasetStore(root / name / "datasets", objects), max_in_memory_bytes=2**30,
            checkpoints=root / name / "checkpoints", budget=Budget(max_parameters=100_000_000, max_training_memory_mb=4096),
            checkpoint_copies=S3Checkpoints(objects),
        )  # fmt: skip

    return host


@pytest.fixture
def objects(s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch) -> S3Objects:
    return objects_on(s3_server, monkeypatch)


@pytest.fixture
def hosts(objects: S3Objects, uow_factory, tmp_path: Path) -> Hosts:  # type: ignore[no-untyped-def]
    return hosts_on(objects, uow_factory, tmp_path)


def version_of(ctx: WorkerContext, job_id: uuid.UUID):  # type: ignore[no-untyped-def]
    with ctx.uow_factory() as uow:
        return uow.models.version_for_job(job_id)


def test_a_job_registers_a_version_whose_files_are_in_s3_and_serve_from_another_host(hosts: Hosts, objects: S3Objects) -> None:
    worker, api = hosts("worker"), hosts("api")
    job_id = queue_job(worker, tiny_job())
    run_job(job_id, worker)
    assert get_job(job_id, uow_factory=worker.uow_factory).state == JobState.SUCCEEDED
    version = version_of(worker, job_id)
    keys = set(objects.keys(objects.key("artifacts")))
    assert keys == {objects.key("artifacts", sha[:2], f"{sha}.onnx") for sha in (version.artifact_sha256, version.weights_sha256)}
    assert objects.keys(objects.key("checkpoints")) == []  # removed with the job's end, as the local ones are

    served = api.store.path_for(version.artifact_sha256)  # a host that never had it: fetched, checked, cached
    assert hashlib.sha256(served.read_bytes()).hexdigest() == version.artifact_sha256
    session = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": np.zeros((2, 64), np.float32)})
    assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_an_upload_is_streamed_from_s3_on_a_worker_that_never_saw_it(hosts: Hosts, tmp_path: Path) -> None:
    api, worker = hosts("api"), hosts("worker")
    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 10.0, size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > 50).astype(np.int64)
    source = tmp_path / "upload.npz"
    source.write_bytes(npz_bytes(x=x, y=y))
    received = ReceivedFile(source, "upload.npz", hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_size)
    record, _ = upload_dataset(received, UploadOptions(format="npz"), name=None, uow_factory=api.uow_factory,
                               store=api.datasets, limits=ZipLimits(10, 2**30))  # fmt: skip
    streamed = WorkerContext(**{**worker.__dict__, "max_in_memory_bytes": 0})  # rows read from disk in batches
    body = tiny_job(
        model={"input_shape": [6], "layers": [{"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 2}]},
        data={"dataset": str(record.id), "validation_split": 0.2, "normalization": "standard"},
        training={"epochs": 30, "optimizer": {"name": "adam", "learning_rate": 0.02}},
    )
    job_id = queue_job(streamed, body)
    run_job(job_id, streamed)
    job = get_job(job_id, uow_factory=worker.uow_factory)
    assert job.state == JobState.SUCCEEDED, job.error
    assert np.load(worker.datasets.folder(record.id) / "x.npy").tobytes() == x.tobytes()
    assert version_of(worker, job_id).metrics["test_accuracy"] >= 0.9


def test_an_attempt_resumes_on_another_host_from_the_checkpoint_in_s3(hosts: Hosts, objects: S3Objects,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    first, second = hosts("first"), hosts("second")
    body = tiny_job(training={"epochs": 4})
    straight = queue_job(first, body)
    run_job(straight, first)
    job_id = queue_job(first, body)
    _crash_after_epoch(monkeypatch, 2)
    with pytest.raises(Crash):
        run_job(job_id, first)
    monkeypatch.undo()
    assert objects.keys(objects.key("checkpoints")) == [objects.key("checkpoints", f"{job_id}.1.pt")]
    assert _sweep(second, Recorder()).requeued == [job_id]
    run_job(job_id, second)  # a host with no local checkpoint
    job = get_job(job_id, uow_factory=second.uow_factory)
    assert (job.state, job.attempt, [e.epoch for e in job.history]) == (JobState.SUCCEEDED, 2, [1, 2, 3, 4])
    assert version_of(second, job_id).artifact_sha256 == version_of(first, straight).artifact_sha256  # resumed exactly
    assert objects.keys(objects.key("checkpoints")) == []


@pytest.mark.parametrize("operation", ["PutObject", "UploadPart"])
def test_an_s3_server_killed_mid_upload_leaves_the_job_to_retry_and_registers_nothing_half_written(
    operation: str,
    uow_factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """Killed as the worker stores a small ONNX file (a single PUT), or a large model's weights (the second part of the
    second multipart upload, the ONNX file being stored already): the job is left running, not failed; once the
    server is back the sweeper takes it back and it succeeds, once, with no orphan left from the first attempt."""
    server = WeedServer(tmp_path / "s3")
    server.start()
    try:
        objects = objects_on(server, monkeypatch, part_bytes=5 * MiB)
        ctx = hosts_on(objects, uow_factory, tmp_path)("worker")
        wide = {"type": "Dense", "units": 2048, "activation": "relu"}  # about 17 MiB of weights: four parts each
        big = {"input_shape": [64], "layers": [wide, wide, {"type": "Dense", "units": 10, "activation": "softmax"}]}
        body = tiny_job(model=big) if operation == "UploadPart" else tiny_job()
        seen: list[str] = []

        def artifact_upload(params: dict) -> bool:  # type: ignore[type-arg]
            if "/artifacts/" not in params["Key"] or params.get("PartNumber", 2) != 2:
                return False
            seen.append(params["Key"])
            return operation == "PutObject" or len(seen) == 2

        kill_during(objects, server, operation, when=artifact_upload)
        job_id = queue_job(ctx, body)
        run_job(job_id, ctx)
        job = get_job(job_id, uow_factory=uow_factory)
        assert server.process is None, "the server was never killed"
        assert (job.state, job.attempt, job.version) == (JobState.RUNNING, 1, None)  # left for the sweeper, not failed
        assert version_of(ctx, job_id) is None
        cached = [p for p in ctx.store.cache.rglob("*") if p.is_file()]
        assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in cached)  # no temp file, no unchecked copy

        server.start()
        assert _sweep(ctx, Recorder()).requeued == [job_id]
        run_job(job_id, ctx)
        job = get_job(job_id, uow_factory=uow_factory)
        assert (job.state, job.attempt) == (JobState.SUCCEEDED, 2), job.error
        version = version_of(ctx, job_id)
        with ctx.uow_factory() as uow:
            assert len(uow.models.versions(version.model_name)) == 1
        for sha256 in (version.artifact_sha256, version.weights_sha256):
            fresh = S3ArtifactStore(objects, tmp_path / "fresh", cache_bytes=1 << 30)
            assert hashlib.sha256(fresh.read_bytes(sha256)).hexdigest() == sha256
        referenced = {objects.key("artifacts", s[:2], f"{s}.onnx") for s in (version.artifact_sha256, version.weights_sha256)}
        assert set(objects.keys(objects.key("artifacts"))) == referenced  # no orphan from the first attempt
    finally:
        server.stop()
