"""Thin tasks: take a job id, call the use case. The database says what is true, not the message."""

from __future__ import annotations

import uuid

from celery import shared_task

from services.usecases.training import run_job as run_job_usecase
from worker.app import RUN_JOB_TASK
from worker.context import worker_context


@shared_task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    run_job_usecase(uuid.UUID(job_id), worker_context())
