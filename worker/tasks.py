"""Thin tasks: take a job id, call the use case. The database says what is true, not the message."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from services.usecases.studies import advance_after_job
from services.usecases.training import run_job as run_job_usecase
from worker.app import RUN_JOB_TASK
from worker.context import worker_context

log = logging.getLogger(__name__)


@shared_task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    ctx = worker_context()
    run_job_usecase(uuid.UUID(job_id), ctx)
    if ctx.studies is not None:  # a study's trial: settle it and start the next at once
        try:
            advance_after_job(uuid.UUID(job_id), ctx.studies)
        except Exception:  # the database is away, say: the sweeper advances the study later
            log.warning("job %s: its study could not be advanced; the sweeper will", job_id, exc_info=True)
