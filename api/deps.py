"""What routes need, built once by `create_app` and handed out through FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from api.job_watch import JobWatch
from services.config import Settings
from services.data.store import DatasetStore
from services.metrics import ApiMetrics
from services.registry.artifacts import ArtifactStore
from services.serving.sessions import OnnxSessionCache
from services.usecases.jobs import UowFactory
from services.usecases.mirror import Mirror
from services.usecases.serve import Predictor
from worker.app import CeleryDispatcher, KilnCelery


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
    store: ArtifactStore
    predictor: Predictor
    mirror: Mirror
    jobs: JobWatch  # event streams, woken when their job changes


def context(request: Request) -> ApiContext:
    return request.app.state.kiln  # type: ignore[no-any-return]


async def get_context(request: Request) -> ApiContext:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a hand-off per request.
    return context(request)


ContextDep = Annotated[ApiContext, Depends(get_context)]
