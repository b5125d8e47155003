"""Budgets end to end: a spec over KILN_MAX_PARAMETERS or KILN_MAX_TRAINING_MEMORY_MB is a 422 at POST /v1/jobs,
and a job queued under looser limits fails on the worker before it loads or builds anything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import services.usecases.training as training_usecase
from services.registry.entities import JobState
from services.spec import Budget
from services.usecases.jobs import get_job
from services.usecases.training import WorkerContext, run_job
from tests.conftest import embedded_settings, kiln_client
from tests.factories import job_body, tiny_job
from tests.integration.conftest import queue_job

HUGE = {"input_shape": [64], "layers": [{"type": "Dense", "units": 65536}, {"type": "Dense", "units": 65536}]}
WIDE = {"input_shape": [64], "layers": [{"type": "Dense", "units": 2048}, {"type": "Dense", "units": 2048}, {"type": "Dense", "units": 10}]}


def test_a_4_billion_parameter_spec_is_refused_at_submission_with_the_figure(tmp_path: Path) -> None:
    with kiln_client(embedded_settings(tmp_path)) as client:
        response = client.post("/v1/jobs", json=job_body(model=HUGE))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["message"] == "layer 1 'dense_1' (Dense): 4,295,032,832 parameters, over KILN_MAX_PARAMETERS=100,000,000"
        assert (error["code"], error["field"]) == ("invalid_spec", "model.layers[1]")
        assert client.get("/v1/jobs").json()["count"] == 0


def test_a_spec_over_the_memory_limit_is_refused_naming_layer_figure_and_limit(tmp_path: Path) -> None:
    # 2048 x 2048 Dense under Adam: 4.3 M parameters x 4 values x 4 bytes, about 67 MB by layer 1.
    with kiln_client(embedded_settings(tmp_path, max_training_memory_mb=40)) as client:
        response = client.post("/v1/jobs", json=job_body(model=WIDE))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "model.layers[1]"
        assert error["message"].startswith("layer 1 'dense_1' (Dense): training needs about 67 MB by this layer")
        assert error["message"].endswith("over KILN_MAX_TRAINING_MEMORY_MB=40")
        plain_sgd = job_body(model=WIDE, training={"optimizer": "sgd"})  # no optimizer state: about 33 MB
        assert client.post("/v1/jobs", json=plain_sgd).status_code == 202


def test_the_worker_fails_a_job_over_its_budget_before_loading_anything(ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = queue_job(ctx, tiny_job(model=WIDE))  # accepted where the limits were looser
    loaded: list[object] = []
    monkeypatch.setattr(training_usecase, "_load", lambda *args: loaded.append(args))  # would be the first allocation
    strict = dataclasses.replace(ctx, budget=Budget(max_parameters=4_300_000, max_training_memory_mb=10**6))
    run_job(job_id, strict)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert (job.state, job.attempt, job.version) == (JobState.FAILED, 1, None)
    assert job.error == "layer 1 'dense_1' (Dense): 4,196,352 parameters bring the model to 4,329,472, over KILN_MAX_PARAMETERS=4,300,000"
    assert loaded == []
    assert [p for p in ctx.store.root.rglob("*") if p.is_file()] == []
    run_job(job_id, strict)  # a second delivery of the message does not try again
    assert get_job(job_id, uow_factory=ctx.uow_factory).attempt == 1


def test_more_training_processes_than_the_cap_is_a_422_naming_the_field_and_the_cap(tmp_path: Path) -> None:
    with kiln_client(embedded_settings(tmp_path, max_training_processes=2)) as client:
        response = client.post("/v1/jobs", json=job_body(distributed={"processes": 3}))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_spec", "distributed.processes")
        assert error["message"] == "3 training processes asked, over KILN_MAX_TRAINING_PROCESSES=2"
        response = client.post("/v1/jobs", json=job_body(distributed={"processes": 0}))
        assert response.status_code == 422 and response.json()["error"]["field"] == "distributed.processes", response.text
        assert client.get("/v1/jobs").json()["count"] == 0
