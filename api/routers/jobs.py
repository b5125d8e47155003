"""`/v1/jobs`: submit a training job and follow it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import ContextDep
from api.schemas import JobPublic, JobsPublic, JobSummary
from services.registry.entities import JobState
from services.spec import JobSpec
from services.usecases.jobs import get_job, list_jobs, submit_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def create_job(spec: JobSpec, ctx: ContextDep, response: Response) -> JobPublic:
    """Queue a training job; poll the `Location` it returns."""
    job = submit_job(spec, uow_factory=ctx.uow_factory, dispatcher=ctx.dispatcher, stale_after_s=ctx.settings.worker_stale_after_s)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job)


@router.get("", response_model=JobsPublic)
def read_jobs(
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    state: JobState | None = None,
) -> JobsPublic:
    """Jobs, newest first."""
    jobs, count = list_jobs(uow_factory=ctx.uow_factory, limit=limit, offset=offset, state=state)
    return JobsPublic(data=[JobSummary.of(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: uuid.UUID, ctx: ContextDep) -> JobPublic:
    """One job: its state, current epoch, per-epoch history, error and resulting version."""
    return JobPublic.of(get_job(job_id, uow_factory=ctx.uow_factory))
