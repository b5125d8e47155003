"""Multi-process jobs on one host: the worker's use case launches torchrun with 2 gloo ranks on the CPU, supervises them,
and retries an attempt whose rank was killed; rank 0 alone records, exports and registers (SQLite registry)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.data.builtins import load_builtin
from services.registry.entities import JobState, ModelVersion
from services.spec import Budget, JobSpec
from services.training.kinds.supervised import Supervised, evaluate
from services.training.pipeline import load_weights
from services.usecases.jobs import cancel_job, get_job
from services.usecases.training import WorkerContext, run_job
from tests.factories import job_body
from tests.integration.conftest import queue_job
from worker.launch import TorchrunLauncher

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the ranks share the test's registry


def ddp_job(epochs: int, **overrides: object) -> dict:
    return job_body(model_name="digits-ddp", training={"epochs": epochs}, distributed={"processes": 2}, **overrides)


@pytest.fixture
def ddp_ctx(ctx: WorkerContext, database_url: str, tmp_path: Path) -> WorkerContext:
    """The worker's context, with ranks that build theirs from the same registry and folders (as KILN_ settings)."""
    settings = {"DATA_DIR": tmp_path, "DATABASE_URL": database_url, "ARTIFACT_DIR": ctx.store.root, "DATASET_DIR": tmp_path / "datasets",
                "CHECKPOINT_DIR": ctx.checkpoints, "PARITY_ROWS": ctx.parity.rows, "PARITY_MAX_ABS_DIFF": ctx.parity.atol,
                "PARITY_RTOL": ctx.parity.rtol, "WORKER_METRICS_PORT": 0}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")} | {f"KILN_{k}": str(v) for k, v in settings.items()}
    budget = Budget(max_parameters=100_000_000, max_training_memory_mb=4096, max_training_processes=2)
    return dataclasses.replace(ctx, launch_ranks=TorchrunLauncher(env=env), budget=budget)


def test_a_two_process_job_reaches_its_target_and_registers_one_version(ddp_ctx: WorkerContext) -> None:
    job_id = queue_job(ddp_ctx, ddp_job(epochs=6))
    run_job(job_id, ddp_ctx)
    job = get_job(job_id, uow_factory=ddp_ctx.uow_factory)
    assert (job.state, job.version, job.attempt, job.error) == (JobState.SUCCEEDED, 1, 1, None)
    assert [e.epoch for e in job.history] == [1, 2, 3, 4, 5, 6]  # rank 0 alone recorded them
    with ddp_ctx.uow_factory() as uow:
        versions = uow.models.versions("digits-ddp")
    assert [v.version for v in versions] == [1]
    version = versions[0]
    assert version.metrics["test_accuracy"] >= 0.95 and version.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    assert not list(ddp_ctx.checkpoints.iterdir())  # checkpoints and the ranks' outcome folder are gone
    _validation_figures_cover_the_whole_split(ddp_ctx, job.history[-1].metrics, version)


def _validation_figures_cover_the_whole_split(ctx: WorkerContext, reported: dict, version: ModelVersion) -> None:
    """The last epoch's val_accuracy is the registered network's over the whole validation split, not rank 0's shard."""
    spec = JobSpec.model_validate(ddp_job(epochs=6))
    kind = Supervised(spec, load_builtin("digits"), torch.device("cpu"))
    kind.network.load_state_dict(load_weights(ctx.store.path_for(version.weights_sha256)))
    assert kind.val is not None and len(kind.val) > 0
    whole = evaluate(kind.trainer.model, kind.objective, kind.val, ["accuracy"])
    assert reported["val_accuracy"] == pytest.approx(whole["accuracy"], abs=1e-9)
    rows = np.asarray(kind.prepared.test[:8], dtype=np.float32)
    (served,) = ort.InferenceSession(str(ctx.store.path_for(version.artifact_sha256))).run(None, {"input": rows})
    assert served.shape == (8, 10)


def _ranks(ctx: WorkerContext) -> dict[int, int]:
    """{LOCAL_RANK: pid} of the live worker.ddp processes of this test (found by the checkpoint folder their settings name)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"worker.ddp" not in (proc / "cmdline").read_bytes():
                continue
            environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # it ended meanwhile
            continue
        if environ.get(b"KILN_CHECKPOINT_DIR") == str(ctx.checkpoints).encode() and b"LOCAL_RANK" in environ and state != "Z":
            ranks[int(environ[b"LOCAL_RANK"])] = int(proc.name)
    return ranks


def _run_in_background(job_id: uuid.UUID, ctx: WorkerContext) -> threading.Thread:
    thread = threading.Thread(target=run_job, args=(job_id, ctx), daemon=True)
    thread.start()
    return thread


def _wait_for_epoch(job_id: uuid.UUID, ctx: WorkerContext, epoch: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.epoch >= epoch for e in get_job(job_id, uow_factory=ctx.uow_factory).history):
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached epoch {epoch}")


def test_a_killed_rank_ends_the_attempt_and_the_next_resumes_from_its_checkpoint(
    ddp_ctx: WorkerContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.usecases.training")
    job_id = queue_job(ddp_ctx, ddp_job(epochs=12))
    thread = _run_in_background(job_id, ddp_ctx)
    _wait_for_epoch(job_id, ddp_ctx, 2)
    os.kill(_ranks(ddp_ctx)[1], signal.SIGKILL)  # rank 1, as the kernel's OOM killer would
    thread.join(timeout=180)
    job = get_job(job_id, uow_factory=ddp_ctx.uow_factory)
    assert (job.state, job.version, job.attempt, job.error) == (JobState.SUCCEEDED, 1, 2, None)
    assert [e.epoch for e in job.history] == list(range(1, 13))  # each epoch recorded once: the kept ones, then the rest
    assert "resumes after epoch" in caplog.text
    with ddp_ctx.uow_factory() as uow:
        assert len(uow.models.versions("digits-ddp")) == 1
    assert _ranks(ddp_ctx) == {}


def test_a_cancelled_two_process_job_stops_every_rank_and_registers_nothing(ddp_ctx: WorkerContext) -> None:
    job_id = queue_job(ddp_ctx, ddp_job(epochs=200))
    thread = _run_in_background(job_id, ddp_ctx)
    _wait_for_epoch(job_id, ddp_ctx, 1)
    cancel_job(job_id, uow_factory=ddp_ctx.uow_factory)
    thread.join(timeout=60)
    job = get_job(job_id, uow_factory=ddp_ctx.uow_factory)
    assert (job.state, job.version) == (JobState.CANCELLED, None)
    assert job.error == "cancelled while its training processes ran"
    assert _ranks(ddp_ctx) == {}
    with ddp_ctx.uow_factory() as uow:
        assert uow.models.versions("digits-ddp") == []
