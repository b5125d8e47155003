"""A worker's context on the registry under test (both backends), for running jobs in-process."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from services.data.store import DatasetStore
from services.registry.artifacts import LocalArtifactStore
from services.spec import Budget, JobSpec
from services.training.pipeline import ParityCheck
from services.usecases.training import WorkerContext


@pytest.fixture
def ctx(uow_factory, tmp_path: Path) -> WorkerContext:
    return WorkerContext(
        uow_factory=uow_factory,
        store=LocalArtifactStore(tmp_path / "artifacts"),
        device=torch.device("cpu"),
        parity=ParityCheck(rows=64, atol=1e-4, rtol=0.0),
        datasets=DatasetStore(tmp_path / "datasets"),
        max_in_memory_bytes=2**30,
        checkpoints=tmp_path / "checkpoints",
        budget=Budget(max_parameters=100_000_000, max_training_memory_mb=4096),
    )


def queue_job(ctx: WorkerContext, body: dict) -> uuid.UUID:
    """A job recorded as queued, as the API records it (no message is sent)."""
    job_id = uuid.uuid4()
    spec = JobSpec.model_validate(body)
    with ctx.uow_factory() as uow:
        uow.jobs.add(job_id=job_id, model_name=spec.model_name, spec=spec.model_dump(mode="json"), queue="cpu")
        uow.commit()
    return job_id
