"""What routes need, built once by `create_app` and handed out through FastAPI dependencies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from services.config import Settings
from services.data.store import DatasetStore
from services.metrics import ApiMetrics
from services.registry.artifacts import LocalArtifactStore
from services.serving.sessions import OnnxSessionCache
from services.usecases.jobs import UowFactory
from services.usecases.serve import Predictor
from worker.app import RUN_JOB_TASK, KilnCelery


class CeleryDispatcher:
    """Sends jobs to workers by task name; the API never imports the task code."""

    def __init__(self, celery: KilnCelery) -> None:
        self.celery = celery

    def send(self, job_id: uuid.UUID, *, queue: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=self.celery.settings.queue_prefix + queue)


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    engine: Engine
    uow_factory: UowFactory
    celery: KilnCelery
    dispatcher: CeleryDispatcher
    sessions: OnnxSessionCache
    metrics: ApiMetrics
    datasets: DatasetStore
    store: LocalArtifactStore
    predictor: Predictor


def context(request: Request) -> ApiContext:
    return request.app.state.kiln  # type: ignore[no-any-return]


async def get_context(request: Request) -> ApiContext:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a hand-off per request.
    return context(request)


ContextDep = Annotated[ApiContext, Depends(get_context)]
