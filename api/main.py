"""The FastAPI app factory: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import ApiContext, CeleryDispatcher
from api.errors import install_error_handlers
from api.middleware import RequestMetricsMiddleware
from api.routers import datasets, health, jobs, models
from services.config import Settings
from services.data.store import DatasetStore
from services.metrics import ApiMetrics
from services.registry.artifacts import LocalArtifactStore
from services.registry.unit_of_work import connect_registry
from services.serving.sessions import OnnxSessionCache
from services.usecases.jobs import count_jobs_by_state
from worker.app import create_celery


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_dirs()
    engine, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    celery = create_celery(settings)
    store = LocalArtifactStore(settings.artifacts)
    metrics = ApiMetrics(lambda: count_jobs_by_state(uow_factory=uow_factory))
    context = ApiContext(
        settings=settings,
        engine=engine,
        uow_factory=uow_factory,
        celery=celery,
        dispatcher=CeleryDispatcher(celery),
        sessions=OnnxSessionCache(capacity=settings.max_loaded_models, path_for=store.path_for),
        metrics=metrics,
        datasets=DatasetStore(settings.datasets),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="Kiln", version="0.1.0", summary="Train neural networks from a JSON spec and serve them as ONNX.", lifespan=lifespan
    )
    app.state.kiln = context
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
